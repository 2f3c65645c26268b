"""The pieces of skit-release: versions, checks, smoke definitions, registries, pinning."""

from __future__ import annotations

from pathlib import Path

import pytest

from skit_pipelines.imagelock import (
    ImageLockError,
    LockEntry,
    dump_lock,
    load_lock,
    pin_images,
    save_lock,
)
from skit_pipelines.images import folder_name_for_image
from skit_release.base_image import apt_mirror, base_image_ref
from skit_release.builder import push_destination
from skit_release.git import ReleaseError, is_semver, semver_key
from skit_release.layout import Change, Image, image_folders, layout_problems, release_problems
from skit_release.smoke import load_smoke, make_fixture

ROOT = Path(__file__).resolve().parents[2]
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def test_semver_precedence():
    ordered = [
        "0.1.0-alpha",
        "0.1.0-alpha.1",
        "0.1.0-beta",
        "0.1.0-rc.1",
        "0.1.0",
        "0.1.1",
        "0.2.0",
    ]
    assert sorted(ordered[::-1], key=semver_key) == ordered
    assert semver_key("1.10.0") > semver_key("1.9.3")
    for bad in ("1.0", "v1.0.0", "01.0.0", "1.0.0-", ""):
        assert not is_semver(bad)


def test_every_image_folder_is_complete():
    """Every images/<name>/ has a BUILD.bazel calling component_image(), a smoke.yaml, and
    what a release needs; `skit-release check` prints how to fix what is missing."""
    problems = [p for image in image_folders(ROOT) for p in layout_problems(image)]
    assert not problems, "\n".join(problems)


def _folder(tmp_path: Path, version: str = "0.2.0", tag: str = "0.2.0") -> Image:
    folder = tmp_path / "images" / "thing"
    folder.mkdir(parents=True)
    (folder / "VERSION").write_text(version + "\n")
    (folder / "CHANGELOG.md").write_text("# Changelog\n\n## 0.2.0 (2026-11-26)\n\n- Better.\n")
    (folder / "component.yaml").write_text(
        f"name: Thing\nimplementation:\n  container:\n    image: skit-pipelines/thing:{tag}\n"
        "    command: [python3, -m, thing]\n"
    )
    (folder / "Dockerfile").write_text(
        'ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}\nENTRYPOINT ["python3"]\n'
    )
    (folder / "BUILD.bazel").write_text(
        'load("//bazel:defs.bzl", "component_image")\n\ncomponent_image()\n'
    )
    (folder / "smoke.yaml").write_text("args: [--x]\noutputs: [x.txt]\n")
    return Image(name="thing", folder=folder, version=version)


def test_a_complete_bumped_folder_has_no_problems(tmp_path):
    image = _folder(tmp_path)
    assert layout_problems(image) == []
    assert release_problems(Change(image, "0.1.0", ("images/thing/thing.py",))) == []


def test_a_changed_image_must_bump_version_and_changelog_and_component_tag(tmp_path):
    image = _folder(tmp_path, version="0.1.0", tag="0.0.9")
    problems = release_problems(Change(image, "0.1.0", ("images/thing/thing.py",)))
    assert any("bump it" in p for p in problems)
    assert any("CHANGELOG.md has no `## 0.1.0`" in p for p in problems)
    assert any("component.yaml names tag 0.0.9 but VERSION is 0.1.0" in p for p in problems)


def test_layout_problems_say_how_to_fix_them(tmp_path):
    image = _folder(tmp_path)
    (image.folder / "BUILD.bazel").unlink()
    (image.folder / "smoke.yaml").unlink()
    (image.folder / "Dockerfile").write_text("FROM python:3.11-slim\n")
    problems = "\n".join(layout_problems(image))
    assert "component_image()" in problems and "BUILD.bazel" in problems
    assert "smoke.yaml is missing" in problems and "images/fetch_calls/smoke.yaml" in problems
    assert "ARG BASE_IMAGE" in problems


def test_smoke_definitions_of_the_repo_load():
    for name in ("fetch_calls", "invalidate_situations", "fetch_tagged_dataset"):
        spec = load_smoke(ROOT / "images" / name)
        assert spec.args and spec.outputs and spec.demo_data is not None


def test_bad_smoke_definitions_are_refused(tmp_path):
    image = _folder(tmp_path)
    (image.folder / "smoke.yaml").write_text("args: [--x]\n")
    with pytest.raises(ReleaseError, match="outputs"):
        load_smoke(image.folder)
    (image.folder / "smoke.yaml").write_text(
        "args: [--x]\noutputs: [a]\nfixture: {files: {a: nope}}\n"
    )
    with pytest.raises(ReleaseError, match="nope does not exist"):
        load_smoke(image.folder)


def test_smoke_fixture_has_the_demo_databases_and_files(tmp_path):
    image = _folder(tmp_path)
    (image.folder / "input.csv").write_text("a,b\n1,2\n")
    (image.folder / "smoke.yaml").write_text(
        "args: []\noutputs: [x]\n"
        "fixture: {demo_data: {calls: 5, seed: 2}, files: {in/x.csv: input.csv},"
        ' text: {t.csv: "a\\n1\\n"}}\n'
    )
    target = tmp_path / "smoke"
    make_fixture(image.folder, load_smoke(image.folder), target)
    assert (target / "calls.db").stat().st_size > 0
    assert (target / "metrics.db").stat().st_size > 0
    assert (target / "in" / "x.csv").read_text() == "a,b\n1,2\n"
    assert (target / "t.csv").read_text() == "a\n1\n"
    assert (target / "out").is_dir()


