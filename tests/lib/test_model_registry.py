"""The model registry's contract, held by both stores: a directory (file://) and an S3
bucket (moto's server): immutable versions, idempotent registering, a production pointer
moved only by compare-and-set, and clear errors."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from skit_components.model_registry import (
    ModelRegistry,
    RegistryError,
    S3ModelRegistry,
    directory_digest,
)

KIND = "slu"


@pytest.fixture(params=["file", "s3"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> ModelRegistry:
    if request.param == "file":
        return ModelRegistry.from_url((tmp_path / "registry").as_uri(), create=True)
    bucket = request.getfixturevalue("bucket")
    request.getfixturevalue("s3_client")
    endpoint = request.getfixturevalue("s3_endpoint")
    request.getfixturevalue("monkeypatch").setenv("AWS_ENDPOINT_URL", endpoint)
    return ModelRegistry.from_url(f"s3://{bucket}/models")


def model(root: Path, name: str, weights: str) -> Path:
    """A small model directory with a nested file."""
    folder = root / name
    (folder / "assets").mkdir(parents=True)
    (folder / "model.bin").write_text(weights)
    (folder / "assets" / "labels.txt").write_text("yes\nno\n")
    return folder


def test_a_registered_version_reads_back_as_the_same_files(registry, tmp_path):
    source = model(tmp_path, "m1", "weights-1")

    registered, new = registry.register(KIND, "v1", source)

    assert new and registered.version == "v1"
    assert registry.versions(KIND) == ["v1"]
    fetched = registry.get(KIND, "v1")
    assert directory_digest(fetched.path) == directory_digest(source)
    assert (fetched.path / "assets" / "labels.txt").read_text() == "yes\nno\n"


def test_versions_are_immutable_and_registering_again_is_a_no_op(registry, tmp_path):
    registry.register(KIND, "v1", model(tmp_path, "m1", "weights-1"))

    _, new = registry.register(KIND, "v1", model(tmp_path, "again", "weights-1"))
    assert not new
    with pytest.raises(RegistryError, match="already registered with different content"):
        registry.register(KIND, "v1", model(tmp_path, "other", "weights-2"))
    assert (registry.get(KIND, "v1").path / "model.bin").read_text() == "weights-1"


def test_promotion_is_a_compare_and_set_on_the_production_pointer(registry, tmp_path):
    registry.register(KIND, "v1", model(tmp_path, "m1", "weights-1"))
    registry.register(KIND, "v2", model(tmp_path, "m2", "weights-2"))
    assert registry.production(KIND) is None

    assert registry.promote(KIND, "v1", expected=None)
    assert not registry.promote(KIND, "v2", expected=None), "production moved on to v1"
    assert registry.production(KIND).version == "v1"
    assert registry.promote(KIND, "v2", expected="v1")
    assert registry.promote(KIND, "v2", expected="v2"), "already production"
    production = registry.production(KIND)
    assert production.version == "v2"
    assert (production.path / "model.bin").read_text() == "weights-2"


def test_of_racing_promotions_from_the_same_production_one_wins(tmp_path):
    """Threads of one machine on a directory registry (the file lock); for S3 see the next
    test (moto's server does not make its conditional writes atomic, S3 does)."""
    registry = ModelRegistry.from_url((tmp_path / "registry").as_uri(), create=True)
    registry.register(KIND, "base", model(tmp_path, "base", "weights-0"))
    registry.promote(KIND, "base", expected=None)
    candidates = [f"c{i}" for i in range(6)]
    for name in candidates:
        registry.register(KIND, name, model(tmp_path, name, f"weights-{name}"))
    start = threading.Barrier(len(candidates))
    won: dict[str, bool] = {}

    def promote(name: str) -> None:
        start.wait()
        won[name] = registry.promote(KIND, name, expected="base")

    threads = [threading.Thread(target=promote, args=(name,)) for name in candidates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [name for name, ok in won.items() if ok]
    assert len(winners) == 1
    assert registry.production(KIND).version == winners[0]


def test_an_s3_promotion_loses_when_production_moves_between_its_read_and_its_write(
    bucket: str, s3_client: Any, s3_endpoint: str, monkeypatch, tmp_path
):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    ours, theirs = S3ModelRegistry(bucket, "models"), S3ModelRegistry(bucket, "models")
    for name in ("base", "mine", "yours"):
        ours.register(KIND, name, model(tmp_path, name, f"weights-{name}"))
    ours.promote(KIND, "base", expected=None)
    read = ours._pointer_and_etag

    def read_then_lose_the_race(kind: str):
        seen = read(kind)
        assert theirs.promote(KIND, "yours", expected="base")
        return seen

    monkeypatch.setattr(ours, "_pointer_and_etag", read_then_lose_the_race)

    assert not ours.promote(KIND, "mine", expected="base")
    assert theirs.production(KIND).version == "yours"
    promotions = s3_client.list_objects_v2(Bucket=bucket, Prefix="models/slu/promotions/")
    assert [o["Key"].rsplit("-", 1)[1] for o in promotions["Contents"]] == [
        "base.json",
        "yours.json",
    ]


def test_unknown_versions_and_bad_names_are_clear_errors(registry, tmp_path):
    registry.register(KIND, "v1", model(tmp_path, "m1", "weights-1"))

    with pytest.raises(
        RegistryError, match=r"no slu model version 'v9' in the registry \(it has v1\)"
    ):
        registry.get(KIND, "v9")
    with pytest.raises(RegistryError, match="no slu model version 'v9'"):
        registry.promote(KIND, "v9", expected=None)
    with pytest.raises(RegistryError, match=r"invalid version '\.\./x'"):
        registry.get(KIND, "../x")
    assert registry.production(KIND) is None


def test_an_s3_registry_never_shows_a_version_whose_upload_did_not_finish(
    bucket: str, s3_client: Any, s3_endpoint: str, monkeypatch, tmp_path
):
    """The files of a version are uploaded before its manifest: a writer that died
    half-way leaves no version, and registering it again completes it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    registry = S3ModelRegistry(bucket, "models")
    s3_client.put_object(Bucket=bucket, Key="models/slu/versions/v1/model.bin", Body=b"half")

    assert registry.versions(KIND) == []
    with pytest.raises(RegistryError, match="no slu model version 'v1'"):
        registry.get(KIND, "v1")
    _, new = registry.register(KIND, "v1", model(tmp_path, "m1", "weights-1"))
    assert new and registry.versions(KIND) == ["v1"]
    assert (registry.get(KIND, "v1").path / "model.bin").read_text() == "weights-1"
    assert registry.url == f"s3://{bucket}/models"


def test_unsupported_urls_are_refused():
    with pytest.raises(RegistryError, match="expected file:///absolute/dir or s3://bucket/prefix"):
        ModelRegistry.from_url("gs://bucket/models")
