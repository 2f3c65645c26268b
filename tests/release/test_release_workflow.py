"""The release workflow's steps (.github/workflows/release.yml), run here.

A tag names one release; `skit-release tag-check` refuses a bad tag or a checkout that is
not that release; the image is built and smoke-run, `skit-release push` pushes it to a
throwaway OCI registry in tmp_path, and `skit-release lock-set` records the digest the
way the workflow's pull request does. With the fake engine by default (seconds); with
SKIT_TEST_BUILDAH=1 real images, built twice from the same source to show the build is
reproducible (same image id, same pushed digest), with the times printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from skit_pipelines.imagelock import LockEntry, load_lock, pin_images
from skit_release import cli
from skit_release.base_image import DEFAULT_CACHE_DIR, make_base_image
from skit_release.builder import Builder, Outcome
from skit_release.engines import Buildah, Engine
from skit_release.forge import parse_tag, push_tagged, set_lock_entry, tag_problems
from skit_release.git import ReleaseError
from skit_release.layout import select_images
from skit_release.smoke import SmokeResult, SmokeSpec
from skit_testing.git import git

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "fetch_calls"
REAL_BUILDAH = os.environ.get("SKIT_TEST_BUILDAH") == "1"
pytestmark = [
    pytest.mark.xdist_group("buildah"),  # one worker: real builds share storage
    pytest.mark.timeout(900 if REAL_BUILDAH else 120),
]
cache_dir = Path(os.environ.get("SKIT_CACHE_DIR", DEFAULT_CACHE_DIR))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A clone whose images/ is fetch_calls as in the working tree, and whose deploy/
    and pyproject.toml are the working tree's, committed."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(repo)], check=True)
    for folder in (repo / "images").iterdir():
        if folder.is_dir() and folder.name != IMAGE:
            shutil.rmtree(folder)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for relative in (f"images/{IMAGE}", "lib"):
        shutil.rmtree(repo / relative, ignore_errors=True)
        shutil.copytree(ROOT / relative, repo / relative, ignore=ignore)
    for relative in ("deploy/CHANGELOG.md", "pyproject.toml", "images/BUILD.bazel"):
        shutil.copy2(ROOT / relative, repo / relative)
    (repo / "images" / "images.lock.json").write_text("{}\n")
    git(repo, "add", "-A", "images", "lib", "deploy", "pyproject.toml")
    git(repo, "commit", "--quiet", "--allow-empty", "-m", "snapshot of the working tree")
    return repo


def _version(repo: Path) -> str:
    return (repo / "images" / IMAGE / "VERSION").read_text().strip()


# Tags.


@pytest.mark.parametrize(
    ("ref", "kind", "name", "version"),
    [
        ("images/fetch_calls/v0.1.1", "image", "fetch_calls", "0.1.1"),
        ("refs/tags/images/train_slu/v2.0.0-rc.1", "image", "train_slu", "2.0.0-rc.1"),
        ("service/v1.4.0", "service", "server", "1.4.0"),
        ("refs/tags/service/v0.1.0", "service", "server", "0.1.0"),
    ],
)
def test_release_tags_name_what_they_release(ref, kind, name, version):
    tag = parse_tag(ref)
    assert (tag.kind, tag.name, tag.version) == (kind, name, version)
    assert tag.tag == ref.removeprefix("refs/tags/")


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("images/fetch_calls/0.1.1", "needs a leading v (images/fetch_calls/v0.1.1)"),
        ("images/fetch_calls/v0.1", "'0.1' is not a semantic version"),
        ("images/fetch_calls/v01.1.0", "is not a semantic version"),
        ("images/Fetch-Calls/v0.1.0", "is not an image folder name"),
        ("images/fetch_calls", "is not a release tag: expected images/<name>/v"),
        ("service/1.0.0", "needs a leading v (service/v1.0.0)"),
        ("v1.0.0", "is not a release tag"),
        ("refs/heads/main", "is not a tag"),
    ],
)
def test_bad_tags_are_refused_saying_why(ref, says):
    with pytest.raises(ReleaseError) as raised:
        parse_tag(ref)
    assert says in str(raised.value)


def test_tag_check_accepts_the_release_and_writes_step_outputs(repo, tmp_path, capsys):
    version = _version(repo)
    outputs = tmp_path / "github-output"
    tag = f"images/{IMAGE}/v{version}"
    command = ["--repo", str(repo), "tag-check", tag, "--outputs", str(outputs)]
    assert cli.main(command) == cli.EXIT_OK
    assert outputs.read_text() == f"kind=image\nname={IMAGE}\nversion={version}\n"
    assert "VERSION and CHANGELOG agree" in capsys.readouterr().out


def test_tag_check_refuses_a_checkout_that_is_not_the_release(repo, capsys):
    version = _version(repo)
    major, minor, patch = version.split(".")
    other = f"{major}.{minor}.{int(patch) + 1}"
    assert cli.main(["--repo", str(repo), "tag-check", f"images/{IMAGE}/v{other}"]) == 1
    errors = capsys.readouterr().err
    assert f"images/{IMAGE}/VERSION is {version}, not {other}" in errors
    assert f"images/{IMAGE}/CHANGELOG.md has no `## {other}` entry" in errors
    assert f"component.yaml names tag {version}, not {other}" in errors
    assert cli.main(["--repo", str(repo), "tag-check", "images/no_such_image/v1.0.0"]) == 1
    assert "there is no image folder images/no_such_image" in capsys.readouterr().err
    assert cli.main(["--repo", str(repo), "tag-check", f"images/{IMAGE}/{version}"]) == 1
    assert "needs a leading v" in capsys.readouterr().err


def test_tag_check_of_the_service_reads_pyproject_and_deploy_changelog(repo):
    version = _service_version(repo)
    assert tag_problems(repo, parse_tag(f"service/v{version}")) == []
    problems = tag_problems(repo, parse_tag("service/v99.0.0"))
    assert problems == [
        f"service/v99.0.0: pyproject.toml's version is {version}, not 99.0.0: "
        "tag the commit that bumps it",
        "deploy/CHANGELOG.md has no `## 99.0.0` entry",
    ]


def _service_version(repo: Path) -> str:
    import tomllib

    return str(tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"])


# The lock.


def test_lock_set_records_a_digest_and_refuses_going_back(repo, capsys):
    lock = repo / "images" / "images.lock.json"
    digest = "sha256:" + "a" * 64
    base = ["--repo", str(repo), "lock-set", IMAGE]
    image = "123.dkr.ecr.ap-south-1.amazonaws.com/ml/skit-pipelines/fetch-calls"
    assert (
        cli.main([*base, "--version", "0.2.0", "--image", f"{image}:0.2.0", "--digest", digest])
        == 0
    )
    assert load_lock(lock)[IMAGE] == LockEntry("0.2.0", f"{image}:0.2.0", digest)
    older = [*base, "--version", "0.1.9", "--image", f"{image}:0.1.9", "--digest", digest]
    assert cli.main(older) == 1
    assert "already records fetch_calls 0.2.0, newer than 0.1.9" in capsys.readouterr().err
    bad = [*base, "--version", "0.2.1", "--image", f"{image}:0.2.1", "--digest", "sha256:xyz"]
    assert cli.main(bad) == 1
    assert "is not a sha256 digest" in capsys.readouterr().err
    with pytest.raises(ReleaseError, match="no image folder images/nope"):
        set_lock_entry(repo, lock, "nope", LockEntry("1.0.0", "x:1.0.0", digest))
    assert list(load_lock(lock)) == [IMAGE]


# The release job, end to end.


class FakeEngine(Engine):
    """Builds nothing: an image's id and digest are a hash of its folder and lib/."""

    name = "fake"
    needs_local_base = False

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.images: dict[str, str] = {}

    def build(self, image, context, dockerfile, build_args) -> None:
        content = hashlib.sha256()
        for base in (image.folder, self.root / "lib"):
            for path in sorted(base.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    content.update(str(path.relative_to(self.root)).encode() + path.read_bytes())
        self.images[image.local_ref] = "sha256:" + content.hexdigest()

    def exists(self, ref: str) -> bool:
        return ref in self.images

    def smoke(self, ref: str, fixture: Path, spec: SmokeSpec) -> SmokeResult:
        assert (fixture / "calls.db").is_file()
        return SmokeResult(0, "", {name: 1 for name in spec.outputs}, {})

    def push(self, ref: str, destination: str) -> str:
        return self.images[ref]

    def remove(self, ref: str) -> None:
        self.images.pop(ref, None)


def _builder(repo: Path) -> Builder:
    if not REAL_BUILDAH:
        return Builder(root=repo, engine=FakeEngine(repo))
    engine = Buildah()
    return Builder(root=repo, engine=engine, base_image=make_base_image(engine, cache_dir))


def _image_id(engine: Engine, ref: str) -> str | None:
    if isinstance(engine, Buildah):
        return engine.image_id(ref)
    assert isinstance(engine, FakeEngine)
    return engine.images[ref]


def test_the_release_job_checks_builds_pushes_and_pins(repo, tmp_path, capsys):
    """tag-check, build + smoke, push, lock-set: the job's steps in order, against an OCI
    registry in tmp_path. With real buildah the image is then built again from scratch and
    pushed to a second registry: the same id and digest (reproducible builds)."""
    version = _version(repo)
    tag = f"images/{IMAGE}/v{version}"
    git(repo, "tag", tag)
    outputs = tmp_path / "github-output"
    assert cli.main(["--repo", str(repo), "tag-check", tag, "--outputs", str(outputs)]) == 0
    step = dict(line.split("=", 1) for line in outputs.read_text().splitlines())

    builder = _builder(repo)
    image = select_images(repo, [step["name"]])[0]
    try:
        outcome = Outcome(image)
        builder.build(image, outcome)
        first_id = _image_id(builder.engine, image.local_ref)
        builder.smoke(image, outcome)
        entry = push_tagged(repo, parse_tag(tag), builder.engine, f"oci:{tmp_path / 'registry'}")
        assert entry.image.endswith(f"/skit-pipelines/fetch-calls:{version}")
        assert entry.digest.startswith("sha256:") and len(entry.digest) == 71

        lock_set = ["lock-set", IMAGE, "--version", entry.version, "--image", entry.image]
        assert cli.main(["--repo", str(repo), *lock_set, "--digest", entry.digest]) == 0
        lock = load_lock(repo / "images" / "images.lock.json")
        assert lock == {IMAGE: entry}
        from skit_pipelines.catalog import compile_module

        spec = pin_images(compile_module(repo / "pipelines" / "random_sample_calls.py"), lock)
        images = [e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()]
        assert images == [f"{entry.image}@{entry.digest}"]

        if REAL_BUILDAH:
            builder.engine.remove(image.local_ref)
            began = time.perf_counter()
            builder.build(image, Outcome(image))
            rebuilt = time.perf_counter() - began
            again = push_tagged(repo, parse_tag(tag), builder.engine, f"oci:{tmp_path / 'again'}")
            assert _image_id(builder.engine, image.local_ref) == first_id
            assert again.digest == entry.digest
            with capsys.disabled():
                print(
                    f"\n[buildah] {outcome.summary()}; rebuilt from scratch in {rebuilt:.1f}s: "
                    f"same id {first_id[:12]}, same digest"
                )
    finally:
        builder.engine.remove(image.local_ref)


def test_push_refuses_an_image_not_built_here(repo, tmp_path):
    tag = parse_tag(f"images/{IMAGE}/v{_version(repo)}")
    with pytest.raises(ReleaseError, match="is not built here"):
        push_tagged(repo, tag, FakeEngine(repo), f"oci:{tmp_path}")


def test_the_changed_images_are_what_release_changed_tags(repo, capsys):
    """release-changed.yml tags `images/<name>/v<version>` for each entry of `changed
    --json`; each such tag passes tag-check."""
    assert cli.main(["--repo", str(repo), "changed", "--json"]) == 0
    changed = json.loads(capsys.readouterr().out)
    tags = [f"images/{c['name']}/v{c['version']}" for c in changed]
    assert tags == [f"images/{IMAGE}/v{_version(repo)}"]
    for tag in tags:
        assert tag_problems(repo, parse_tag(tag)) == []
