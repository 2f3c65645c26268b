"""The image-folder convention: `images/<name>/` holds one component and its image.

An image reference "skit-pipelines/fetch-calls:0.1.0" (any registry prefix, tag or
digest) names the folder `images/fetch_calls/`. The local executor runs the component's
command inside that folder instead of pulling the image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from skit_pipelines.errors import NotFound

IMAGE_REPOSITORY_PREFIX = "skit-pipelines/"
ENV_ANNOTATION = "skit.ai/env"
"""component.yaml metadata annotation listing the environment variables (secrets, database
URLs) the component reads; a step receives only these from the service configuration."""

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

    @property
    def image(self) -> str:
        return f"{IMAGE_REPOSITORY_PREFIX}{self.name.replace('_', '-')}:{self.version}"


def folder_name_for_image(image: str) -> str:
    match = _IMAGE_REF.match(image)
    if match is None:
        raise NotFound(f"cannot map image {image!r} to an image folder", reason="IMAGE_NOT_FOUND")
    return match.group("repo").replace("-", "_")


@cache
def _load_folder(path: Path) -> ImageFolder:
    spec = yaml.safe_load((path / "component.yaml").read_text())
    annotations = (spec.get("metadata") or {}).get("annotations") or {}
    declared = tuple(re.split(r"[\s,]+", annotations.get(ENV_ANNOTATION, "").strip()))
    version = (path / "VERSION").read_text().strip() if (path / "VERSION").exists() else "0.0.0"
    return ImageFolder(
        name=path.name, path=path, version=version, declared_env=tuple(e for e in declared if e)
    )


def resolve_image(image: str, images_root: Path) -> ImageFolder:
    """Finds the image folder for an image reference; NotFound when there is none."""
    path = (images_root / folder_name_for_image(image)).resolve()
    if not (path / "component.yaml").is_file():
        raise NotFound(f"no image folder {path} for image {image!r}", reason="IMAGE_NOT_FOUND")
    return _load_folder(path)
