"""The ArtifactStore on S3 (or anything that speaks its protocol), for several replicas.

Configured by `s3://bucket/prefix`; the endpoint, region and credentials come from the
standard AWS configuration (environment, shared config files, instance roles), and the
service configuration may override the endpoint. Large files go up and down in parts
(boto3's TransferConfig). Each object carries the SHA-256 of its content as user
metadata, which downloads are checked against; the Artifact keeps the same hash (for a
directory, the hash of its sorted paths and contents, as the local store computes it).

A file artifact is one object, `s3://bucket/prefix/<key>`. A directory artifact is the
objects below `<key>/`, and its URI ends with a slash.

`check` trusts S3's own bookkeeping rather than downloading: a file must have its
recorded size and SHA-256 metadata (HeadObject); a directory must still hold objects of
the recorded total size, each with SHA-256 metadata (its hash covers paths and contents
together, which only a download could recompute). `copy` is a server-side copy that
keeps each object's SHA-256 metadata.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from skit_pipelines.artifacts.base import (
    ArtifactCheck,
    ArtifactStore,
    Intact,
    StoredArtifact,
    Unusable,
    content_hash,
)
from skit_pipelines.errors import InvalidArgument

logger = logging.getLogger(__name__)

SHA256_METADATA = "sha256"
"""The user metadata key (x-amz-meta-sha256) holding an object's content hash."""

_DELETE_BATCH = 1000  # DeleteObjects takes at most this many keys per call.


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (without leading or trailing slashes)."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> S3Location:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise InvalidArgument(f"not an s3://bucket/prefix URL: {url!r}", field="artifacts")
        return cls(bucket=parsed.netloc, prefix=parsed.path.strip("/"))

    def key_for(self, key: str) -> str:
        parts = key.strip("/").split("/")
        if not key.strip("/") or any(p in ("", ".", "..") for p in parts):
            raise InvalidArgument(f"artifact key {key!r} is not a clean relative path", field="key")
        return posixpath.join(self.prefix, *parts) if self.prefix else "/".join(parts)

    def uri(self, object_key: str) -> str:
        return f"s3://{self.bucket}/{object_key}"


@dataclass(frozen=True)
class S3Settings:
    """How to reach S3 beyond what the standard AWS configuration says."""

    endpoint_url: str = ""
    """Overrides the endpoint (MinIO, a test server); empty: the AWS configuration's."""
    multipart_threshold_bytes: int = 8 * 1024 * 1024
    """Files at least this large are transferred in parts."""
    multipart_chunk_bytes: int = 8 * 1024 * 1024
    """The part size (S3 requires 5 MiB or more, except for the last part)."""
    max_concurrency: int = 8
    """Parts transferred at once, per file."""


