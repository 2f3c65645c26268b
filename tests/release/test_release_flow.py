"""Releasing one component releases only that image (a temporary clone with release tags).

The clone holds the two original images, fetch_calls and invalidate_situations, as they
are in this checkout. Both are released and tagged; then fetch_calls changes, is reported
changed, refused until its VERSION, CHANGELOG and component.yaml are bumped, released
again, and re-pinned, while invalidate_situations keeps its tag, lock entry and digest.

The flow runs with a fake container engine by default (seconds). With
SKIT_TEST_BUILDAH=1 (CI sets it; needs root, buildah and debootstrap) it builds,
smoke-runs and pushes real images with buildah to a local OCI registry and prints the
times.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from skit_pipelines.imagelock import load_lock, pin_images
from skit_release import cli, layout
from skit_release.base_image import DEFAULT_CACHE_DIR, make_base_image
from skit_release.builder import Builder, CiPasses, Outcome, ci_images, ci_to_build, release
from skit_release.engines import Buildah, Engine, ImageConfig
from skit_release.git import ReleaseError
from skit_release.layout import Image
from skit_release.smoke import SmokeResult, SmokeSpec
from skit_testing.git import GIT_ENV, git

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ("fetch_calls", "invalidate_situations")
REAL_BUILDAH = os.environ.get("SKIT_TEST_BUILDAH") == "1"
pytestmark = [
    pytest.mark.xdist_group("buildah"),  # one worker: real builds share storage
    # Real builds of three images take about two minutes on an idle 2-core machine.
    pytest.mark.timeout(900 if REAL_BUILDAH else 120),
]
# The base image cache is shared with `skit-release` (CI keeps it between runs).
cache_dir = Path(os.environ.get("SKIT_CACHE_DIR", DEFAULT_CACHE_DIR))


def _copy_tree(source: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A clone of this repository whose images/ are the two original images as they are in
    the working tree (so uncommitted work is what gets tested), committed."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(repo)], check=True)
    for folder in (repo / "images").iterdir():
        if folder.is_dir() and folder.name not in IMAGES:
            shutil.rmtree(folder)
    for name in IMAGES:
        _copy_tree(ROOT / "images" / name, repo / "images" / name)
    _copy_tree(ROOT / "lib", repo / "lib")
    (repo / "images" / "images.lock.json").write_text("{}\n")
    git(repo, "add", "-A", "images", "lib")
    git(repo, "commit", "--quiet", "--allow-empty", "-m", "snapshot of the working tree")
    return repo


def _folder_digest(image: Image, root: Path) -> str:
    content = hashlib.sha256()
    for base in (image.folder, root / "lib"):
        for path in sorted(base.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                content.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return "sha256:" + content.hexdigest()


class FakeEngine(Engine):
    """Builds nothing: an image's digest is a hash of its folder and lib/."""

    name = "fake"
    needs_local_base = False

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.built: list[str] = []
        self.smoked: list[str] = []
        self.images: dict[str, str] = {}

    def build(self, image, context, dockerfile, build_args) -> None:
        assert context == self.root and dockerfile == image.folder / "Dockerfile"
        assert build_args["VERSION"] == image.version
        self.built.append(image.name)
        self.images[image.local_ref] = _folder_digest(image, self.root)

    def exists(self, ref: str) -> bool:
        return ref in self.images

    def smoke(self, ref: str, fixture: Path, spec: SmokeSpec) -> SmokeResult:
        assert ref in self.images and (fixture / "calls.db").is_file()
        self.smoked.append(ref)
        return SmokeResult(0, "", {name: 1 for name in spec.outputs}, {})

    def push(self, ref: str, destination: str) -> str:
        return self.images[ref]

    def remove(self, ref: str) -> None:
        self.images.pop(ref, None)


