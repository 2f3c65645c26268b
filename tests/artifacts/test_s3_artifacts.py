"""S3ArtifactStore against moto's S3 server: URIs, recorded content hashes, multipart
transfers, directories, deletion by prefix and which URIs it accepts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from skit_pipelines.artifacts import content_hash
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
