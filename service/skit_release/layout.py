"""Image folders: what each holds, which changed since its release, what a release needs."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from skit_pipelines.images import IMAGE_REPOSITORY_PREFIX
from skit_release.git import Git, ReleaseError, is_semver, semver_key
from skit_release.smoke import SMOKE_FILE, load_smoke

SHARED_PATHS = ("lib",)
"""Folders every image installs: a change there changes every image."""


# Image folders.


@dataclass(frozen=True)
class Image:
    """One image folder as a release sees it."""

    name: str
    """Folder name under images/, e.g. "fetch_calls"."""
    folder: Path
    version: str
    """VERSION's content ("" when the file is missing)."""

    @property
    def repository(self) -> str:
        """e.g. "skit-pipelines/fetch-calls"."""
        return IMAGE_REPOSITORY_PREFIX + self.name.replace("_", "-")

    @property
    def local_ref(self) -> str:
        """The image as built on this machine."""
        return f"localhost/{self.repository}:{self.version}"

    @property
    def tag_name(self) -> str:
        return f"images/{self.name}/v{self.version}"

    @property
    def relative(self) -> str:
        return f"images/{self.name}"


def image_folders(root: Path) -> list[Image]:
    """Every images/<name>/ folder (not hidden, not __pycache__), sorted by name."""
    images_root = root / "images"
    images = []
    for folder in sorted(images_root.iterdir()):
        if not folder.is_dir() or folder.name.startswith((".", "_")):
            continue
        version_file = folder / "VERSION"
        version = version_file.read_text().strip() if version_file.is_file() else ""
        images.append(Image(name=folder.name, folder=folder, version=version))
    return images


def select_images(root: Path, names: Sequence[str]) -> list[Image]:
    images = {image.name: image for image in image_folders(root)}
    unknown = [name for name in names if name not in images]
    if unknown:
        raise ReleaseError(f"no image folder images/{unknown[0]} (known: {', '.join(images)})")
    return [images[name] for name in names]


@dataclass(frozen=True)
class Change:
    """Whether an image changed since its last release, and how."""

    image: Image
    last_version: str | None
    """Version of the last release tag in HEAD's history; None when never released."""
    files: tuple[str, ...]
    """Files of the folder or lib/ that differ from the last release."""
    released_at: int | None = None
    """Commit time (Unix seconds) of the last release tag."""

    @property
    def changed(self) -> bool:
        return self.last_version is None or bool(self.files)

    def describe(self) -> str:
        if self.last_version is None:
            return f"{self.image.name} {self.image.version or '?'}: never released"
        if not self.files:
            return f"{self.image.name} {self.image.version}: unchanged since v{self.last_version}"
        shown = ", ".join(self.files[:5]) + (
            f" and {len(self.files) - 5} more" if len(self.files) > 5 else ""
        )
        return f"{self.image.name}: changed since v{self.last_version} ({shown})"


def changes(root: Path, images: Sequence[Image] | None = None) -> list[Change]:
    git = Git(root)
    result = []
    for image in images if images is not None else image_folders(root):
        tags = git.release_tags(image.name)
        if not tags:
            result.append(Change(image, None, ()))
            continue
        last_version, last_tag = tags[-1]
        files = git.changed_since(last_tag, [image.relative, *SHARED_PATHS])
        released_at = int(git.run("log", "-1", "--format=%ct", last_tag).strip() or 0)
        result.append(Change(image, last_version, tuple(files), released_at))
    return result


def changed_images(root: Path) -> list[Image]:
    return [change.image for change in changes(root) if change.changed]


# Checks.


_CHANGELOG_HEADING = r"^#{{2,3}}\s+\[?v?{version}\]?(?=\s|$)"
_FROM_BASE = re.compile(r"^\s*FROM\s+\$\{?BASE_IMAGE\}?(\s|$)", re.MULTILINE | re.IGNORECASE)
_ARG_BASE = re.compile(r"^\s*ARG\s+BASE_IMAGE(=|\s|$)", re.MULTILINE | re.IGNORECASE)
_BUILD_HOWTO = (
    'create images/{name}/BUILD.bazel with `load("//bazel:defs.bzl", "component_image")` and '
    '`component_image()` (README.md, "Releasing images")'
)
_SMOKE_HOWTO = (
    "say how to smoke-run the image on a tiny real input, like images/fetch_calls/smoke.yaml "
    '(README.md, "Releasing images")'
)


