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
    def delete_prefix(self, key_prefix: str) -> None:
        """Removes every artifact whose key starts with key_prefix."""
