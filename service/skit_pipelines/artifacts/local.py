"""The ArtifactStore on a local directory: the embedded default."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

from skit_pipelines.artifacts.base import ArtifactStore, StoredArtifact, content_hash
from skit_pipelines.errors import InvalidArgument


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
