"""The local base image: Debian with Python from debootstrap, for buildah without a registry."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from skit_release.engines import BUILDAH, SOURCE_DATE_EPOCH, Buildah, run_command
from skit_release.git import ReleaseError

DEFAULT_CACHE_DIR = Path("/var/cache/skit-pipelines")
DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip")
BASE_REPOSITORY = "localhost/skit-pipelines-base"
_BASE_RECIPE = 1
"""Bump when the root filesystem recipe changes, so cached base images are rebuilt."""
_BASE_CONFIG = 2
"""Bump when the image configuration changes (2: SOURCE_DATE_EPOCH); the cached root
filesystem is reused, only the image is made again."""


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


def _rootfs_key(suite: str = DEFAULT_SUITE, today: datetime.date | None = None) -> str:
    """Names the cached root filesystem: it changes weekly (fresh security updates), with
    the recipe, and with the CA certificates this machine adds (see make_base_image)."""
    year, week, _ = (today or datetime.date.today()).isocalendar()
    recipe = hashlib.sha256()
    recipe.update(json.dumps([_BASE_RECIPE, suite, BASE_PACKAGES]).encode())
    for cert in _local_ca_certificates():
        recipe.update(cert.read_bytes())
    return f"{suite}-{year}w{week:02d}-{recipe.hexdigest()[:8]}"


def base_image_ref(suite: str = DEFAULT_SUITE, today: datetime.date | None = None) -> str:
    """The local base image's name: its root filesystem's and its configuration's recipe."""
    return f"{BASE_REPOSITORY}:{_rootfs_key(suite, today)}-c{_BASE_CONFIG}"


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
        tarball = base_dir / f"{_rootfs_key(suite)}.tar"
        if rebuild or not tarball.exists():
            _debootstrap(base_dir, tarball, suite, mirror or apt_mirror(suite), out)
        _import_rootfs(engine, tarball, ref, suite)
        for old in base_dir.glob("*.tar"):
            if old != tarball:
                old.unlink()
        listed = run_command(
            [*BUILDAH, "images", "--format", "{{.Name}}:{{.Tag}}"],
            timeout=60,
            what="",
            check=False,
        )
        for old_ref in listed.stdout.decode().split():
            if old_ref.startswith(BASE_REPOSITORY + ":") and old_ref != ref:
                run_command([*BUILDAH, "rmi", old_ref], timeout=300, what="", check=False)
        out.write(f"base image {ref} ready (rootfs cached in {tarball})\n")
    return ref


def _debootstrap(base_dir: Path, tarball: Path, suite: str, mirror: str, out: TextIO) -> None:
    if shutil.which("debootstrap") is None:
        raise ReleaseError("debootstrap is not installed (apt-get install debootstrap)")
    rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=base_dir))
    try:
        out.write(f"debootstrap {suite} from {mirror} ...\n")
        out.flush()
        run_command(
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
            run_command(
                ["chroot", str(rootfs), "update-ca-certificates"], timeout=300, what="certs"
            )
        partial = tarball.with_suffix(".tar.partial")
        run_command(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."],
            timeout=600,
            what="archiving the base root filesystem",
        )
        partial.replace(tarball)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def _import_rootfs(engine: Buildah, tarball: Path, ref: str, suite: str) -> None:
    container = (
        engine.buildah("from", "scratch", what="buildah from scratch").strip().splitlines()[-1]
    )
    try:
        mount = engine.buildah("mount", container, what="buildah mount").strip()
        run_command(
            ["tar", "--numeric-owner", "-C", mount, "-xf", str(tarball)],
            timeout=600,
            what="unpacking the base root filesystem",
        )
        engine.buildah("umount", container, what="buildah umount")
        engine.buildah(
            "config",
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env",
            "LANG=C.UTF-8",
            # For RUN steps of the images built on it (reproducible .pyc files, see
            # engines.SOURCE_DATE_EPOCH); each build unsets it in the image it makes.
            "--env",
            f"SOURCE_DATE_EPOCH={SOURCE_DATE_EPOCH}",
            "--cmd",
            "python3",
            "--label",
            f"org.opencontainers.image.title={BASE_REPOSITORY.removeprefix('localhost/')}",
            "--label",
            f"org.opencontainers.image.description=Debian {suite} minbase with python3",
            container,
            what="buildah config",
        )
        engine.buildah(
            "commit",
            "--quiet",
            f"--timestamp={SOURCE_DATE_EPOCH}",
            container,
            ref,
            what="buildah commit",
            timeout=1200,
        )
    finally:
        run_command([*BUILDAH, "rm", container], timeout=120, what="", check=False)
