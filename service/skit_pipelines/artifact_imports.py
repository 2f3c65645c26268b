"""Which URIs `dsl.importer` may import on the local executor.

An importer turns an existing file into an artifact of the run. The service reads that file
with its own rights, so a pipeline (or whoever sets its parameters) must not name just any
file: a `file://` URI must lie below one of the configured import roots (SKIT_IMPORT_ROOTS,
`serve --import-root`) or in the local artifact store; an `s3://` URI must lie in the
artifact store's bucket and prefix. CreateRun checks the URIs it can know (constants, and
pipeline parameters: backends/local_checks.py); the executor checks every URI again when
the importer runs (one may come from an upstream step's output).

Import-light on purpose: CreateRun's checks use it before the executor is loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse


@dataclass(frozen=True)
class ImportPolicy:
    """Where importers may read. The default allows nothing."""

    roots: tuple[Path, ...] = ()
    """Directories whose files `file://` URIs may name (resolved; symlinks followed)."""
    artifacts_root: Path | None = None
    """The local artifact store's directory: its files may be imported too."""
    artifacts_url: str = ""
    """An S3 artifact store, "s3://bucket/prefix": its objects may be imported."""

    def refusal(self, uri: str) -> str | None:
        """Why `uri` may not be imported here, as one sentence; None when it may."""
        parsed = urlparse(uri)
        if parsed.scheme == "file":
            return self._file_refusal(uri, parsed.netloc, unquote(parsed.path))
        if parsed.scheme == "s3":
            return self._s3_refusal(uri, parsed.netloc, parsed.path)
        if not parsed.scheme and uri.startswith("/"):
            return f"{uri} is a path, not a URI: write file://{uri}"
        return (
            f"{uri}: the local executor imports file:// URIs below its import roots and"
            " s3:// URIs in its artifact store only"
        )

    def _file_refusal(self, uri: str, host: str, path: str) -> str | None:
        if host not in ("", "localhost") or not path.startswith("/"):
            return f"{uri} is not a file:///absolute/path URI"
        # realpath: a symlink below a root must not lead out of it.
        real = Path(os.path.realpath(path))
        allowed = [*self.roots, *([self.artifacts_root] if self.artifacts_root else [])]
        if any(real.is_relative_to(Path(os.path.realpath(root))) for root in allowed):
            return None
        if not self.roots:
            return (
                f"{uri} is outside the artifact store, and no import roots are configured"
                " (set SKIT_IMPORT_ROOTS to the directories importers may read)"
            )
        return f"{uri} is outside the import roots ({', '.join(map(str, self.roots))})"

    def _s3_refusal(self, uri: str, bucket: str, key_path: str) -> str | None:
        if not self.artifacts_url.startswith("s3://"):
            return f"{uri}: s3:// URIs are imported only when the artifact store is on S3"
        store = urlparse(self.artifacts_url)
        prefix = store.path.strip("/")
        key = key_path.lstrip("/")
        inside = not prefix or key == prefix or key.startswith(prefix + "/")
        if bucket != store.netloc or not inside or ".." in key.split("/"):
            return f"{uri} is outside the artifact store {self.artifacts_url.rstrip('/')}"
        return None
