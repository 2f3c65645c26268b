"""Versions and the repository: semantic versions, release tags, changed files."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
