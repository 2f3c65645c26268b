"""What the forge's release workflows run (.github/workflows/), kept here to be tested.

- A release tag names what it releases: `images/<name>/v<semver>` one component image,
  `service/v<semver>` the server image (deploy/Dockerfile). `parse_tag` reads one (a
  `refs/tags/` prefix is accepted, as GITHUB_REF has it) and says what is wrong with a
  bad one; `tag_problems` checks that the tagged content is that release: the folder's
  VERSION (for the service: pyproject.toml's version), a CHANGELOG entry for it and,
  for an image, the tag in component.yaml.
- `set_lock_entry` records a pushed digest in images/images.lock.json, refusing to
  replace a newer release with an older one (two release pull requests merged out of
  order).
- `write_outputs` appends `key=value` lines to a step's $GITHUB_OUTPUT file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from skit_pipelines.imagelock import LockEntry, load_lock, parse_lock, save_lock
from skit_release.builder import destination_for
from skit_release.engines import Engine
from skit_release.git import ReleaseError, is_semver, semver_key
from skit_release.layout import Image, changelog_has, component_tag, layout_problems

SERVICE_FOLDER = "deploy"
"""The server image's folder: its Dockerfile and CHANGELOG.md (its version is the
package's, in pyproject.toml)."""
SERVICE_REPOSITORY = "skit-pipelines/server"
_TAG_FORMS = "images/<name>/v<MAJOR.MINOR.PATCH> or service/v<MAJOR.MINOR.PATCH>"
_IMAGE_TAG = re.compile(r"^images/(?P<name>[^/]+)/(?P<version>[^/]+)$")
_SERVICE_TAG = re.compile(r"^service/(?P<version>[^/]+)$")
_FOLDER_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class ReleaseTag:
    """One release tag, parsed."""

    tag: str
    """The tag without refs/tags/, e.g. "images/fetch_calls/v0.1.1"."""
    kind: Literal["image", "service"]
    name: str
    """The image folder's name, or "server" for the service."""
    version: str

    @property
    def folder(self) -> str:
        """The folder released, relative to the checkout."""
        return f"images/{self.name}" if self.kind == "image" else SERVICE_FOLDER

    def outputs(self) -> dict[str, str]:
        """What the workflow's later steps need, as step outputs."""
        return {"kind": self.kind, "name": self.name, "version": self.version}


def _version_of(tag: str, raw: str) -> str:
    if not raw.startswith("v"):
        fixed = tag[: len(tag) - len(raw)] + "v" + raw
        raise ReleaseError(f"{tag!r}: the version needs a leading v ({fixed})")
    version = raw.removeprefix("v")
    if not is_semver(version):
        raise ReleaseError(f"{tag!r}: {version!r} is not a semantic version (MAJOR.MINOR.PATCH)")
    return version


def parse_tag(ref: str) -> ReleaseTag:
    """Reads a release tag (or refs/tags/<tag>); ReleaseError says what is wrong."""
    if ref.startswith("refs/") and not ref.startswith("refs/tags/"):
        raise ReleaseError(f"{ref!r} is not a tag: releases run on tags {_TAG_FORMS}")
    tag = ref.removeprefix("refs/tags/")
    service = _SERVICE_TAG.match(tag)
    if service:
        return ReleaseTag(tag, "service", "server", _version_of(tag, service["version"]))
    image = _IMAGE_TAG.match(tag)
    if image:
        name = image["name"]
        if not _FOLDER_NAME.match(name):
            raise ReleaseError(
                f"{tag!r}: {name!r} is not an image folder name (lowercase, digits, _)"
            )
        return ReleaseTag(tag, "image", name, _version_of(tag, image["version"]))
    raise ReleaseError(f"{tag!r} is not a release tag: expected {_TAG_FORMS}")


def service_version(root: Path) -> str:
    """The server image's version: the skit-pipelines package version (pyproject.toml)."""
    with (root / "pyproject.toml").open("rb") as handle:
        version: str = tomllib.load(handle)["project"]["version"]
    return version


