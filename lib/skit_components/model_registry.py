"""The model registry: immutable model versions and a production pointer per model kind.

Located by env `MODEL_REGISTRY_URL`:

- `file:///absolute/dir`: a local (or mounted) directory, for one machine;
- `s3://bucket/prefix`: an S3 (or S3-compatible) bucket, for steps that run anywhere
  (Kubeflow pods). boto3 takes its configuration from the standard AWS variables
  (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION), which
  the components using the registry declare.

Layout under the root, the same in both:

    <kind>/versions/<version>/...   a model directory, never changed once written
    <kind>/production.json          {"version": ..., "promoted_at": ..., "previous": ...}

Registering the same version again with the same content is a no-op (a retried step);
with other content it is refused. A reader never sees half a model: a directory is copied
in under a temporary name and renamed into place; in S3 a version exists only once its
manifest (`<kind>/manifests/<version>.json`, the content digest and file list) is written,
after its files. Promotion is a compare-and-set against the version the caller evaluated
against, so two concurrent retrainings cannot overwrite each other's decision unseen (a
file lock; S3's conditional writes, If-Match / If-None-Match). Every pointer change is
recorded (`<kind>/promotions.jsonl`; in S3 one object per change under
`<kind>/promotions/`).
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
import tempfile
import uuid
from abc import ABC, abstractmethod
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


class ModelRegistry(ABC):
    """Model versions and production pointers; `from_url` picks the implementation."""

    @staticmethod
    def from_url(url: str, *, create: bool = False) -> ModelRegistry:
        """The registry at `url` (file:///absolute/dir or s3://bucket/prefix).

        Raises:
            RegistryError: another scheme, or a directory that does not exist (made when
                `create`), or a bucket that cannot be reached.
        """
        parts = urlsplit(url)
        if parts.scheme == "s3" and parts.netloc:
            return S3ModelRegistry(parts.netloc, parts.path.strip("/"))
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            raise RegistryError(
                f"unsupported model registry URL {url!r}: expected file:///absolute/dir"
                " or s3://bucket/prefix"
            )
        root = Path(unquote(parts.path))
        if create:
            root.mkdir(parents=True, exist_ok=True)
        if not root.is_dir():
            raise RegistryError(f"model registry {url} does not exist")
        return LocalModelRegistry(root)

    @property
    @abstractmethod
    def url(self) -> str: ...

    @abstractmethod
    def versions(self, kind: str) -> list[str]:
        """The registered versions of `kind`, sorted."""

    @abstractmethod
    def get(self, kind: str, version: str) -> RegisteredModel:
        """The model as a local directory.

        Raises:
            RegistryError: `version` is not registered (the message names known ones).
        """

    def production(self, kind: str) -> RegisteredModel | None:
        pointer = self._read_pointer(kind)
        if pointer is None:
            return None
        return self.get(kind, pointer["version"])

    @abstractmethod
    def register(self, kind: str, version: str, source: Path) -> tuple[RegisteredModel, bool]:
        """Copies the model directory `source` in as `version`; returns it and whether it
        was new. The same version with the same content is a no-op.

        Raises:
            RegistryError: the version exists with different content.
        """

    def promote(self, kind: str, version: str, *, expected: str | None) -> bool:
        """Points production at `version` if production is still `expected` (None: no
        production model yet); returns False, changing nothing, if it has moved on."""
        self._require(kind, version)
        with self._promoting(kind):
            pointer, token = self._pointer_and_etag(kind)
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
            if not self._write_pointer(kind, record, token):
                return False  # another promotion won the race
        logger.info("promoted %s model %s (was %s) in %s", kind, version, current, self.url)
        return True

    def _read_pointer(self, kind: str) -> dict[str, Any] | None:
        return self._pointer_and_etag(kind)[0]

    def _require(self, kind: str, version: str) -> None:
        """Raises RegistryError, naming the known versions, when `version` is not one."""
        self.get(kind, version)

    def _unknown(self, kind: str, version: str) -> RegistryError:
        shown = ", ".join(self.versions(kind)[-10:]) or "none"
        return RegistryError(
            f"no {kind} model version {version!r} in the registry (it has {shown})"
        )

    def _promoting(self, kind: str) -> contextlib.AbstractContextManager[object]:
        """Held around a promotion's read and write of the pointer."""
        return contextlib.nullcontext()

    @abstractmethod
    def _pointer_and_etag(self, kind: str) -> tuple[dict[str, Any] | None, str | None]:
        """The production pointer and a token the write must match (None: no token)."""

    @abstractmethod
    def _write_pointer(self, kind: str, record: dict[str, Any], token: str | None) -> bool:
        """Writes the pointer and records the change; False if `token` no longer matches."""


class LocalModelRegistry(ModelRegistry):
    """A registry in a local (or mounted) directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

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
            raise self._unknown(kind, version)
        return RegisteredModel(kind, version, path)

    def register(self, kind: str, version: str, source: Path) -> tuple[RegisteredModel, bool]:
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

    def _promoting(self, kind: str) -> contextlib.AbstractContextManager[object]:
        return self._locked(kind)

    def _write_pointer(self, kind: str, record: dict[str, Any], token: str | None) -> bool:
        path = self._kind(kind) / "production.json"
        temporary = path.with_name(f".production.json.tmp-{uuid.uuid4().hex[:8]}")
        temporary.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)
        with (self._kind(kind) / "promotions.jsonl").open("a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
        return True

    def _kind(self, kind: str) -> Path:
        _check_name("model kind", kind)
        return self.root / kind

    def _pointer_and_etag(self, kind: str) -> tuple[dict[str, Any] | None, str | None]:
        # The file lock (`_promoting`) stands for the token here.
        path = self._kind(kind) / "production.json"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None, None
        return _parse_pointer(text, str(path)), None

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


class S3ModelRegistry(ModelRegistry):
    """A registry in an S3 bucket, under a key prefix."""

    def __init__(self, bucket: str, prefix: str, client: Any = None) -> None:
        if client is None:
            # Imported here: file:// users of this library need no AWS SDK.
            import boto3

            client = boto3.client("s3")
        self._s3 = client
        self._bucket = bucket
        self._prefix = f"{prefix}/" if prefix else ""

    @property
    def url(self) -> str:
        return f"s3://{self._bucket}/{self._prefix}".rstrip("/")

    def _key(self, kind: str, *parts: str) -> str:
        _check_name("model kind", kind)
        return self._prefix + "/".join((kind, *parts))

    def versions(self, kind: str) -> list[str]:
        prefix = self._key(kind, "manifests") + "/"
        names = []
        for key in self._list(prefix):
            name = key[len(prefix) :].removesuffix(".json")
            if key.endswith(".json") and _NAME.match(name):
                names.append(name)
        return sorted(names)

    def get(self, kind: str, version: str) -> RegisteredModel:
        _check_name("version", version)
        manifest = self._manifest(kind, version)
        if manifest is None:
            raise self._unknown(kind, version)
        # Steps run with TMPDIR in their own scratch space, so the copy goes with them.
        target = Path(tempfile.mkdtemp(prefix=f"model-{kind}-{version}-"))
        for name in manifest["files"]:
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            self._call(
                f"download {name} of {kind} {version}",
                self._s3.download_file,
                self._bucket,
                self._key(kind, "versions", version, name),
                str(path),
            )
        if directory_digest(target) != manifest["digest"]:
            shutil.rmtree(target, ignore_errors=True)
            raise RegistryError(f"{kind} model {version} in {self.url} does not match its digest")
        return RegisteredModel(kind, version, target)

    def register(self, kind: str, version: str, source: Path) -> tuple[RegisteredModel, bool]:
        _check_name("version", version)
        digest = directory_digest(source)
        registered = RegisteredModel(kind, version, source)
        if self._same_or_refuse(kind, version, digest):
            return registered, False
        files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
        for name in files:
            self._call(
                f"upload {name} of {kind} {version}",
                self._s3.upload_file,
                str(source / name),
                self._bucket,
                self._key(kind, "versions", version, name),
            )
        manifest = json.dumps({"digest": digest, "files": files}, indent=2).encode()
        if not self._put_if(self._key(kind, "manifests", f"{version}.json"), manifest, None):
            # Registered meanwhile by another writer (the same files, if the same digest).
            self._same_or_refuse(kind, version, digest)
            return registered, False
        logger.info("registered %s model %s in %s", kind, version, self.url)
        return registered, True

    def _require(self, kind: str, version: str) -> None:
        if self._manifest(kind, version) is None:
            raise self._unknown(kind, version)

    def _write_pointer(self, kind: str, record: dict[str, Any], token: str | None) -> bool:
        body = (json.dumps(record, indent=2) + "\n").encode()
        if not self._put_if(self._key(kind, "production.json"), body, token):
            return False
        name = f"{record['promoted_at']}-{record['version']}.json"
        self._call(
            "record the promotion",
            self._s3.put_object,
            Bucket=self._bucket,
            Key=self._key(kind, "promotions", name),
            Body=json.dumps(record).encode(),
        )
        return True

    def _pointer_and_etag(self, kind: str) -> tuple[dict[str, Any] | None, str | None]:
        key = self._key(kind, "production.json")
        found = self._get_object(key)
        if found is None:
            return None, None
        body, etag = found
        return _parse_pointer(body.decode("utf-8"), f"s3://{self._bucket}/{key}"), etag

    def _manifest(self, kind: str, version: str) -> dict[str, Any] | None:
        found = self._get_object(self._key(kind, "manifests", f"{version}.json"))
        return json.loads(found[0]) if found is not None else None

    def _same_or_refuse(self, kind: str, version: str, digest: str) -> bool:
        manifest = self._manifest(kind, version)
        if manifest is None:
            return False
        if manifest["digest"] != digest:
            raise RegistryError(
                f"{kind} model version {version!r} is already registered with "
                "different content; versions are immutable"
            )
        return True

    def _get_object(self, key: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError

        try:
            response = self._s3.get_object(Bucket=self._bucket, Key=key)
            return response["Body"].read(), response["ETag"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise RegistryError(f"{self.url}: {exc}") from exc
        except Exception as exc:
            raise RegistryError(f"{self.url}: {exc}") from exc

    def _put_if(self, key: str, body: bytes, etag: str | None) -> bool:
        """Writes `key` only if it is still at `etag` (None: only if it does not exist);
        returns False when it is not."""
        from botocore.exceptions import ClientError

        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        try:
            self._s3.put_object(Bucket=self._bucket, Key=key, Body=body, **condition)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return False
            raise RegistryError(f"{self.url}: {exc}") from exc
        except Exception as exc:
            raise RegistryError(f"{self.url}: {exc}") from exc
        return True

    def _list(self, prefix: str) -> list[str]:
        paginator = self._s3.get_paginator("list_objects_v2")
        keys: list[str] = []
        try:
            for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
                keys.extend(item["Key"] for item in page.get("Contents", ()))
        except Exception as exc:
            raise RegistryError(f"{self.url}: {exc}") from exc
        return keys

    def _call(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            raise RegistryError(f"{self.url}: cannot {what}: {exc}") from exc


def _parse_pointer(text: str, where: str) -> dict[str, Any]:
    try:
        pointer = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(pointer, dict) or not isinstance(pointer.get("version"), str):
        raise RegistryError(f"{where} names no version")
    return pointer
