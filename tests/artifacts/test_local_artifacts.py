"""LocalArtifactStore: what the step cache needs (a check against the content hash, a
copy below another run) and deletion of a run's prefix."""

from __future__ import annotations

from pathlib import Path

import pytest

from skit_pipelines.artifacts import Intact, LocalArtifactStore, StoredArtifact, Unusable
from skit_pipelines.errors import InvalidArgument


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


def put(
    store: LocalArtifactStore, tmp_path: Path, key: str, files: dict[str, bytes]
) -> StoredArtifact:
    source = tmp_path / "source" / key
    for name, content in files.items():
        path = source / name if name else source
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return store.put(source, key)


def test_check_compares_the_content_hash(store: LocalArtifactStore, tmp_path: Path) -> None:
    stored = put(store, tmp_path, "runs/r1/s/out", {"": b"data"})
    assert isinstance(store.check(stored.uri, stored.sha256, stored.size_bytes), Intact)
    assert isinstance(store.check(stored.uri, "", 0), Intact), "presence only"
    (store.root / "runs/r1/s/out").write_bytes(b"atad")
    changed = store.check(stored.uri, stored.sha256, stored.size_bytes)
    assert isinstance(changed, Unusable) and "changed" in changed.reason
    store.delete_prefix("runs/r1")
    gone = store.check(stored.uri, stored.sha256, stored.size_bytes)
    assert isinstance(gone, Unusable) and "gone" in gone.reason
    outside = store.check((tmp_path / "elsewhere").as_uri(), stored.sha256, 4)
    assert isinstance(outside, Unusable) and "outside" in outside.reason


def test_copy_of_a_directory_survives_its_source(store: LocalArtifactStore, tmp_path: Path) -> None:
    stored = put(store, tmp_path, "runs/r1/train/model", {"w.bin": b"w", "n/c.json": b"{}"})
    put(store, tmp_path, "runs/r2/train/model", {"stale.txt": b"old"})
    uri = store.copy(stored.uri, "runs/r2/train/model")
    assert uri == (store.root / "runs/r2/train/model").as_uri()
    store.delete_prefix("runs/r1")
    assert isinstance(store.check(uri, stored.sha256, stored.size_bytes), Intact)
    copied = store.open_local(uri, tmp_path)
    assert sorted(p.relative_to(copied).as_posix() for p in copied.rglob("*") if p.is_file()) == [
        "n/c.json",
        "w.bin",
    ]
    assert not list(copied.parent.glob(".*partial")), "no partial copy left behind"


def test_copy_to_where_it_is_copies_nothing(store: LocalArtifactStore, tmp_path: Path) -> None:
    stored = put(store, tmp_path, "runs/r1/s/out", {"": b"data"})
    assert store.copy(stored.uri, "runs/r1/s/out") == stored.uri
    assert (store.root / "runs/r1/s/out").read_bytes() == b"data"


def test_copy_of_a_gone_artifact_or_outside_the_root_fails(
    store: LocalArtifactStore, tmp_path: Path
) -> None:
    stored = put(store, tmp_path, "runs/r1/s/out", {"": b"data"})
    store.delete_prefix("runs/r1")
    with pytest.raises(OSError):
        store.copy(stored.uri, "runs/r2/s/out")
    with pytest.raises(InvalidArgument):
        store.copy((tmp_path / "x").as_uri(), "runs/r2/s/out")
    with pytest.raises(InvalidArgument):
        store.copy(stored.uri, "runs/../../escape")


def test_delete_prefix_removes_a_run_and_nothing_else(
    store: LocalArtifactStore, tmp_path: Path
) -> None:
    put(store, tmp_path, "runs/r1/s/a", {"": b"a"})
    put(store, tmp_path, "runs/r10/s/b", {"": b"b"})
    store.delete_prefix("runs/r1")
    store.delete_prefix("runs/never")
    assert sorted(p.name for p in (store.root / "runs").iterdir()) == ["r10"]