def changelog_has(folder: Path, version: str) -> bool:
    changelog = folder / "CHANGELOG.md"
    if not changelog.is_file():
        return False
    pattern = re.compile(_CHANGELOG_HEADING.format(version=re.escape(version)), re.MULTILINE)
    return pattern.search(changelog.read_text()) is not None


def component_tag(folder: Path) -> str | None:
    """The tag of the image component.yaml names (None when it has none)."""
    try:
        spec = yaml.safe_load((folder / "component.yaml").read_text()) or {}
        image = spec["implementation"]["container"]["image"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None
    last = str(image).split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def layout_problems(image: Image) -> list[str]:
    """What an image folder lacks to be built, smoke-run and released (every folder)."""
    folder, name = image.folder, image.name
    problems = []
    for required in ("Dockerfile", "component.yaml", "VERSION", "CHANGELOG.md"):
        if not (folder / required).is_file():
            problems.append(f"images/{name}: {required} is missing")
    if not (folder / SMOKE_FILE).is_file():
        problems.append(f"images/{name}: {SMOKE_FILE} is missing: " + _SMOKE_HOWTO)
    build = folder / "BUILD.bazel"
    if not build.is_file():
        problems.append(f"images/{name}: no BUILD.bazel: " + _BUILD_HOWTO.format(name=name))
    elif "component_image(" not in build.read_text():
        problems.append(f"images/{name}/BUILD.bazel does not call component_image()")
    listed = folder.parent / "BUILD.bazel"
    if listed.is_file() and not re.search(rf'^\s*"{re.escape(name)}",', listed.read_text(), re.M):
        problems.append(f'images/{name}: add "{name}", to IMAGES in images/BUILD.bazel')
    if image.version and not is_semver(image.version):
        problems.append(f"images/{name}/VERSION: {image.version!r} is not MAJOR.MINOR.PATCH")
    dockerfile = folder / "Dockerfile"
    if dockerfile.is_file():
        text = dockerfile.read_text()
        if not (_ARG_BASE.search(text) and _FROM_BASE.search(text)):
            problems.append(
                f"images/{name}/Dockerfile: start with `ARG BASE_IMAGE=<default>` and "
                "`FROM ${BASE_IMAGE}` (CI builds on a local base image)"
            )
    if (folder / SMOKE_FILE).is_file():
        try:
            load_smoke(folder)
        except ReleaseError as error:
            problems.append(str(error))
    return problems


def release_problems(change: Change) -> list[str]:
    """What keeps a changed image from being released."""
    image, name = change.image, change.image.name
    if not is_semver(image.version):
        return []  # layout_problems says so
    problems = []
    if change.last_version is not None and semver_key(image.version) <= semver_key(
        change.last_version
    ):
        problems.append(
            f"images/{name} changed since its release {change.last_version} but VERSION is "
            f"{image.version}: bump it (and add a CHANGELOG.md entry)"
        )
    if not changelog_has(image.folder, image.version):
        problems.append(f"images/{name}/CHANGELOG.md has no `## {image.version}` entry")
    tag = component_tag(image.folder)
    if tag != image.version:
        problems.append(
            f"images/{name}/component.yaml names tag {tag} but VERSION is {image.version}"
        )
    return problems


def check(root: Path) -> tuple[list[Change], dict[str, list[str]]]:
    """(changes, problems by image name): every folder's layout, and the release rules for
    the changed ones. An image without problems has no key."""
    all_changes = changes(root)
    problems = {}
    for change in all_changes:
        found = layout_problems(change.image)
        if change.changed:
            found += release_problems(change)
        if found:
            problems[change.image.name] = found
    return all_changes, problems
