"""The model registry: immutable model versions and a production pointer per model kind.

Located by env `MODEL_REGISTRY_URL` (`file:///absolute/dir`; an object-store backend can
come later behind the same methods). Layout under the root:

    <kind>/versions/<version>/      a model directory, never changed once written
    <kind>/production.json          {"version": ..., "promoted_at": ..., "previous": ...}
    <kind>/promotions.jsonl         every pointer change, appended
    <kind>/.lock                    serialises writers (flock)

Registering copies a directory in under a temporary name and renames it into place, so a
reader never sees half a model, and registering the same version again with the same
content is a no-op (a retried step). Promotion is a compare-and-set against the version
the caller evaluated against, so two concurrent retrainings cannot overwrite each other's
decision unseen.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

logger = logging.getLogger(__name__)

REGISTRY_ENV = "MODEL_REGISTRY_URL"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RegistryError(Exception):
    """An unusable registry, an unknown version, or a conflicting write."""


@dataclass(frozen=True)
class RegisteredModel:
    kind: str
    version: str
    path: Path


def directory_digest(path: Path) -> str:
    """SHA-256 over the relative names and contents of every file below `path`."""
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(child.relative_to(path).as_posix().encode() + b"\0")
        with child.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


class ModelRegistry:
    """A registry in a local (or mounted) directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def from_url(cls, url: str, *, create: bool = False) -> ModelRegistry:
        """Raises RegistryError for anything but an existing file:/// directory (made
        when `create`)."""
        parts = urlsplit(url)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            raise RegistryError(
                f"unsupported model registry URL {url!r}: expected file:///absolute/dir"
            )
        root = Path(unquote(parts.path))
        if create:
            root.mkdir(parents=True, exist_ok=True)
        if not root.is_dir():
            raise RegistryError(f"model registry {url} does not exist")
        return cls(root)

    @property
    def url(self) -> str:
        return self.root.resolve().as_uri()

    def versions(self, kind: str) -> list[str]:
        folder = self._kind(kind) / "versions"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and _NAME.match(p.name))

    def get(self, kind: str, version: str) -> RegisteredModel:
        """Raises RegistryError naming the known versions when `version` is not one."""
        _check_name("version", version)
        path = self._kind(kind) / "versions" / version
        if not path.is_dir():
            known = self.versions(kind)
            shown = ", ".join(known[-10:]) or "none"
            raise RegistryError(
                f"no {kind} model version {version!r} in the registry (it has {shown})"
            )
        return RegisteredModel(kind, version, path)

    def production(self, kind: str) -> RegisteredModel | None:
        pointer = self._read_pointer(kind)
        if pointer is None:
            return None
        return self.get(kind, pointer["version"])

    def register(self, kind: str, version: str, source: Path) -> tuple[RegisteredModel, bool]:
        """Copies the model directory `source` in as `version`; returns it and whether it
        was new. The same version with the same content is a no-op.

        Raises:
            RegistryError: the version exists with different content.
        """
        _check_name("version", version)
        versions = self._kind(kind) / "versions"
        target = versions / version
        digest = directory_digest(source)
        with self._locked(kind):
            if target.is_dir():
                if directory_digest(target) != digest:
                    raise RegistryError(
                        f"{kind} model version {version!r} is already registered with "
                        "different content; versions are immutable"
                    )
                return RegisteredModel(kind, version, target), False
            versions.mkdir(parents=True, exist_ok=True)
            temporary = versions / f".{version}.tmp-{uuid.uuid4().hex[:8]}"
            try:
                shutil.copytree(source, temporary)
                os.replace(temporary, target)
            finally:
                shutil.rmtree(temporary, ignore_errors=True)
        logger.info("registered %s model %s", kind, version)
        return RegisteredModel(kind, version, target), True

    def promote(self, kind: str, version: str, *, expected: str | None) -> bool:
        """Points production at `version` if production is still `expected` (None: no
        production model yet); returns False, changing nothing, if it has moved on."""
        self.get(kind, version)
        with self._locked(kind):
            pointer = self._read_pointer(kind)
            current = pointer["version"] if pointer else None
            if current != expected:
                return False
            if current == version:
                return True
            record = {
                "version": version,
                "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "previous": current,
            }
            path = self._kind(kind) / "production.json"
            temporary = path.with_name(f".production.json.tmp-{uuid.uuid4().hex[:8]}")
            temporary.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            os.replace(temporary, path)
            with (self._kind(kind) / "promotions.jsonl").open("a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")
        logger.info("promoted %s model %s (was %s)", kind, version, current)
        return True

    def _kind(self, kind: str) -> Path:
        _check_name("model kind", kind)
        return self.root / kind

    def _read_pointer(self, kind: str) -> dict[str, Any] | None:
        path = self._kind(kind) / "production.json"
        try:
            pointer = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(pointer, dict) or not isinstance(pointer.get("version"), str):
            raise RegistryError(f"{path} names no version")
        return pointer

    @contextlib.contextmanager
    def _locked(self, kind: str) -> Iterator[None]:
        folder = self._kind(kind)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _check_name(what: str, value: str) -> None:
    if not _NAME.match(value):
        raise RegistryError(f"invalid {what} {value!r}: letters, digits, '.', '_' and '-' only")