def _builder(repo: Path) -> tuple[Builder, Engine]:
    if not REAL_BUILDAH:
        engine = FakeEngine(repo)
        return Builder(root=repo, engine=engine, base_image=None), engine
    engine = Buildah()
    began = time.perf_counter()
    base = make_base_image(engine, cache_dir)
    print(f"base image {base}: {time.perf_counter() - began:.1f}s")
    return Builder(root=repo, engine=engine, base_image=base), engine


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    """Engines a test used; the images they built are deleted afterwards."""
    used: list[Engine] = []
    yield used
    for engine in used:
        if isinstance(engine, Buildah):
            for name in IMAGES:
                version = _version(ROOT, name)
                for tag in (version, _next_patch(version)):
                    engine.remove(f"localhost/skit-pipelines/{name.replace('_', '-')}:{tag}")


def _changed(repo: Path) -> list[str]:
    return [image.name for image in layout.changed_images(repo)]


def _images(repo: Path, *names: str) -> list[Image]:
    return layout.select_images(repo, list(names))


def _version(repo: Path, name: str) -> str:
    return (repo / "images" / name / "VERSION").read_text().strip()


def _next_patch(version: str) -> str:
    major, minor, patch = version.split(".")
    return f"{major}.{minor}.{int(patch) + 1}"


def _bump(repo: Path, name: str, version: str) -> None:
    folder = repo / "images" / name
    old = (folder / "VERSION").read_text().strip()
    (folder / "VERSION").write_text(version + "\n")
    component = folder / "component.yaml"
    component.write_text(component.read_text().replace(f":{old}\n", f":{version}\n"))
    changelog = folder / "CHANGELOG.md"
    text = changelog.read_text()
    first = text.index("\n## ")
    entry = f"\n## {version} (2026-11-27)\n\n- Logs one more line.\n"
    changelog.write_text(text[:first] + entry + text[first:])


def _pinned_images(repo: Path, lock: Mapping) -> dict[str, str]:
    from skit_pipelines.catalog import compile_module

    pinned = {}
    for module in ("random_sample_calls", "invalidate_llm_situations"):
        spec = pin_images(compile_module(repo / "pipelines" / f"{module}.py"), lock)
        for executor in spec["deploymentSpec"]["executors"].values():
            pinned[module] = executor["container"]["image"]
    return pinned


