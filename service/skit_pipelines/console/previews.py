"""Artifact previews: only artifacts a run recorded, read through the ArtifactStore.

A preview names a run, a step, one of the step's outputs and optionally a file inside
it (for a directory artifact such as a report). The artifact's URI comes from the run,
never from the request, and the file is resolved inside the artifact's own directory:
`..`, absolute paths and symbolic links leading out are refused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import mimetypes
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlencode

from skit_pipelines.artifacts.base import ArtifactStore
from skit_pipelines.console import markdown
from skit_pipelines.domain import Artifact, Run
from skit_pipelines.errors import InvalidArgument, NotFound

CSV_ROWS = 50
"""Rows of a CSV preview (after its header)."""
TEXT_BYTES = 64 * 1024
"""What a text, JSON or Markdown preview reads at most."""
LISTED_FILES = 200
"""Files a directory artifact's listing shows at most."""

IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
}
"""Served inline as images; anything else outside RAW_TYPES is a download."""
RAW_TYPES = {
    **IMAGE_TYPES,
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".json": "application/json",
    ".md": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".log": "text/plain; charset=utf-8",
}


@dataclass(frozen=True)
class Located:
    """A file of an artifact on local disk."""

    path: Path
    relative: str
    """Its path inside the artifact ("" for a single-file artifact)."""
    artifact: Artifact
    step: str


def find_artifact(run: Run, step_name: str, output: str) -> Artifact:
    step = next((s for s in run.steps if s.name == step_name), None)
    if step is None:
        raise NotFound(f"{run.name} has no step {step_name[:200]!r}", reason="STEP_NOT_FOUND")
    artifact = next((a for a in step.output_artifacts if a.name == output), None)
    if artifact is None:
        raise NotFound(
            f"step {step_name[:200]!r} of {run.name} has no output artifact {output[:200]!r}",
            reason="ARTIFACT_NOT_FOUND",
        )
    return artifact


def _checked_relative(path: str) -> PurePosixPath:
    relative = PurePosixPath(path)
    if (
        "\\" in path
        or "\0" in path
        or relative.is_absolute()
        or any(part in ("..", "") for part in path.split("/"))
    ):
        raise InvalidArgument(
            "path must be a relative path inside the artifact, without '..'", field="path"
        )
    return relative


class ArtifactReader:
    """Opens recorded artifacts through the ArtifactStore (blocking: call in a thread)."""

    def __init__(self, store: ArtifactStore, scratch: Path) -> None:
        self._store = store
        self._scratch = scratch
        self._lock = threading.Lock()

    def close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)

    def _local(self, artifact: Artifact) -> Path:
        # One scratch folder per URI: a remote store downloads an artifact once.
        key = hashlib.sha256(f"{artifact.uri}\0{artifact.sha256}".encode()).hexdigest()[:24]
        scratch = self._scratch / key
        with self._lock:
            scratch.mkdir(parents=True, exist_ok=True)
            try:
                return self._store.open_local(artifact.uri, scratch)
            except InvalidArgument:
                raise NotFound(
                    f"artifact {artifact.name} is not in the artifact store",
                    reason="ARTIFACT_NOT_FOUND",
                ) from None

    def locate(self, run: Run, step: str, output: str, path: str = "") -> Located:
        artifact = find_artifact(run, step, output)
        base = self._local(artifact).resolve()
        if not base.exists():
            raise NotFound(f"artifact {artifact.name} is gone", reason="ARTIFACT_GONE")
        if not path:
            return Located(base, "", artifact, step)
        relative = _checked_relative(path)
        target = (base / relative).resolve()
        if not base.is_dir() or not target.is_relative_to(base) or not target.is_file():
            raise NotFound(f"artifact {artifact.name} has no file {path[:200]!r}")
        return Located(target, relative.as_posix(), artifact, step)

    def preview(self, run: Run, step: str, output: str, path: str = "") -> dict[str, Any]:
        """What the run page shows for an artifact: a listing, a table, rendered Markdown,
        an image or HTML (by URL, for a sandboxed frame), JSON or text."""
        located = self.locate(run, step, output, path)
        base: dict[str, Any] = {
            "step": step,
            "output": output,
            "path": located.relative,
            "uri": located.artifact.uri,
            "type": located.artifact.type,
            "raw_url": raw_url(run, step, output, located.relative),
        }
        if located.path.is_dir():
            return {**base, "kind": "directory", "files": _listing(located.path)}
        suffix = located.path.suffix.lower()
        size = located.path.stat().st_size
        base["size_bytes"] = size
        if suffix in (".csv", ".tsv") or (not suffix and _looks_like_csv(located.path)):
            return {**base, "kind": "table", **_csv_head(located.path, suffix)}
        if suffix in IMAGE_TYPES:
            return {**base, "kind": "image"}
        if suffix in (".html", ".htm"):
            return {**base, "kind": "html"}
        text, clipped = _head(located.path)
        if suffix == ".md":
            folder = PurePosixPath(located.relative).parent.as_posix()

            def image_url(src: str) -> str | None:
                try:
                    inside = _checked_relative(
                        src if folder in ("", ".") else f"{folder}/{src}"
                    ).as_posix()
                except InvalidArgument:
                    return None
                if PurePosixPath(inside).suffix.lower() not in IMAGE_TYPES:
                    return None
                return raw_url(run, step, output, inside)

            return {
                **base,
                "kind": "markdown",
                "html": markdown.render(text, image_url),
                "clipped": clipped,
            }
        if suffix == ".json" and not clipped:
            try:
                return {**base, "kind": "json", "text": json.dumps(json.loads(text), indent=2)}
            except ValueError:
                pass
        if "\0" in text:
            return {**base, "kind": "binary"}
        return {**base, "kind": "text", "text": text, "clipped": clipped}


def raw_url(run: Run, step: str, output: str, path: str = "") -> str:
    query = {"step": step, "output": output}
    if path:
        query["path"] = path
    return f"/api/runs/{run.id}/artifact?{urlencode(query)}"


def raw_type(path: Path) -> tuple[str, bool]:
    """The Content-Type a raw artifact file is served with, and whether it may show inline
    (else it is an attachment)."""
    known = RAW_TYPES.get(path.suffix.lower())
    if known is not None:
        return known, True
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream", False


def _listing(folder: Path) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = []
    for child in sorted(folder.rglob("*")):
        if len(files) >= LISTED_FILES:
            break
        # A link is not followed: it might lead out of the artifact.
        if child.is_file() and not child.is_symlink():
            files.append(
                {"path": child.relative_to(folder).as_posix(), "size_bytes": child.stat().st_size}
            )
    return files


def _head(path: Path) -> tuple[str, bool]:
    with path.open("rb") as f:
        data = f.read(TEXT_BYTES + 1)
    return data[:TEXT_BYTES].decode(errors="replace"), len(data) > TEXT_BYTES


def _looks_like_csv(path: Path) -> bool:
    """A file without a suffix (a KFP Dataset's path) whose first lines have the same
    number of commas, at least one."""
    with path.open("rb") as f:
        lines = f.read(4096).decode(errors="replace").splitlines()[:3]
    counts = {line.count(",") for line in lines}
    return len(lines) >= 2 and len(counts) == 1 and counts != {0}


def _csv_head(path: Path, suffix: str) -> dict[str, Any]:
    text, clipped = _head(path)
    rows = list(csv.reader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ","))
    if clipped and rows:
        rows.pop()  # likely cut in the middle
    header, body = (rows[0], rows[1:]) if rows else ([], [])
    return {
        "columns": header,
        "rows": body[:CSV_ROWS],
        "more": clipped or len(body) > CSV_ROWS,
    }