class S3ArtifactStore(ArtifactStore):
    """Artifacts as objects under one bucket prefix; URIs are s3://bucket/key."""

    def __init__(self, location: S3Location, client: Any, settings: S3Settings) -> None:
        self._location = location
        self._client = client
        self._transfer = TransferConfig(
            multipart_threshold=settings.multipart_threshold_bytes,
            multipart_chunksize=settings.multipart_chunk_bytes,
            max_concurrency=settings.max_concurrency,
        )

    @classmethod
    def from_url(cls, url: str, settings: S3Settings | None = None) -> S3ArtifactStore:
        settings = settings or S3Settings()
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.endpoint_url or None,
            # Standard mode retries throttling, 5xx and connection errors with backoff.
            config=Config(retries={"mode": "standard", "max_attempts": 5}),
        )
        return cls(S3Location.parse(url), client, settings)

    def put(self, source: Path, key: str) -> StoredArtifact:
        object_key = self._location.key_for(key)
        sha256, size = content_hash(source)
        if source.is_dir():
            # A re-run of a step replaces its outputs: no stale file may survive.
            self._delete_objects(object_key)
            for child in sorted(p for p in source.rglob("*") if p.is_file()):
                relative = child.relative_to(source).as_posix()
                self._upload(child, f"{object_key}/{relative}", content_hash(child)[0])
            uri = self._location.uri(object_key) + "/"
        else:
            self._upload(source, object_key, sha256)
            uri = self._location.uri(object_key)
        logger.debug("stored %s (%s bytes)", uri, size)
        return StoredArtifact(uri=uri, sha256=sha256, size_bytes=size)

    def _upload(self, path: Path, object_key: str, sha256: str) -> None:
        self._client.upload_file(
            str(path),
            self._location.bucket,
            object_key,
            ExtraArgs={"Metadata": {SHA256_METADATA: sha256}},
            Config=self._transfer,
        )

    def open_local(self, uri: str, scratch_dir: Path) -> Path:
        try:
            return self._open_local(uri, scratch_dir)
        except (ClientError, BotoCoreError) as exc:
            # An OSError, as for a local file: the executor fails the step with one line.
            raise OSError(f"cannot read {uri}: {_describe(exc)}") from exc

    def _open_local(self, uri: str, scratch_dir: Path) -> Path:
        object_key = self._object_key(uri)
        name = posixpath.basename(object_key.rstrip("/"))
        target = scratch_dir / name
        if uri.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
            for key in self._list(object_key):
                local = target / key.removeprefix(object_key)
                local.parent.mkdir(parents=True, exist_ok=True)
                self._download(key, local)
        else:
            scratch_dir.mkdir(parents=True, exist_ok=True)
            self._download(object_key, target)
        return target

    def _download(self, object_key: str, target: Path) -> None:
        bucket = self._location.bucket
        recorded = (
            self._client.head_object(Bucket=bucket, Key=object_key)
            .get("Metadata", {})
            .get(SHA256_METADATA)
        )
        self._client.download_file(bucket, object_key, str(target), Config=self._transfer)
        if recorded and content_hash(target)[0] != recorded:
            raise OSError(
                f"{self._location.uri(object_key)} does not match its recorded sha256 {recorded}"
            )

    def _object_key(self, uri: str) -> str:
        parsed = urlparse(uri)
        if parsed.scheme != "s3":
            raise InvalidArgument(f"not an S3 artifact URI: {uri!r}", field="uri")
        key = parsed.path.lstrip("/")
        prefix = self._location.prefix
        inside = not prefix or key.startswith(prefix + "/")
        if parsed.netloc != self._location.bucket or not inside or ".." in key.split("/"):
            raise InvalidArgument(
                f"artifact {uri!r} is outside {self._location.uri(prefix)}", field="uri"
            )
        return key

    def check(self, uri: str, sha256: str, size_bytes: int) -> ArtifactCheck:
        try:
            object_key = self._object_key(uri)
            if uri.endswith("/"):
                return self._check_directory(uri, object_key, size_bytes)
            head = self._client.head_object(Bucket=self._location.bucket, Key=object_key)
        except InvalidArgument as exc:
            return Unusable(exc.message)
        except ClientError as exc:
            return Unusable(f"{uri} is not readable: {_describe(exc)}")
        except BotoCoreError as exc:
            return Unusable(f"{uri} could not be checked: {_describe(exc)}")
        recorded = head.get("Metadata", {}).get(SHA256_METADATA, "")
        if head.get("ContentLength") != size_bytes:
            return Unusable(
                f"{uri} is {head.get('ContentLength')} bytes, not the {size_bytes} stored"
            )
        if sha256 and recorded != sha256:
            return Unusable(f"{uri} has sha256 {recorded or 'unrecorded'}, not {sha256}")
        return Intact()

    def _check_directory(self, uri: str, object_key: str, size_bytes: int) -> ArtifactCheck:
        objects = self._list_objects(object_key)
        total = sum(int(item.get("Size", 0)) for item in objects)
        if total != size_bytes:
            state = "gone" if not objects else f"{total} bytes, not the {size_bytes} stored"
            return Unusable(f"{uri} is {state}")
        for item in objects:
            head = self._client.head_object(Bucket=self._location.bucket, Key=item["Key"])
            if not head.get("Metadata", {}).get(SHA256_METADATA):
                return Unusable(f"{self._location.uri(item['Key'])} has no recorded sha256")
        return Intact()

    def copy(self, uri: str, key: str) -> str:
        try:
            return self._copy(uri, key)
        except (ClientError, BotoCoreError) as exc:
            raise OSError(f"cannot copy {uri}: {_describe(exc)}") from exc

    def _copy(self, uri: str, key: str) -> str:
        source_key = self._object_key(uri)
        target_key = self._location.key_for(key)
        directory = uri.endswith("/")
        source_key = source_key.rstrip("/")
        target_uri = self._location.uri(target_key) + ("/" if directory else "")
        if source_key == target_key:
            return uri
        if not directory:
            self._copy_object(source_key, target_key)
            return target_uri
        # As put does for a re-run: no stale object may survive below the target.
        self._delete_objects(target_key)
        for item in self._list_objects(source_key + "/"):
            relative = item["Key"].removeprefix(source_key + "/")
            self._copy_object(item["Key"], f"{target_key}/{relative}")
        return target_uri

    def _copy_object(self, source_key: str, target_key: str) -> None:
        bucket = self._location.bucket
        head = self._client.head_object(Bucket=bucket, Key=source_key)
        # The metadata is set, not copied: boto3 copies large objects in parts, and a
        # multipart copy starts a new object without the source's metadata.
        self._client.copy(
            {"Bucket": bucket, "Key": source_key},
            bucket,
            target_key,
            ExtraArgs={
                "Metadata": dict(head.get("Metadata", {})),
                "MetadataDirective": "REPLACE",
            },
            Config=self._transfer,
        )

    def delete_prefix(self, key_prefix: str) -> None:
        try:
            self._delete_objects(self._location.key_for(key_prefix))
        except (ClientError, BotoCoreError) as exc:
            raise OSError(f"cannot delete {key_prefix}: {_describe(exc)}") from exc

    def _delete_objects(self, object_key: str) -> None:
        """Deletes the object `object_key` and everything below `object_key/`."""
        keys = [object_key, *self._list(object_key + "/")]
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            response = self._client.delete_objects(
                Bucket=self._location.bucket,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
            # DeleteObjects answers 200 and lists what it could not delete.
            errors = response.get("Errors") or ()
            if errors:
                first = errors[0]
                raise OSError(
                    f"cannot delete {len(errors)} objects, e.g. {self._location.uri(first['Key'])}:"
                    f" {first.get('Code', '')} {first.get('Message', '')}".rstrip()
                )

    def _list(self, key_prefix: str) -> list[str]:
        return [item["Key"] for item in self._list_objects(key_prefix)]

    def _list_objects(self, key_prefix: str) -> list[dict[str, Any]]:
        paginator = self._client.get_paginator("list_objects_v2")
        return [
            item
            for page in paginator.paginate(Bucket=self._location.bucket, Prefix=key_prefix)
            for item in page.get("Contents", ())
        ]


def _describe(error: ClientError | BotoCoreError) -> str:
    """An S3 error on one line: its code and message (HeadObject's 404 has no message)."""
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        return f"{details.get('Code', 'error')} {details.get('Message', '')}".strip()
    return str(error)