def test_changing_one_component_releases_and_repins_only_that_image(
    clone, tmp_path, capsys, engines
):
    repo = clone
    lock_path = repo / "images" / "images.lock.json"
    fetch_version = _version(repo, "fetch_calls")
    situations_version = _version(repo, "invalidate_situations")
    bumped = _next_patch(fetch_version)
    registry = f"oci:{tmp_path / 'registry'}"
    builder, engine = _builder(repo)
    engines.append(engine)

    # Never released: both are changed, and releasing them tags both.
    assert _changed(repo) == list(IMAGES)
    _, problems = layout.check(repo)
    assert problems == {}
    outcomes = release(repo, _images(repo, *IMAGES), builder, registry, tag=True)
    assert [o.error for o in outcomes] == [None, None]
    first = load_lock(lock_path)
    assert set(first) == set(IMAGES)
    git(repo, "commit", "--quiet", "-am", "Release fetch_calls and invalidate_situations")
    assert _changed(repo) == []
    assert git(repo, "tag", "--list", "images/*").split() == [
        f"images/fetch_calls/v{fetch_version}",
        f"images/invalidate_situations/v{situations_version}",
    ]
    pinned_before = _pinned_images(repo, first)

    # Change one component: only it is reported changed, and it must be bumped.
    entrypoint = repo / "images" / "fetch_calls" / "fetch_calls.py"
    entrypoint.write_text(entrypoint.read_text() + "\n# A change to fetch_calls only.\n")
    assert _changed(repo) == ["fetch_calls"]  # uncommitted changes count
    git(repo, "commit", "--quiet", "-am", "Change fetch_calls")
    assert _changed(repo) == ["fetch_calls"]
    _, problems = layout.check(repo)
    assert list(problems) == ["fetch_calls"]
    assert any("bump it" in p for p in problems["fetch_calls"])
    assert cli.main(["--repo", str(repo), "check"]) == cli.EXIT_FAILURE

    _bump(repo, "fetch_calls", bumped)
    git(repo, "commit", "--quiet", "-am", f"fetch_calls {bumped}")
    assert layout.check(repo)[1] == {}

    # Release what changed: one build, one push, one new lock entry and tag.
    built_before = list(getattr(engine, "built", []))
    outcomes = release(repo, layout.changed_images(repo), builder, registry, tag=True)
    assert [(o.image.name, o.error) for o in outcomes] == [("fetch_calls", None)]
    if isinstance(engine, FakeEngine):
        assert engine.built == [*built_before, "fetch_calls"]
    second = load_lock(lock_path)
    assert second["fetch_calls"].version == bumped
    assert second["fetch_calls"].digest != first["fetch_calls"].digest
    assert second["fetch_calls"].image.endswith(f"skit-pipelines/fetch-calls:{bumped}")
    assert second["invalidate_situations"] == first["invalidate_situations"]
    diff = git(repo, "diff", "--unified=0", "--", "images/images.lock.json")
    assert "invalidate" not in diff and first["fetch_calls"].digest in diff
    assert f"images/fetch_calls/v{bumped}" in git(repo, "tag", "--list", "images/*").split()
    assert _changed(repo) == []

    # Compiled for Kubeflow: fetch_calls is re-pinned, the other image keeps its digest.
    pinned_after = _pinned_images(repo, second)
    assert pinned_after["random_sample_calls"].endswith(
        f"fetch-calls:{bumped}@{second['fetch_calls'].digest}"
    )
    assert pinned_after["random_sample_calls"] != pinned_before["random_sample_calls"]
    assert pinned_after["invalidate_llm_situations"] == pinned_before["invalidate_llm_situations"]
    assert pinned_after["invalidate_llm_situations"].endswith(first["invalidate_situations"].digest)

    with capsys.disabled():
        for outcome in outcomes:
            print(f"\n[{engine.name}] {outcome.summary()}")


def test_a_change_in_lib_changes_every_image(clone):
    for name in IMAGES:
        git(clone, "tag", f"images/{name}/v0.1.0")
    assert _changed(clone) == []
    (clone / "lib" / "skit_components" / "new_helper.py").write_text("VALUE = 1\n")
    assert _changed(clone) == list(IMAGES)  # untracked files count too
    changes = {c.image.name: c for c in layout.changes(clone)}
    assert changes["fetch_calls"].files == ("lib/skit_components/new_helper.py",)


def test_the_latest_release_tag_in_history_is_the_last_release(clone):
    git(clone, "tag", "images/fetch_calls/v0.0.9")
    git(clone, "tag", "images/fetch_calls/v0.1.0")
    git(clone, "tag", "images/fetch_calls/not-a-version")
    change = next(c for c in layout.changes(clone) if c.image.name == "fetch_calls")
    assert change.last_version == "0.1.0" and not change.changed


def test_a_release_tag_needs_committed_content(clone, tmp_path):
    (clone / "images" / "fetch_calls" / "README.md").write_text("edited\n")
    builder = Builder(root=clone, engine=FakeEngine(clone))
    with pytest.raises(ReleaseError, match="commit the changes of images/fetch_calls"):
        release(clone, _images(clone, "fetch_calls"), builder, f"oci:{tmp_path}", tag=True)


