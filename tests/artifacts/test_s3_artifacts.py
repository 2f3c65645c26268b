"""S3ArtifactStore against moto's S3 server: URIs, recorded content hashes, multipart
transfers, directories, deletion by prefix, which URIs it accepts, and what the step cache
needs: checks against the recorded size and SHA-256, and server-side copies."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from skit_pipelines.artifacts import Intact, Unusable, content_hash
from skit_pipelines.artifacts.s3 import S3ArtifactStore, S3Location, S3Settings
from skit_pipelines.errors import InvalidArgument

MiB = 1024 * 1024


@pytest.fixture
def store(bucket: str, s3_endpoint: str) -> S3ArtifactStore:
    return S3ArtifactStore.from_url(
        f"s3://{bucket}/team/pipelines", S3Settings(endpoint_url=s3_endpoint)
    )


def write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_location_is_parsed_from_the_url() -> None:
    assert S3Location.parse("s3://b/x/y/") == S3Location("b", "x/y")
    assert S3Location.parse("s3://b") == S3Location("b", "")
    for bad in ("file:///tmp", "s3:///nobucket", "bucket/prefix"):
        with pytest.raises(InvalidArgument):
            S3Location.parse(bad)
    with pytest.raises(InvalidArgument):
        S3Location("b", "p").key_for("runs/../../escape")


def test_file_round_trip_records_its_hash(
    store: S3ArtifactStore, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    source = write(tmp_path / "out" / "calls.csv", b"call_id,text\n1,hello\n")
    expected = content_hash(source)
    stored = store.put(source, "runs/r1/fetch-calls/calls")
    assert stored.uri == f"s3://{bucket}/team/pipelines/runs/r1/fetch-calls/calls"
    assert (stored.sha256, stored.size_bytes) == expected
    head = s3_client.head_object(Bucket=bucket, Key="team/pipelines/runs/r1/fetch-calls/calls")
    assert head["Metadata"] == {"sha256": expected[0]}
    local = store.open_local(stored.uri, tmp_path / "scratch")
    assert local == tmp_path / "scratch" / "calls"
    assert local.read_bytes() == b"call_id,text\n1,hello\n"


def test_directory_round_trip(store: S3ArtifactStore, bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "model"
    write(source / "weights.bin", b"\x00\x01" * 1000)
    write(source / "nested" / "config.json", b"{}")
    expected = content_hash(source)
    stored = store.put(source, "runs/r1/train/model")
    assert stored.uri == f"s3://{bucket}/team/pipelines/runs/r1/train/model/"
    assert (stored.sha256, stored.size_bytes) == expected
    local = store.open_local(stored.uri, tmp_path / "scratch")
    assert local.is_dir() and content_hash(local) == expected


def test_a_new_directory_replaces_the_old_one(store: S3ArtifactStore, tmp_path: Path) -> None:
    write(tmp_path / "v1" / "stale.txt", b"old")
    store.put(tmp_path / "v1", "runs/r1/s/out")
    write(tmp_path / "v2" / "fresh.txt", b"new")
    stored = store.put(tmp_path / "v2", "runs/r1/s/out")
    local = store.open_local(stored.uri, tmp_path / "scratch")
    assert sorted(p.name for p in local.iterdir()) == ["fresh.txt"]


def test_large_files_go_up_and_down_in_parts(
    bucket: str, s3_endpoint: str, s3_client: Any, tmp_path: Path
) -> None:
    store = S3ArtifactStore.from_url(
        f"s3://{bucket}/big",
        S3Settings(
            endpoint_url=s3_endpoint,
            multipart_threshold_bytes=5 * MiB,
            multipart_chunk_bytes=5 * MiB,
        ),
    )
    source = write(tmp_path / "audio.bin", os.urandom(12 * MiB))
    stored = store.put(source, "runs/r1/s/audio")
    head = s3_client.head_object(Bucket=bucket, Key="big/runs/r1/s/audio")
    assert head["ETag"].strip('"').endswith("-3"), "a 12 MiB file in 5 MiB parts"
    assert head["Metadata"]["sha256"] == stored.sha256
    local = store.open_local(stored.uri, tmp_path / "scratch")
    assert content_hash(local) == (stored.sha256, 12 * MiB)


def test_a_download_that_does_not_match_its_hash_fails(
    store: S3ArtifactStore, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    stored = store.put(write(tmp_path / "out", b"original"), "runs/r1/s/out")
    key = "team/pipelines/runs/r1/s/out"
    s3_client.put_object(
        Bucket=bucket, Key=key, Body=b"tampered", Metadata={"sha256": stored.sha256}
    )
    with pytest.raises(OSError, match="does not match its recorded sha256"):
        store.open_local(stored.uri, tmp_path / "scratch")


def test_only_uris_of_this_store_are_opened(
    store: S3ArtifactStore, bucket: str, tmp_path: Path
) -> None:
    for uri in (
        "file:///etc/passwd",
        "s3://other-bucket/team/pipelines/runs/r1/s/out",
        f"s3://{bucket}/elsewhere/runs/r1/s/out",
        f"s3://{bucket}/team/pipelines/../secrets",
    ):
        with pytest.raises(InvalidArgument):
            store.open_local(uri, tmp_path)


def test_delete_prefix_removes_a_run_and_nothing_else(
    store: S3ArtifactStore, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    write(tmp_path / "d" / "f.txt", b"x")
    store.put(tmp_path / "d", "runs/r1/s/dir")
    store.put(write(tmp_path / "a", b"a"), "runs/r1/s/a")
    store.put(write(tmp_path / "b", b"b"), "runs/r10/s/b")
    store.delete_prefix("runs/r1")
    listed = s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert [o["Key"] for o in listed] == ["team/pipelines/runs/r10/s/b"]


def test_endpoint_from_the_standard_aws_configuration(
    bucket: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    store = S3ArtifactStore.from_url(f"s3://{bucket}")
    stored = store.put(write(tmp_path / "out", b"env"), "runs/r1/s/out")
    assert stored.uri == f"s3://{bucket}/runs/r1/s/out"
    assert store.open_local(stored.uri, tmp_path / "scratch").read_bytes() == b"env"


def test_check_trusts_the_recorded_size_and_sha256(
    store: S3ArtifactStore, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    stored = store.put(write(tmp_path / "out", b"original"), "runs/r1/s/out")
    assert isinstance(store.check(stored.uri, stored.sha256, stored.size_bytes), Intact)
    wrong_size = store.check(stored.uri, stored.sha256, stored.size_bytes + 1)
    assert isinstance(wrong_size, Unusable) and "bytes" in wrong_size.reason
    s3_client.put_object(
        Bucket=bucket, Key="team/pipelines/runs/r1/s/out", Body=b"replaced", Metadata={}
    )
    replaced = store.check(stored.uri, stored.sha256, stored.size_bytes)
    assert isinstance(replaced, Unusable) and "sha256" in replaced.reason
    store.delete_prefix("runs/r1")
    gone = store.check(stored.uri, stored.sha256, stored.size_bytes)
    assert isinstance(gone, Unusable) and "404" in gone.reason
    outside = store.check("s3://other-bucket/x", stored.sha256, stored.size_bytes)
    assert isinstance(outside, Unusable)


def test_check_of_a_directory_counts_its_objects(
    store: S3ArtifactStore, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    write(tmp_path / "model" / "weights.bin", b"w" * 100)
    write(tmp_path / "model" / "nested" / "config.json", b"{}")
    stored = store.put(tmp_path / "model", "runs/r1/train/model")
    assert isinstance(store.check(stored.uri, stored.sha256, stored.size_bytes), Intact)
    s3_client.delete_object(Bucket=bucket, Key="team/pipelines/runs/r1/train/model/weights.bin")
    partial = store.check(stored.uri, stored.sha256, stored.size_bytes)
    assert isinstance(partial, Unusable) and "2 bytes" in partial.reason
    store.delete_prefix("runs/r1")
    gone = store.check(stored.uri, stored.sha256, stored.size_bytes)
    assert isinstance(gone, Unusable) and "gone" in gone.reason


def test_copy_is_server_side_and_keeps_the_recorded_sha256(
    store: S3ArtifactStore, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    stored = store.put(write(tmp_path / "out", b"original"), "runs/r1/s/out")
    uri = store.copy(stored.uri, "runs/r2/s/out")
    assert uri == f"s3://{bucket}/team/pipelines/runs/r2/s/out"
    store.delete_prefix("runs/r1")
    head = s3_client.head_object(Bucket=bucket, Key="team/pipelines/runs/r2/s/out")
    assert head["Metadata"] == {"sha256": stored.sha256}
    assert isinstance(store.check(uri, stored.sha256, stored.size_bytes), Intact)
    assert store.open_local(uri, tmp_path / "scratch").read_bytes() == b"original"
    assert store.copy(uri, "runs/r2/s/out") == uri, "already there: nothing to copy"


def test_copy_of_a_directory_replaces_what_was_at_the_target(
    store: S3ArtifactStore, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    write(tmp_path / "model" / "weights.bin", b"w" * 100)
    write(tmp_path / "model" / "nested" / "config.json", b"{}")
    stored = store.put(tmp_path / "model", "runs/r1/train/model")
    store.put(write(tmp_path / "stale" / "stale.txt", b"old"), "runs/r2/train/model")
    uri = store.copy(stored.uri, "runs/r2/train/model")
    assert uri == f"s3://{bucket}/team/pipelines/runs/r2/train/model/"
    store.delete_prefix("runs/r1")
    assert isinstance(store.check(uri, stored.sha256, stored.size_bytes), Intact)
    local = store.open_local(uri, tmp_path / "scratch")
    assert content_hash(local) == (stored.sha256, stored.size_bytes)


def test_a_large_copy_in_parts_keeps_the_recorded_sha256(
    bucket: str, s3_endpoint: str, s3_client: Any, tmp_path: Path
) -> None:
    store = S3ArtifactStore.from_url(
        f"s3://{bucket}/big",
        S3Settings(
            endpoint_url=s3_endpoint,
            multipart_threshold_bytes=5 * MiB,
            multipart_chunk_bytes=5 * MiB,
        ),
    )
    stored = store.put(write(tmp_path / "audio.bin", os.urandom(11 * MiB)), "runs/r1/s/audio")
    uri = store.copy(stored.uri, "runs/r2/s/audio")
    head = s3_client.head_object(Bucket=bucket, Key="big/runs/r2/s/audio")
    assert head["Metadata"]["sha256"] == stored.sha256
    assert isinstance(store.check(uri, stored.sha256, 11 * MiB), Intact)


def test_a_gone_artifact_fails_to_open_or_copy_with_one_line(
    store: S3ArtifactStore, tmp_path: Path
) -> None:
    stored = store.put(write(tmp_path / "out", b"x"), "runs/r1/s/out")
    store.delete_prefix("runs/r1")
    with pytest.raises(OSError, match="404"):
        store.open_local(stored.uri, tmp_path / "scratch")
    with pytest.raises(OSError, match="404"):
        store.copy(stored.uri, "runs/r2/s/out")
