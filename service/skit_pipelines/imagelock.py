"""The images lock: which pushed image, by digest, each component version is.

`images/images.lock.json` maps an image folder name to the release of it that was last
pushed (by `skit-release release`):

    {"fetch_calls": {"version": "0.1.0",
                     "image": "registry.example.com/skit-pipelines/fetch-calls:0.1.0",
                     "digest": "sha256:..."}}

When pipelines are compiled for Kubeflow, `pin_images` replaces every component's
`skit-pipelines/<name>:<version>` with that image by digest, so a cluster runs exactly
the bytes that were built and smoke-tested. The local executor does not need it: it
resolves an image reference, pinned or not, to its folder.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from skit_pipelines.images import folder_name_for_image

LOCK_PATH = Path("images") / "images.lock.json"
"""Where the lock lives, relative to the repository root."""

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r":(?P<tag>[\w][\w.-]*)(?:@sha256:[0-9a-f]+)?$")


class ImageLockError(ValueError):
    """The lock is malformed, or it cannot pin an image the pipeline uses."""

    def __init__(self, message: str, *, unreleased: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.unreleased = unreleased
        """From `pin_images`: the image folders the lock has no release of (none, or
        another version), so a caller can say what to release."""


@dataclass(frozen=True)
class LockEntry:
    """One released component image."""

    version: str
    """The image folder's VERSION at release."""
    image: str
    """Where it was pushed: repository and tag (or a local transport reference)."""
    digest: str
    """The pushed manifest's digest, "sha256:<hex>"."""

    @property
    def pinned(self) -> str:
        """The reference a cluster pulls: the image by digest (the tag is kept for people)."""
        return f"{self.image.split('@', 1)[0]}@{self.digest}"


ImageLock = dict[str, LockEntry]


def parse_lock(data: Mapping[str, Any]) -> ImageLock:
    lock: ImageLock = {}
    for name, entry in data.items():
        if not isinstance(entry, Mapping):
            raise ImageLockError(f"lock entry {name!r} is not an object")
        try:
            parsed = LockEntry(
                version=str(entry["version"]),
                image=str(entry["image"]),
                digest=str(entry["digest"]),
            )
        except KeyError as missing:
            raise ImageLockError(f"lock entry {name!r} has no {missing}") from None
        if not _DIGEST.match(parsed.digest):
            raise ImageLockError(f"lock entry {name!r}: {parsed.digest!r} is not a sha256 digest")
        lock[name] = parsed
    return lock


def load_lock(path: Path) -> ImageLock:
    """Reads a lock file; a missing file is an empty lock."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as error:
        raise ImageLockError(f"{path}: not JSON: {error}") from None
    if not isinstance(data, Mapping):
        raise ImageLockError(f"{path}: expected an object of image folder names")
    return parse_lock(data)


def dump_lock(lock: Mapping[str, LockEntry]) -> str:
    return json.dumps({name: asdict(lock[name]) for name in sorted(lock)}, indent=2) + "\n"


def save_lock(path: Path, lock: Mapping[str, LockEntry]) -> None:
    """Writes the lock atomically, entries sorted by name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(dump_lock(lock))
    temporary.replace(path)


def _tag(image: str) -> str | None:
    last = image.rsplit("/", 1)[-1]
    match = _TAG.search(last)
    return match.group("tag") if match else None


def pin_images(spec: Mapping[str, Any], lock: Mapping[str, LockEntry] | Path) -> dict[str, Any]:
    """Returns a copy of a compiled pipeline (KFP IR) with every image pinned by digest.

    Each executor's `container.image` names an image folder; the lock's entry for that
    folder must be the version the image's tag asks for (a component whose VERSION was
    bumped must be released before pipelines using it are compiled for Kubeflow).

    Raises:
        ImageLockError: an image has no lock entry, or the entry is another version.
    """
    entries = load_lock(lock) if isinstance(lock, Path) else lock
    pinned = copy.deepcopy(dict(spec))
    executors = pinned.get("deploymentSpec", {}).get("executors", {})
    problems = []
    unreleased: set[str] = set()
    for executor_name, executor in sorted(executors.items()):
        container = executor.get("container")
        if not container or "image" not in container:
            continue
        image = container["image"]
        name = folder_name_for_image(image)
        entry = entries.get(name)
        if entry is None:
            problems.append(f"{executor_name}: {image} was never released (no lock entry {name!r})")
            unreleased.add(name)
            continue
        wanted = _tag(image)
        if wanted is not None and wanted != entry.version:
            problems.append(
                f"{executor_name}: {image} wants {wanted} but the lock has {name} {entry.version}"
                " (release the image first)"
            )
            unreleased.add(name)
            continue
        container["image"] = entry.pinned
    if problems:
        raise ImageLockError(
            "cannot pin images: " + "; ".join(problems), unreleased=tuple(sorted(unreleased))
        )
    return pinned