def test_changed_cli_lists_names_and_json(clone, capsys):
    git(clone, "tag", "images/invalidate_situations/v0.1.0")
    assert cli.main(["--repo", str(clone), "changed", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [entry["name"] for entry in listed] == ["fetch_calls"]
    assert listed[0]["last_release"] is None


def test_compile_cli_pins_from_the_lock(clone, tmp_path, capsys):
    out = tmp_path / "ir"
    module = str(clone / "pipelines" / "random_sample_calls.py")
    command = ["--repo", str(clone), "compile", "--pin", "--out", str(out), module]
    assert cli.main(command) == 1
    assert "never released" in capsys.readouterr().err
    (clone / "images" / "images.lock.json").write_text(
        json.dumps(
            {
                name: {
                    "version": _version(clone, name),
                    "image": f"reg.example/skit-pipelines/{name.replace('_', '-')}:"
                    + _version(clone, name),
                    "digest": "sha256:" + str(i) * 64,
                }
                for i, name in enumerate(IMAGES)
            }
        )
    )
    assert cli.main(command) == 0
    text = (out / "random-sample-calls.yaml").read_text()
    pinned = f"reg.example/skit-pipelines/fetch-calls:{_version(clone, 'fetch_calls')}"
    assert pinned + "@sha256:" + "0" * 64 in text


@pytest.mark.skipif(not REAL_BUILDAH, reason="SKIT_TEST_BUILDAH=1 builds real images")
def test_real_images_have_their_entrypoint_user_and_version(clone, engines):
    """With buildah: what the smoke run executes is the Dockerfile's ENTRYPOINT as non-root."""
    builder, engine = _builder(clone)
    engines.append(engine)
    assert isinstance(engine, Buildah)
    image = _images(clone, "invalidate_situations")[0]
    builder.build(image, Outcome(image))
    config: ImageConfig = engine.config(image.local_ref)
    assert config.entrypoint == ("python3", "-m", "invalidate_situations")
    assert config.user not in ("", "0", "root")


def test_ci_builds_the_changed_images_or_else_the_least_recently_released(clone):
    assert [i.name for i in ci_images(layout.changes(clone))] == list(IMAGES)
    git(clone, "tag", "images/invalidate_situations/v0.1.0")
    assert [i.name for i in ci_images(layout.changes(clone))] == ["fetch_calls"]
    subprocess.run(
        ["git", "-C", str(clone), "commit", "--quiet", "--allow-empty", "-m", "later"],
        env={**os.environ, **GIT_ENV, "GIT_COMMITTER_DATE": "2030-01-01T00:00:00Z"},
        check=True,
    )
    git(clone, "tag", "images/fetch_calls/v0.1.0")
    assert [i.name for i in ci_images(layout.changes(clone))] == ["invalidate_situations"]


def test_ci_skips_images_whose_inputs_passed_a_ci_build_here(clone, tmp_path):
    passes = CiPasses(tmp_path / "passed", clone, "localhost/skit-pipelines-base:w1")
    fetch, situations = _images(clone, *IMAGES)
    assert ci_to_build([fetch, situations], passes) == ([fetch, situations], [])

    passes.record(fetch)
    passes.record(situations)
    # Nothing new: still one image, so every CI run builds and smoke-runs something.
    assert ci_to_build([fetch, situations], passes) == ([fetch], [situations])
    assert ci_to_build([situations, fetch], passes) == ([situations], [fetch])

    readme = clone / "images" / "fetch_calls" / "README.md"
    readme.write_text(readme.read_text() + "\nedited\n")
    assert ci_to_build([situations, fetch], passes) == ([fetch], [situations])  # uncommitted
    git(clone, "commit", "--quiet", "-am", "fetch_calls: README")
    assert ci_to_build([situations, fetch], passes) == ([fetch], [situations])  # committed

    (clone / "lib" / "skit_components" / "extra.py").write_text("VALUE = 1\n")
    git(clone, "add", "lib")
    git(clone, "commit", "--quiet", "-m", "lib: extra")
    assert ci_to_build([fetch, situations], passes)[0] == [fetch, situations]

    passes.record(fetch)
    passes.record(situations)
    renewed = CiPasses(tmp_path / "passed", clone, "localhost/skit-pipelines-base:w2")
    assert ci_to_build([fetch, situations], renewed)[0] == [fetch, situations]  # new base
