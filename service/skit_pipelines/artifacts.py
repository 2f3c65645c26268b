"""Where step outputs live: a local directory (the embedded default) or, later, S3."""

from __future__ import annotations

import hashlib
import os
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from skit_pipelines.errors import InvalidArgument

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


class LocalArtifactStore(ArtifactStore):
    """Artifacts as files under one root directory; URIs are file:///absolute/path."""

    def __init__(self, root: Path) -> None:
        self._root = root.resolve()
        self._root.mkdir(parents=True, exist_ok=True)

    @property
    def root(self) -> Path:
        return self._root

    def _path_for_key(self, key: str) -> Path:
        path = (self._root / key).resolve()
        if not path.is_relative_to(self._root) or path == self._root:
            raise InvalidArgument(f"artifact key {key!r} escapes the artifact root", field="key")
        return path

    def put(self, source: Path, key: str) -> StoredArtifact:
        target = self._path_for_key(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        try:
            os.replace(source, target)
        except OSError:
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                shutil.copy2(source, target)
        sha256, size = content_hash(target)
        return StoredArtifact(uri=target.as_uri(), sha256=sha256, size_bytes=size)

    def open_local(self, uri: str, scratch_dir: Path) -> Path:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise InvalidArgument(f"not a local artifact URI: {uri!r}", field="uri")
        path = Path(unquote(parsed.path)).resolve()
        if not path.is_relative_to(self._root):
            raise InvalidArgument(f"artifact {uri!r} is outside the artifact root", field="uri")
        return path

    def delete_prefix(self, key_prefix: str) -> None:
        path = self._path_for_key(key_prefix)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