def tag_problems(root: Path, tag: ReleaseTag) -> list[str]:
    """Why the checkout is not the release `tag` names (empty when it is)."""
    if tag.kind == "service":
        problems = []
        version = service_version(root)
        if version != tag.version:
            problems.append(
                f"{tag.tag}: pyproject.toml's version is {version}, not {tag.version}: "
                "tag the commit that bumps it"
            )
        if not changelog_has(root / SERVICE_FOLDER, tag.version):
            problems.append(f"{SERVICE_FOLDER}/CHANGELOG.md has no `## {tag.version}` entry")
        return problems
    folder = root / tag.folder
    if not folder.is_dir():
        return [f"{tag.tag}: there is no image folder {tag.folder}"]
    version_file = folder / "VERSION"
    version = version_file.read_text().strip() if version_file.is_file() else ""
    image = Image(name=tag.name, folder=folder, version=version)
    problems = layout_problems(image)
    if version and version != tag.version:
        problems.append(
            f"{tag.tag}: {tag.folder}/VERSION is {version}, not {tag.version}: "
            "tag the commit that bumps it"
        )
    if not changelog_has(folder, tag.version):
        problems.append(f"{tag.folder}/CHANGELOG.md has no `## {tag.version}` entry")
    named = component_tag(folder)
    if named != tag.version:
        problems.append(f"{tag.folder}/component.yaml names tag {named}, not {tag.version}")
    return problems


def local_ref(root: Path, tag: ReleaseTag) -> tuple[str, str]:
    """(repository, local image reference) of what `tag` releases, as built here."""
    if tag.kind == "image":
        repository = Image(name=tag.name, folder=root / tag.folder, version=tag.version).repository
    else:
        repository = SERVICE_REPOSITORY
    return repository, f"localhost/{repository}:{tag.version}"


def push_tagged(root: Path, tag: ReleaseTag, engine: Engine, registry: str) -> LockEntry:
    """Pushes the image `tag` names, built and smoke-run here, to `registry`; returns
    what the lock records for it."""
    repository, local = local_ref(root, tag)
    if not engine.exists(local):
        raise ReleaseError(f"{local} is not built here (build and smoke-run it first)")
    destination, reference = destination_for(registry, repository, tag.version)
    digest = engine.push(local, destination)
    return LockEntry(version=tag.version, image=reference, digest=digest)


def set_lock_entry(root: Path, lock_path: Path, name: str, entry: LockEntry) -> LockEntry | None:
    """Records `entry` for image folder `name` in the lock; returns the entry it replaced.

    Refuses an entry that is not well-formed, an image folder the checkout does not have,
    and an older version than the lock already records.
    """
    if not (root / "images" / name).is_dir():
        raise ReleaseError(f"no image folder images/{name}")
    if not is_semver(entry.version):
        raise ReleaseError(f"{entry.version!r} is not a semantic version (MAJOR.MINOR.PATCH)")
    parse_lock({name: {"version": entry.version, "image": entry.image, "digest": entry.digest}})
    lock = load_lock(lock_path)
    previous = lock.get(name)
    if previous is not None and semver_key(previous.version) > semver_key(entry.version):
        raise ReleaseError(
            f"the lock already records {name} {previous.version}, newer than {entry.version}"
        )
    lock[name] = entry
    save_lock(lock_path, lock)
    return previous


def write_outputs(path: Path, outputs: Mapping[str, str]) -> None:
    """Appends `key=value` lines, the format of a GitHub Actions step's $GITHUB_OUTPUT."""
    for key, value in outputs.items():
        if "\n" in value or "\r" in value:
            raise ReleaseError(f"output {key} must be one line")
    with path.open("a", encoding="utf-8") as handle:
        for key, value in outputs.items():
            handle.write(f"{key}={value}\n")
