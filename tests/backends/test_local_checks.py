"""CreateRun's checks for the local executor: importer URIs it can know, through
sub-pipelines, and packages_to_install."""

# No `from __future__ import annotations`: kfp reads component signatures' real types.

import os
from pathlib import Path

import pytest
import yaml
from kfp import compiler, dsl

from skit_pipelines.artifact_imports import ImportPolicy
from skit_pipelines.backends.local_checks import LocalRunChecks
from skit_pipelines.catalog import pipeline_from_spec
from skit_pipelines.config import ServerConfig
from skit_pipelines.domain import Pipeline
from skit_pipelines.errors import FailedPrecondition, InvalidArgument
from skit_pipelines.server import import_policy
from skit_pipelines_cli.parser import build_parser

ROOT = Path("/srv/data")
POLICY = ImportPolicy(roots=(ROOT,))


@dsl.component(base_image="python:3.11")
def name_of(value: str) -> str:
    return value


@dsl.pipeline(name="inner")
def inner(uri: str):
    dsl.importer(artifact_uri=uri, artifact_class=dsl.Dataset)


@dsl.pipeline(name="nested-imports")
def nested(top: str, deep: str = "file:///srv/data/default.csv", names: list = []):  # noqa: B006
    dsl.importer(artifact_uri=top, artifact_class=dsl.Dataset)
    with dsl.If(top != ""):
        inner(uri=deep)
    with dsl.ParallelFor(names) as item:
        inner(uri=item)  # a loop item: known only when the importer runs
    computed = name_of(value=top)
    inner(uri=computed.output)  # a step's output: likewise
    inner(uri=f"file:///elsewhere/{top}")  # an f-string: likewise


def compile_pipeline(pipeline, tmp_path: Path) -> Pipeline:
    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    return pipeline_from_spec(yaml.safe_load(path.read_text()))


def test_uris_from_parameters_are_checked_through_sub_pipelines(tmp_path: Path) -> None:
    pipeline = compile_pipeline(nested, tmp_path)
    checks = LocalRunChecks(POLICY)
    inside = {"top": "file:///srv/data/a.csv", "deep": "file:///srv/data/b.csv", "names": ["x"]}

    checks.check(pipeline, inside)
    with pytest.raises(InvalidArgument) as refused:
        checks.check(pipeline, {**inside, "top": "file:///etc/a", "deep": "file:///etc/b"})

    assert refused.value.reason == "IMPORT_NOT_ALLOWED"
    assert sorted(v.field for v in refused.value.violations) == [
        "run.parameters.deep",
        "run.parameters.top",
    ]
    assert all("is outside the import roots" in v.description for v in refused.value.violations)
    # Without parameters (the start-up check), only constants count.
    checks.check(pipeline, None)


@dsl.pipeline(name="constant-import")
def constant():
    inner(uri="file:///etc/shadow")


def test_a_constant_uri_refuses_the_pipeline(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition) as refused:
        LocalRunChecks(POLICY).check(compile_pipeline(constant, tmp_path), {})

    assert refused.value.reason == "IMPORT_NOT_ALLOWED"
    assert "file:///etc/shadow is outside the import roots" in refused.value.message


@dsl.component(base_image="python:3.11", packages_to_install=["PyYAML", "no-such-pkg-xyz<1"])
def needs(x: int) -> int:
    return x


@dsl.pipeline(name="needs-packages")
def needs_packages():
    needs(x=1)


def test_packages_not_installed_refuse_the_pipeline_naming_them(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition) as refused:
        LocalRunChecks(POLICY).check(compile_pipeline(needs_packages, tmp_path), {})

    assert refused.value.reason == "PACKAGES_NOT_INSTALLED"
    assert "needs needs no-such-pkg-xyz<1 (not installed)" in refused.value.message
    assert "PyYAML" not in refused.value.message


def test_import_roots_come_from_the_environment_or_serve_flags(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    config = ServerConfig.from_env(
        {"SKIT_IMPORT_ROOTS": f"{a}{os.pathsep}{b}", "SKIT_HOME": str(tmp_path / "home")}
    )
    policy = import_policy(config)
    on_s3 = import_policy(config.with_overrides(artifacts_url="s3://bucket/prefix"))
    args = build_parser({}).parse_args(["serve", "--import-root", str(a), "--import-root", "b"])

    assert policy.roots == (a.resolve(), b.resolve())
    assert policy.artifacts_root == config.artifacts_root and not policy.artifacts_url
    assert (on_s3.artifacts_root, on_s3.artifacts_url) == (None, "s3://bucket/prefix")
    assert args.import_roots == [a, Path("b")]
    assert ServerConfig.from_env({}).import_roots == ()
