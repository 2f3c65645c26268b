"""The ArtifactStore seam: where step outputs live, and how their content is hashed."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredArtifact:
    uri: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class Intact:
    """The artifact is there with the content it was stored with."""


@dataclass(frozen=True)
class Unusable:
    """The artifact is gone or no longer what was stored; `reason` says which."""

    reason: str


ArtifactCheck = Intact | Unusable


def content_hash(path: Path) -> tuple[str, int]:
    """SHA-256 and size of a file, or of a directory's sorted relative paths and contents."""
    digest = hashlib.sha256()
    if path.is_file():
        size = _hash_file(path, digest)
        return digest.hexdigest(), size
    size = 0
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(child.relative_to(path).as_posix().encode() + b"\0")
        size += _hash_file(child, digest)
    return digest.hexdigest(), size


def _hash_file(path: Path, digest: hashlib._Hash) -> int:
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size


class ArtifactStore(ABC):
    """Stores step outputs under keys like "runs/<run>/<step>/<output>". Blocking calls."""

    @abstractmethod
    def put(self, source: Path, key: str) -> StoredArtifact:
        """Stores a file or directory (source may be moved away) and returns its URI and hash."""

    @abstractmethod
    def open_local(self, uri: str, scratch_dir: Path) -> Path:
        """Returns a local path holding the artifact's content; treat it as read-only.

        Stores that are not local download into scratch_dir.
        """

    @abstractmethod
    def check(self, uri: str, sha256: str, size_bytes: int) -> ArtifactCheck:
        """Whether the artifact at `uri` is still there as it was stored: its size and
        SHA-256 as recorded (an empty `sha256` checks presence only). Never raises for a
        gone or altered artifact: the step cache reruns the step instead."""

    @abstractmethod
    def copy(self, uri: str, key: str) -> str:
        """Copies the artifact at `uri` to `key` and returns the copy's URI; the content,
        hence its hash and size, is unchanged. Returns `uri` itself when it is already
        stored at `key`. A step reusing another run's outputs copies them, so every run's
        artifacts live under its own prefix and deleting one run never breaks another."""

    @abstractmethod
    def delete_prefix(self, key_prefix: str) -> None:
        """Removes every artifact whose key is key_prefix or starts with key_prefix + "/"
        (a run's artifacts: "runs/<run>"); nothing there is not an error."""