@pytest.mark.parametrize(
    ("registry", "destination", "reference"),
    [
        (
            "registry.example.com/ml",
            "docker://registry.example.com/ml/skit-pipelines/fetch-calls:1.2.3",
            "registry.example.com/ml/skit-pipelines/fetch-calls:1.2.3",
        ),
        (
            "docker://registry.example.com",
            "docker://registry.example.com/skit-pipelines/fetch-calls:1.2.3",
            "registry.example.com/skit-pipelines/fetch-calls:1.2.3",
        ),
    ],
)
def test_registry_destinations(registry, destination, reference):
    image = Image("fetch_calls", Path("images/fetch_calls"), "1.2.3")
    assert push_destination(registry, image) == (destination, reference)


@pytest.mark.parametrize("transport", ["oci:", "oci-archive:", "dir:"])
def test_local_transport_references_still_name_the_image_folder(tmp_path, transport):
    image = Image("fetch_calls", Path("images/fetch_calls"), "1.2.3")
    destination, reference = push_destination(f"{transport}{tmp_path}", image)
    assert destination == reference and destination.startswith(transport + str(tmp_path))
    assert folder_name_for_image(reference) == "fetch_calls"
    assert folder_name_for_image(f"{reference}@{DIGEST_A}") == "fetch_calls"


def _spec(*images: str) -> dict:
    return {
        "pipelineInfo": {"name": "p"},
        "deploymentSpec": {
            "executors": {
                f"exec-{i}": {"container": {"image": image, "command": ["python3"]}}
                for i, image in enumerate(images)
            }
        },
    }


def test_pin_images_pins_every_executor_by_digest_and_keeps_the_spec():
    lock = {
        "fetch_calls": LockEntry("0.1.1", "reg.example/skit-pipelines/fetch-calls:0.1.1", DIGEST_A),
        "invalidate_situations": LockEntry(
            "0.1.0", "reg.example/skit-pipelines/invalidate-situations:0.1.0", DIGEST_B
        ),
    }
    spec = _spec("skit-pipelines/fetch-calls:0.1.1", "skit-pipelines/invalidate-situations:0.1.0")
    pinned = pin_images(spec, lock)
    executors = pinned["deploymentSpec"]["executors"]
    assert executors["exec-0"]["container"]["image"] == (
        f"reg.example/skit-pipelines/fetch-calls:0.1.1@{DIGEST_A}"
    )
    assert executors["exec-1"]["container"]["image"].endswith(f"@{DIGEST_B}")
    assert spec["deploymentSpec"]["executors"]["exec-0"]["container"]["image"] == (
        "skit-pipelines/fetch-calls:0.1.1"
    )
    # The local executor still finds the folder behind a pinned reference.
    assert folder_name_for_image(executors["exec-0"]["container"]["image"]) == "fetch_calls"


def test_pin_images_refuses_unreleased_images_and_other_versions():
    lock = {"fetch_calls": LockEntry("0.1.0", "r/skit-pipelines/fetch-calls:0.1.0", DIGEST_A)}
    with pytest.raises(ImageLockError, match="never released"):
        pin_images(_spec("skit-pipelines/invalidate-situations:0.1.0"), lock)
    with pytest.raises(ImageLockError, match=r"wants 0\.2\.0 but the lock has fetch_calls 0\.1\.0"):
        pin_images(_spec("skit-pipelines/fetch-calls:0.2.0"), lock)
    # The error names every image to release, once and sorted, for the Kubeflow backend.
    with pytest.raises(ImageLockError) as refused:
        pin_images(
            _spec(
                "skit-pipelines/invalidate-situations:0.1.0",
                "skit-pipelines/fetch-calls:0.2.0",
                "skit-pipelines/invalidate-situations:0.1.0",
            ),
            lock,
        )
    assert refused.value.unreleased == ("fetch_calls", "invalidate_situations")


def test_lock_file_round_trip(tmp_path):
    path = tmp_path / "images.lock.json"
    assert load_lock(path) == {}
    lock = {
        "b": LockEntry("1.0.0", "r/skit-pipelines/b:1.0.0", DIGEST_B),
        "a": LockEntry("0.1.0", "r/skit-pipelines/a:0.1.0", DIGEST_A),
    }
    save_lock(path, lock)
    assert load_lock(path) == lock
    assert path.read_text() == dump_lock(lock)
    assert path.read_text().index('"a"') < path.read_text().index('"b"')
    path.write_text('{"a": {"version": "1", "image": "x", "digest": "md5:1"}}')
    with pytest.raises(ImageLockError, match="not a sha256 digest"):
        load_lock(path)


def test_the_committed_lock_is_valid():
    load_lock(ROOT / "images" / "images.lock.json")


def test_apt_mirror_is_a_url():
    assert apt_mirror().startswith(("http://", "https://", "file:"))


def test_base_image_name_changes_weekly():
    import datetime

    monday = base_image_ref(today=datetime.date(2026, 11, 23))
    sunday = base_image_ref(today=datetime.date(2026, 11, 29))
    next_monday = base_image_ref(today=datetime.date(2026, 11, 30))
    assert monday == sunday != next_monday
    assert monday.startswith("localhost/skit-pipelines-base:bookworm-2026w48-")


def test_an_image_folder_must_be_listed_in_images_build(tmp_path):
    image = _folder(tmp_path)
    (tmp_path / "images" / "BUILD.bazel").write_text('IMAGES = [\n    "other",\n]\n')
    assert layout_problems(image) == ['images/thing: add "thing", to IMAGES in images/BUILD.bazel']
    (tmp_path / "images" / "BUILD.bazel").write_text('IMAGES = [\n    "other",\n    "thing",\n]\n')
    assert layout_problems(image) == []
