"""Releasing: build, smoke-run and push images of one checkout, and lock their digests."""

from __future__ import annotations

import hashlib
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from skit_pipelines.imagelock import LOCK_PATH, LockEntry, load_lock, save_lock
from skit_release.engines import Engine
from skit_release.git import Git, ReleaseError
from skit_release.layout import SHARED_PATHS, Change, Image
from skit_release.smoke import SmokeResult, load_smoke, make_fixture, smoke_failure

# Registries.


def push_destination(registry: str, image: Image) -> tuple[str, str]:
    """(where to push, the image reference the lock records) for a registry setting.

    `registry.example.com[/namespace]` or `docker://...`: a real registry; the image is
    <registry>/skit-pipelines/<name-with-dashes>:<version>. Local transports, for offline
    use and tests: `oci:DIR` (one OCI layout per image, tagged by version),
    `oci-archive:DIR` and `dir:DIR` (one per version).
    """
    return destination_for(registry, image.repository, image.version)


def destination_for(registry: str, name: str, version: str) -> tuple[str, str]:
    """push_destination for any repository name (e.g. "skit-pipelines/server")."""
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
        failure = smoke_failure(spec, result)
        if failure is not None:
            raise ReleaseError(f"smoke run of {image.local_ref} failed {failure}")

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


SMOKE_DATA_PATHS = ("service/skit_demo",)
"""What smoke fixtures are generated with (smoke.yaml's demo_data)."""
CI_PASSED_FOLDER = "ci-passed"
"""Under the cache directory: one empty file per image input key that CI built, smoke-ran
and pushed successfully."""


@dataclass(frozen=True)
class CiPasses:
    """Which image inputs already passed a CI build on this machine.

    Builds are reproducible (`--timestamp 0`, SOURCE_DATE_EPOCH), so an image whose
    inputs are the same as a build that passed would build the same image again: CI
    skips it. The key covers everything a build reads: the image folder and lib/ as
    committed (git tree ids; inputs with uncommitted changes get no key and are always
    built), the demo data generators smoke runs use, the base image (renewed weekly, so
    every image is rebuilt at least weekly) and the release tool's own source (how images
    are built and smoke-run).
    """

    folder: Path
    root: Path
    base_image: str

    def key(self, image: Image) -> str | None:
        git = Git(self.root)
        paths = [image.relative, *SHARED_PATHS, *SMOKE_DATA_PATHS]
        if not git.is_clean(paths):
            return None
        trees = [git.run("rev-parse", f"HEAD:{path}").strip() for path in paths]
        digest = hashlib.sha256()
        for part in (*trees, self.base_image, _tool_digest()):
            digest.update(part.encode() + b"\n")
        return f"{image.name}-{digest.hexdigest()[:32]}"

    def passed(self, image: Image) -> bool:
        key = self.key(image)
        return key is not None and (self.folder / key).exists()

    def record(self, image: Image) -> None:
        key = self.key(image)
        if key is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / key).touch()


def _tool_digest() -> str:
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def ci_to_build(images: Sequence[Image], passes: CiPasses) -> tuple[list[Image], list[Image]]:
    """(to build, skipped): the images whose inputs have not passed a CI build here, and
    at least the first one, so every CI run builds and smoke-runs an image."""
    to_build = [image for image in images if not passes.passed(image)]
    if not to_build and images:
        to_build = [images[0]]
    return to_build, [image for image in images if image not in to_build]
