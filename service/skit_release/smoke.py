"""Smoke runs: images/<name>/smoke.yaml, its fixture, and what a run must produce."""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from skit_release.git import ReleaseError

SMOKE_FILE = "smoke.yaml"
SMOKE_MOUNT = "/smoke"
"""Where the smoke fixture is copied in the container; outputs go to <SMOKE_MOUNT>/out."""
_OUTPUT_TAIL_LINES = 20
"""Lines of a failed run's output that its error shows."""


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


@dataclass(frozen=True)
class SmokeResult:
    returncode: int
    output: str
    outputs: Mapping[str, int]
    """Size in bytes of each expected output that exists."""
    head: Mapping[str, str]
    """First line of each text output, for the report."""


def read_outputs(out_dir: Path, spec: SmokeSpec) -> tuple[dict[str, int], dict[str, str]]:
    sizes, heads = {}, {}
    for name in spec.outputs:
        path = out_dir / name
        if path.is_file():
            sizes[name] = path.stat().st_size
            with path.open("rb") as handle:
                heads[name] = handle.readline(200).decode(errors="replace").rstrip("\n")
    return sizes, heads


def smoke_failure(spec: SmokeSpec, result: SmokeResult) -> str | None:
    """Why a smoke run failed, with the tail of its output; None when it passed (exit 0 and
    every output written, non-empty)."""
    missing = [name for name in spec.outputs if not result.outputs.get(name)]
    if result.returncode == 0 and not missing:
        return None
    reason = (
        f"exit {result.returncode}" if result.returncode != 0 else f"no or empty outputs {missing}"
    )
    tail = "\n".join(result.output.splitlines()[-_OUTPUT_TAIL_LINES:])
    return f"({reason}):\n{tail}"


def run_locally(
    folder: Path, spec: SmokeSpec, fixture: Path, command: Sequence[str] | None = None
) -> SmokeResult:
    """The smoke run without an image: `command` (default: this interpreter with `-m
    <folder name>`, what every image's ENTRYPOINT runs) in the image folder, with the
    fixture made by make_fixture standing in for /smoke in the arguments and environment."""

    def local(text: str) -> str:
        return text.replace(SMOKE_MOUNT, str(fixture))

    command = command or (sys.executable, "-m", folder.name)
    try:
        run = subprocess.run(
            [*command, *map(local, spec.args)],
            cwd=folder,
            env={**os.environ, **{name: local(value) for name, value in spec.env.items()}},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=spec.timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ReleaseError(
            f"smoke run of images/{folder.name}: timed out after {spec.timeout_seconds:.0f}s"
        ) from None
    sizes, heads = read_outputs(fixture / "out", spec)
    return SmokeResult(run.returncode, run.stdout, sizes, heads)
