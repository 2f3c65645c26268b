"""Container engines: build, smoke-run, push and remove images with buildah or Docker."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from skit_release.git import ReleaseError
from skit_release.layout import Image
from skit_release.smoke import SMOKE_MOUNT, SmokeResult, SmokeSpec, read_outputs

BUILDAH = ("buildah", "--storage-driver", "vfs")
SOURCE_DATE_EPOCH = "0"
"""Reproducible builds: every file and the image's created time are stamped with this
(buildah --timestamp), and the base image sets it for RUN steps, so pip compiles
hash-based .pyc files (PEP 552) instead of ones holding the install time; the same source
on the same base then builds the same image id and pushes the same digest."""


def run_command(
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


def _chown_spec(user: str) -> str | None:
    if not user or user in {"0", "root", "0:0"}:
        return None
    return f"{user}:{user}" if ":" not in user and user.isdigit() else user


class Buildah(Engine):
    """buildah without a daemon: vfs storage and chroot isolation work as root anywhere.

    Builds are reproducible (`--timestamp`, SOURCE_DATE_EPOCH from the base image, which
    `--unsetenv` keeps out of the built image). `layers` caches every instruction as an
    image (`--layers`), so an unchanged dependency step is reused; with vfs each of those
    is a full copy of the root filesystem, which made builds slower here, not faster
    (images/README.md, "Reproducible builds"), hence off by default.
    """

    name = "buildah"
    needs_local_base = True

    def __init__(self, log: TextIO | None = None, *, layers: bool = False) -> None:
        super().__init__(log)
        self.layers = layers

    def buildah(self, *args: str, timeout: float = 600, what: str = "", **kwargs: Any) -> str:
        result = run_command(
            [*BUILDAH, *args], timeout=timeout, what=what or f"buildah {args[0]}", **kwargs
        )
        return result.stdout.decode(errors="replace")

    def build(
        self, image: Image, context: Path, dockerfile: Path, build_args: Mapping[str, str]
    ) -> None:
        arguments = [f"--build-arg={key}={value}" for key, value in build_args.items()]
        previous = self.image_id(image.local_ref)
        self.buildah(
            "bud",
            "--isolation",
            "chroot",
            "--pull=never",
            f"--timestamp={SOURCE_DATE_EPOCH}",
            "--unsetenv=SOURCE_DATE_EPOCH",
            f"--layers={str(self.layers).lower()}",
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
        # Only when the tag is known to name another image now: an inspect that failed
        # (None) after a fully cached build would otherwise remove the image just built.
        current = self.image_id(image.local_ref)
        if previous and current and previous != current:
            run_command([*BUILDAH, "rmi", previous], timeout=300, what="", check=False)

    def image_id(self, ref: str) -> str | None:
        result = run_command(
            [*BUILDAH, "inspect", "--type", "image", "--format", "{{.FromImageID}}", ref],
            timeout=60,
            what="",
            check=False,
        )
        return result.stdout.decode().strip() or None if result.returncode == 0 else None

    def exists(self, ref: str) -> bool:
        return self.image_id(ref) is not None

    def remove(self, ref: str) -> None:
        run_command([*BUILDAH, "rmi", ref], timeout=300, what="", check=False)

    def config(self, ref: str) -> ImageConfig:
        raw = json.loads(self.buildah("inspect", "--type", "image", ref, what=f"inspect {ref}"))
        config = (raw.get("OCIv1") or {}).get("config") or {}
        entrypoint = tuple(config.get("Entrypoint") or ()) or tuple(config.get("Cmd") or ())
        return ImageConfig(entrypoint=entrypoint, user=str(config.get("User") or ""))

    def smoke(self, ref: str, fixture: Path, spec: SmokeSpec) -> SmokeResult:
        config = self.config(ref)
        if not config.entrypoint:
            raise ReleaseError(f"{ref} has no ENTRYPOINT to smoke-run")
        container = self.buildah("from", "--pull=never", ref, what=f"buildah from {ref}").strip()
        container = container.splitlines()[-1]
        try:
            chown = _chown_spec(config.user)
            self.buildah(
                "copy",
                *(["--chown", chown] if chown else []),
                container,
                str(fixture),
                SMOKE_MOUNT,
                what="copying the smoke fixture",
            )
            env = [f"--env={key}={value}" for key, value in spec.env.items()]
            run = run_command(
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
            mount = Path(self.buildah("mount", container, what="buildah mount").strip())
            try:
                sizes, heads = read_outputs(mount / SMOKE_MOUNT.lstrip("/") / "out", spec)
            finally:
                self.buildah("umount", container, what="buildah umount")
            return SmokeResult(run.returncode, run.stdout.decode(errors="replace"), sizes, heads)
        finally:
            run_command([*BUILDAH, "rm", container], timeout=120, what="buildah rm", check=False)

    def push(self, ref: str, destination: str) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            digest_file = Path(tmp) / "digest"
            self.buildah(
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
        result = run_command(["docker", "info"], timeout=30, what="", check=False)
        return result.returncode == 0

    def build(
        self, image: Image, context: Path, dockerfile: Path, build_args: Mapping[str, str]
    ) -> None:
        # BuildKit passes SOURCE_DATE_EPOCH to RUN steps and stamps the image with it.
        build_args = {"SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, **build_args}
        arguments = [f"--build-arg={key}={value}" for key, value in build_args.items()]
        run_command(
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
        result = run_command(["docker", "image", "inspect", ref], timeout=60, what="", check=False)
        return result.returncode == 0

    def remove(self, ref: str) -> None:
        run_command(["docker", "image", "rm", ref], timeout=300, what="", check=False)

    def smoke(self, ref: str, fixture: Path, spec: SmokeSpec) -> SmokeResult:
        raw = json.loads(
            run_command(["docker", "image", "inspect", ref], timeout=60, what="inspect").stdout
        )[0]
        user = str((raw.get("Config") or {}).get("User") or "")
        env = [f"--env={key}={value}" for key, value in spec.env.items()]
        created = run_command(
            ["docker", "create", *env, ref, *spec.args], timeout=120, what="docker create"
        )
        container = created.stdout.decode().strip().splitlines()[-1]
        try:
            uid = int(user.split(":")[0]) if user.split(":")[0].isdigit() else 0
            run_command(
                ["docker", "cp", "-", f"{container}:/"],
                timeout=120,
                what="copying the smoke fixture",
                input_bytes=_tar_of(fixture, SMOKE_MOUNT.lstrip("/"), uid),
            )
            run = run_command(
                ["docker", "start", "--attach", container],
                timeout=spec.timeout_seconds,
                what=f"smoke run of {ref}",
                check=False,
            )
            archive = run_command(
                ["docker", "cp", f"{container}:{SMOKE_MOUNT}/out", "-"],
                timeout=120,
                what="copying the smoke outputs",
                check=False,
            )
            with tempfile.TemporaryDirectory() as tmp:
                if archive.returncode == 0:
                    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
                        tar.extractall(tmp, filter="data")
                sizes, heads = read_outputs(Path(tmp) / "out", spec)
            return SmokeResult(run.returncode, run.stdout.decode(errors="replace"), sizes, heads)
        finally:
            run_command(["docker", "rm", "--force", container], timeout=120, what="", check=False)

    def push(self, ref: str, destination: str) -> str:
        if not destination.startswith("docker://"):
            raise ReleaseError(f"docker pushes to registries only, not {destination} (use buildah)")
        target = destination.removeprefix("docker://")
        run_command(["docker", "tag", ref, target], timeout=60, what="docker tag")
        run_command(["docker", "push", "--quiet", target], timeout=1800, what=f"pushing {target}")
        digests: list[str] = json.loads(
            run_command(
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


def pick_engine(choice: str, log: TextIO | None = None, *, layers: bool = False) -> Engine:
    if choice == "docker" or (choice == "auto" and Docker.available()):
        return Docker(log)
    return Buildah(log, layers=layers)
