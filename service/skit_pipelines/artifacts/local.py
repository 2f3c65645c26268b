"""The ArtifactStore on a local directory: the embedded default."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

from skit_pipelines.artifacts.base import (
    ArtifactCheck,
    ArtifactStore,
    Intact,
    StoredArtifact,
    Unusable,
    content_hash,
)
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

    def check(self, uri: str, sha256: str, size_bytes: int) -> ArtifactCheck:
        try:
            path = self.open_local(uri, self._root)
        except InvalidArgument as exc:
            return Unusable(exc.message)
        if not path.exists():
            return Unusable(f"{uri} is gone")
        if not sha256:
            return Intact()
        try:
            actual, size = content_hash(path)
        except OSError as exc:  # deleted while being read
            return Unusable(f"{uri} cannot be read: {exc}")
        if actual != sha256 or size != size_bytes:
            return Unusable(f"{uri} changed since it was stored (sha256 {actual}, not {sha256})")
        return Intact()

    def copy(self, uri: str, key: str) -> str:
        source = self.open_local(uri, self._root)
        target = self._path_for_key(key)
        if source == target:
            return uri
        target.parent.mkdir(parents=True, exist_ok=True)
        # Copied beside the target and renamed into place: a reader never sees half a
        # copy. A copy, not a link: a step may write into its input's path.
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        try:
            if source.is_dir():
                shutil.copytree(source, partial)
            else:
                shutil.copy2(source, partial)
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(partial, target)
        finally:
            if partial.is_dir():
                shutil.rmtree(partial, ignore_errors=True)
            else:
                partial.unlink(missing_ok=True)
        return target.as_uri()

    def delete_prefix(self, key_prefix: str) -> None:
        path = self._path_for_key(key_prefix)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
