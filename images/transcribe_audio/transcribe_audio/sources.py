"""What to transcribe, and fetching it: a CSV with an audio URL column, or a directory or
S3 prefix of audio files; downloads retried with backoff, expired presigned S3 URLs
re-signed (as the original's re_presign_s3_urls did for its 7-day US links)."""

from __future__ import annotations

import csv
import io
import logging
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

from skit_components import cli

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus")
BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
PRESIGN_EXPIRY_SECONDS = 3600
_RETRYABLE_STATUS = frozenset(
    {HTTPStatus.REQUEST_TIMEOUT, HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.TOO_EARLY}
)


@dataclass(frozen=True)
class Item:
    """One file to transcribe: its URL and the input row it came from."""

    url: str
    row: dict[str, str]


class FetchFailed(Exception):
    """This file could not be fetched (its row records why)."""


def read_items(
    source: str, dataset: Path | None, audio_column: str, s3: Callable[[], Any]
) -> tuple[list[Item], list[str]]:
    """The files to transcribe and the input columns to carry into the output.

    A non-empty `source` wins over `dataset` (a CSV artifact): a `source` ending in .csv is
    a CSV at a path or URL, anything else a directory (path or file:// URL) or an S3
    prefix. Relative audio URLs in a CSV are resolved against the CSV's own location.
    """
    source = source.strip()
    if not source:
        if dataset is None:
            raise cli.BadInput(
                "no input: give a calls CSV (dataset) or a source CSV, directory or prefix"
            )
        return _csv_items(dataset.read_bytes(), dataset.resolve().as_uri(), audio_column)
    if dataset is not None:
        logger.info("source %s is given: the dataset artifact is not read", source)
    if urllib.parse.urlparse(source).path.lower().endswith(".csv"):
        url = _as_url(source)
        try:
            data = fetch(url, s3, max_attempts=3)
        except FetchFailed as exc:
            raise cli.BadInput(f"cannot read the source CSV {source}: {exc}") from None
        return _csv_items(data, url, audio_column)
    urls = _list_s3(source, s3) if source.startswith("s3://") else _list_directory(source)
    if not urls:
        raise cli.BadInput(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {source}")
    return [Item(u, {}) for u in urls], []


def _as_url(location: str) -> str:
    scheme = urllib.parse.urlparse(location).scheme
    if scheme in ("file", "http", "https", "s3"):
        return location
    return Path(location).resolve().as_uri()


def _csv_items(data: bytes, base_url: str, audio_column: str) -> tuple[list[Item], list[str]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise cli.BadInput("the input CSV is not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = list(reader.fieldnames or [])
    if audio_column not in columns:
        raise cli.BadInput(
            f"the input CSV has no {audio_column!r} column "
            f"(columns: {', '.join(columns) or 'none'})"
        )
    items = []
    for row in reader:
        value = (row.get(audio_column) or "").strip()
        url = urllib.parse.urljoin(base_url, value) if value else ""
        items.append(Item(url, {k: v or "" for k, v in row.items() if k is not None}))
    if not items:
        raise cli.BadInput("the input CSV has no rows")
    return items, columns


def _list_directory(source: str) -> list[str]:
    parsed = urllib.parse.urlparse(source)
    path = Path(urllib.parse.unquote(parsed.path)) if parsed.scheme == "file" else Path(source)
    if not path.is_dir():
        raise cli.BadInput(f"source {source} is neither a CSV nor a directory")
    return [
        p.resolve().as_uri()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
    ]


def _list_s3(source: str, s3: Callable[[], Any]) -> list[str]:
    bucket, _, prefix = source[len("s3://") :].partition("/")
    client = s3()
    urls = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if obj["Key"].lower().endswith(AUDIO_EXTENSIONS):
                    urls.append(f"s3://{bucket}/{obj['Key']}")
    except Exception as exc:
        raise cli.ComponentError(f"cannot list {source}: {_one_line(exc)}") from None
    return sorted(urls)


def fetch(url: str, s3: Callable[[], Any], *, max_attempts: int, timeout: float = 30.0) -> bytes:
    """The bytes at `url` (file://, s3://, http(s)://), with retries on transient failures.

    Raises:
        FetchFailed: not found, refused, or still failing after `max_attempts`.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = Path(urllib.parse.unquote(parsed.path))
        try:
            return path.read_bytes()
        except OSError as exc:
            raise FetchFailed(f"cannot read {path}: {exc.strerror or exc}") from None
    if parsed.scheme == "s3":
        return _fetch_s3(parsed, s3)
    if parsed.scheme not in ("http", "https"):
        raise FetchFailed(f"unsupported audio URL {url!r}")
    if presigned_expired(url):
        url = re_presign(url, s3)
    resigned = False
    last = ""
    for attempt in range(1, max_attempts + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == HTTPStatus.FORBIDDEN and is_presigned(url) and not resigned:
                # An expired (or clock-skewed) signature: sign again once, at once.
                url, resigned = re_presign(url, s3), True
                continue
            if exc.code not in _RETRYABLE_STATUS and exc.code < HTTPStatus.INTERNAL_SERVER_ERROR:
                raise FetchFailed(f"HTTP {exc.code} for {_safe(url)}") from None
            last = f"HTTP {exc.code}"
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, socket.gaierror):
                # No retry makes an unknown host known.
                raise FetchFailed(f"unknown host in {_safe(url)}") from None
            last = str(reason)
        except (TimeoutError, ConnectionError, OSError) as exc:
            last = _one_line(exc) or type(exc).__name__
        if attempt < max_attempts:
            time.sleep(min(BACKOFF_MAX_SECONDS, BACKOFF_INITIAL_SECONDS * 2 ** (attempt - 1)))
    raise FetchFailed(f"{last} for {_safe(url)} (after {max_attempts} attempts)")


def _fetch_s3(parsed: urllib.parse.ParseResult, s3: Callable[[], Any]) -> bytes:
    bucket, key = parsed.netloc, urllib.parse.unquote(parsed.path.lstrip("/"))
    try:
        # botocore retries throttling and 5xx itself (its standard retry mode).
        body = s3().get_object(Bucket=bucket, Key=key)["Body"]
        return bytes(body.read())
    except Exception as exc:
        raise FetchFailed(f"s3://{bucket}/{key}: {_one_line(exc)}") from None


def is_presigned(url: str) -> bool:
    query = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
    return "X-Amz-Signature" in query or "Signature" in query


def presigned_expired(url: str, now: datetime | None = None) -> bool:
    """Whether a SigV4 presigned URL's X-Amz-Date + X-Amz-Expires has passed."""
    query = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
    try:
        signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expires = int(query["X-Amz-Expires"][0])
    except (KeyError, ValueError, IndexError):
        return False
    return (now or datetime.now(UTC)) >= signed + timedelta(seconds=expires)


def s3_location(url: str) -> tuple[str, str]:
    """(bucket, key) of an S3 object URL: virtual-hosted (bucket.s3[.region].amazonaws.com/key)
    or path style (host/bucket/key, as S3-compatible servers use)."""
    parsed = urllib.parse.urlparse(url)
    host = parsed.hostname or ""
    path = urllib.parse.unquote(parsed.path.lstrip("/"))
    if ".s3." in host or ".s3-" in host or host.endswith(".s3.amazonaws.com"):
        return host.split(".s3", 1)[0], path
    bucket, _, key = path.partition("/")
    return bucket, key


def re_presign(url: str, s3: Callable[[], Any]) -> str:
    """A fresh presigned GET URL for the same object, signed with the step's credentials."""
    bucket, key = s3_location(url)
    try:
        signed: str = s3().generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=PRESIGN_EXPIRY_SECONDS
        )
    except Exception as exc:
        raise FetchFailed(f"cannot re-sign the expired URL of s3://{bucket}/{key}: {exc}") from None
    logger.info("re-signed the expired presigned URL of s3://%s/%s", bucket, key)
    return signed


def _safe(url: str) -> str:
    """The URL without its query (a presigned URL's signature is a credential)."""
    parsed = urllib.parse.urlparse(url)
    return urllib.parse.urlunparse(parsed._replace(query="", fragment=""))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
