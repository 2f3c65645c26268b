"""The image-folder convention: `images/<name>/` holds one component and its image.

An image reference "skit-pipelines/fetch-calls:0.1.0" (any registry prefix, tag or
digest) names the folder `images/fetch_calls/`. The local executor runs the component's
command inside that folder instead of pulling the image.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from skit_pipelines.errors import InvalidArgument, NotFound

IMAGE_REPOSITORY_PREFIX = "skit-pipelines/"
ENV_ANNOTATION = "skit.ai/env"
"""component.yaml metadata annotation listing the environment variables (secrets, database
URLs) the component reads; a step receives only these from the service configuration."""
TIMEOUT_ANNOTATION = "skit.ai/timeout"
"""component.yaml metadata annotation bounding one attempt of a step, e.g. "600s", "15m",
"1h30m". KFP v2 IR has no per-task timeout, so the image folder carries it."""

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_IMAGE_REF = re.compile(
    r"^(?:.+/)?(?P<repo>[a-z0-9][a-z0-9._-]*)(?::[\w.-]+)?(?:@sha256:[0-9a-f]+)?$"
)


@dataclass(frozen=True)
class ImageFolder:
    name: str
    """The folder name, e.g. "fetch_calls"."""
    path: Path
    version: str
    """The VERSION file's content (semver)."""
    declared_env: tuple[str, ...]
    timeout_seconds: float | None = None
    """The `skit.ai/timeout` annotation in seconds; None when the component declares none
    (or "0")."""

    @property
    def image(self) -> str:
        return f"{IMAGE_REPOSITORY_PREFIX}{self.name.replace('_', '-')}:{self.version}"


def parse_duration(text: str) -> float:
    """Seconds in a duration such as "600s", "15m", "1h30m", "1.5h", "250ms" or "90".

    Accepts the protobuf JSON form the IR uses ("3600s", "0.5s") and Go-style sums of
    units; a bare number is seconds.

    Raises:
        ValueError: the text is not a non-negative duration.
    """
    stripped = text.strip().lower()
    try:
        seconds = float(stripped)
    except ValueError:
        parts = _DURATION_PART.findall(stripped)
        if not parts or "".join(n + u for n, u in parts) != stripped:
            raise ValueError(f"not a duration: {text!r}") from None
        seconds = sum(float(n) * _SECONDS_PER_UNIT[u] for n, u in parts)
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"not a non-negative duration: {text!r}")
    return seconds


def folder_name_for_image(image: str) -> str:
    match = _IMAGE_REF.match(image)
    if match is None:
        raise NotFound(f"cannot map image {image!r} to an image folder", reason="IMAGE_NOT_FOUND")
    return match.group("repo").replace("-", "_")


@cache
def _load_folder(path: Path) -> ImageFolder:
    import yaml  # slow to import, and a warm start of the service reads no component

    spec = yaml.safe_load((path / "component.yaml").read_text())
    annotations = (spec.get("metadata") or {}).get("annotations") or {}
    declared = tuple(re.split(r"[\s,]+", annotations.get(ENV_ANNOTATION, "").strip()))
    version = (path / "VERSION").read_text().strip() if (path / "VERSION").exists() else "0.0.0"
    timeout: float | None = None
    if annotations.get(TIMEOUT_ANNOTATION) not in (None, ""):
        try:
            timeout = parse_duration(str(annotations[TIMEOUT_ANNOTATION]))
        except ValueError as exc:
            raise InvalidArgument(
                f"{path / 'component.yaml'}: {TIMEOUT_ANNOTATION}: {exc}",
                reason="INVALID_COMPONENT",
            ) from None
    return ImageFolder(
        name=path.name,
        path=path,
        version=version,
        declared_env=tuple(e for e in declared if e),
        timeout_seconds=timeout or None,
    )


def resolve_image(image: str, images_root: Path) -> ImageFolder:
    """Finds the image folder for an image reference; NotFound when there is none."""
    path = (images_root / folder_name_for_image(image)).resolve()
    if not (path / "component.yaml").is_file():
        raise NotFound(f"no image folder {path} for image {image!r}", reason="IMAGE_NOT_FOUND")
    return _load_folder(path)


_components_root: ContextVar[Path | None] = ContextVar("components_root", default=None)
"""The images directory pipeline modules load components from while the catalog compiles
them; None: the images/ beside the module's pipelines/ (a checkout)."""


@contextlib.contextmanager
def components_from(images_root: Path) -> Iterator[None]:
    """Pipeline modules imported inside load their components from `images_root`: the
    service may run outside a checkout, with its pipelines and images configured apart."""
    token = _components_root.set(images_root)
    try:
        yield
    finally:
        _components_root.reset(token)


def load_component(pipeline_file: str, name: str) -> Any:
    """The KFP component of image folder `name`, for the pipeline module at `pipeline_file`:
    from the images directory the catalog names (`components_from`), else from images/
    beside the module's pipelines/ in the same checkout."""
    from kfp import components  # only pipeline modules need kfp; keep it off the hot path

    root = _components_root.get() or Path(pipeline_file).resolve().parent.parent / "images"
    return components.load_component_from_file(str(root / name / "component.yaml"))
