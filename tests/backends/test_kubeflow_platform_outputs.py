"""The uploaded platform spec (secrets for steps) and outputs/logs found in the artifact
store, for runs on Kubeflow."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from skit_pipelines.backends.kubeflow_outputs import (
    ARGO_KEY_FORMAT,
    FileBlobs,
    KeyFormatError,
    check_key_format,
    collect,
    log_uri,
    task_prefix,
)
from skit_pipelines.backends.kubeflow_platform import (
    SECRETS_NOT_MAPPED,
    SecretMappingError,
    SecretRef,
    declared_env,
    format_step_secrets,
    parse_step_secrets,
    platform_spec,
)
from skit_pipelines.backends.kubeflow_tasks import IrShape, IrTask, MappedStep, RunTasks
from skit_pipelines.domain import Pipeline, Step, StepState
from skit_pipelines.errors import FailedPrecondition
from skit_testing.kfp import KFP_ARCHIVE_KEY_FORMAT


def test_the_mapping_reads_env_secret_and_key() -> None:
    text = "CALLS_DB_URL=calls-db/url, LLM_API_KEY=llm/api-key\nX=s.x/k_1"
    mapping = parse_step_secrets(text)
    assert mapping == {
        "CALLS_DB_URL": SecretRef("calls-db", "url"),
        "LLM_API_KEY": SecretRef("llm", "api-key"),
        "X": SecretRef("s.x", "k_1"),
    }
    assert parse_step_secrets(format_step_secrets(mapping)) == mapping
    assert parse_step_secrets("") == {}


@pytest.mark.parametrize("bad", ["CALLS_DB_URL", "CALLS_DB_URL=calls-db", "1X=a/b", "X=Bad/k"])
def test_a_bad_mapping_entry_is_named(bad: str) -> None:
    with pytest.raises(SecretMappingError, match=bad.split("=")[0]):
        parse_step_secrets(f"OK=a/b,{bad}")


def test_declared_env_becomes_secret_references_never_values(typed_pipeline: Pipeline) -> None:
    declared = declared_env(typed_pipeline.spec, lambda image: ("CALLS_DB_URL", "LLM_API_KEY"))
    assert declared == {"exec-echo": ("CALLS_DB_URL", "LLM_API_KEY")}
    secrets = parse_step_secrets("CALLS_DB_URL=calls-db/url,LLM_API_KEY=llm/key,OTHER=o/k")
    platform = platform_spec("pipelines/typed", declared, secrets)

    assert platform is not None
    [entry_calls, entry_llm] = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][
        "exec-echo"
    ]["secretAsEnv"]
    assert entry_calls["secretName"] == "calls-db"
    assert entry_calls["keyToEnv"] == [{"secretKey": "url", "envVar": "CALLS_DB_URL"}]
    assert entry_llm["secretNameParameter"] == {"runtimeValue": {"constant": "llm"}}
    # What KFP's v2_template.go unmarshals (protojson into PlatformSpec) accepts it.
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    # The same document kfp-kubernetes writes for use_secret_as_env.
    from kfp.kubernetes import kubernetes_executor_config_pb2 as pb

    json_format.ParseDict(
        platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-echo"],
        pb.KubernetesExecutorConfig(),
    )


def test_an_unmapped_variable_refuses_the_pipeline_naming_it(typed_pipeline: Pipeline) -> None:
    declared = {"exec-echo": ("CALLS_DB_URL", "LLM_API_KEY")}
    with pytest.raises(FailedPrecondition) as refused:
        platform_spec("pipelines/typed", declared, parse_step_secrets("CALLS_DB_URL=c/u"))
    assert refused.value.reason == SECRETS_NOT_MAPPED
    assert "LLM_API_KEY" in refused.value.message
    assert "CALLS_DB_URL," not in refused.value.message
    assert platform_spec("pipelines/typed", {}, {}) is None


def _shape(spec: dict[str, Any]) -> IrShape:
    return IrShape.of(spec)


def test_outputs_are_found_under_the_pipeline_root(
    typed_pipeline: Pipeline, tmp_path: Path
) -> None:
    root = tmp_path.as_uri()
    shape = _shape(dict(typed_pipeline.spec))
    prefix = task_prefix(root, shape.pipeline_name, "kfp-run-1", "echo")
    produced = Path(prefix.removeprefix("file://")) / "0b7c-salt" / "out"
    produced.parent.mkdir(parents=True)
    produced.write_text("hi")
    task = shape.tasks()["echo"]
    step = Step(name="echo", component="echo", image=task.image, state=StepState.SUCCEEDED)
    tasks = RunTasks("wf", (MappedStep(step, task),))

    found = collect(FileBlobs(), root, "kfp-run-1", shape, tasks)

    [artifact] = found.artifacts["echo"]
    assert (artifact.name, artifact.uri, artifact.size_bytes) == ("out", produced.as_uri(), 2)
    assert artifact.uri.startswith(f"{root}/typed/kfp-run-1/echo/")
    assert found.run_outputs == (artifact,)
    assert found.run_parameters == {}
    assert found.step(tasks.steps[0]).output_artifacts == (artifact,)


def test_loop_iterations_and_unfinished_steps_report_no_artifacts(tmp_path: Path) -> None:
    task = IrTask(key="count", name="count", component="count", image="i", artifacts=("n",))
    steps = (
        MappedStep(Step(name="for-loop-2[0]/count", state=StepState.SUCCEEDED), task),
        MappedStep(Step(name="count", state=StepState.FAILED), task),
    )
    found = collect(FileBlobs(), tmp_path.as_uri(), "r", IrShape.of({}), RunTasks("wf", steps))
    assert found.artifacts == {}


def test_logs_are_where_argo_archives_them() -> None:
    created = datetime(2025, 3, 4, 23, 59, tzinfo=UTC)
    pod = "wf-abc-system-container-impl-1"
    where = {"workflow": "wf-abc", "namespace": "kubeflow", "pod": pod, "created": created}
    # Argo's DefaultArchivePattern.
    assert log_uri("s3://mlpipeline", ARGO_KEY_FORMAT, **where) == (
        f"s3://mlpipeline/wf-abc/{pod}/main.log"
    )
    # KFP's manifests.
    assert log_uri("s3://mlpipeline/", KFP_ARCHIVE_KEY_FORMAT, **where) == (
        f"s3://mlpipeline/private-artifacts/kubeflow/wf-abc/2025/03/04/{pod}/main.log"
    )
    with pytest.raises(KeyFormatError, match=r"workflow\.uid"):
        check_key_format("{{workflow.uid}}/{{pod.name}}")


def test_upload_package_is_what_kfp_reads(typed_pipeline: Pipeline, tmp_path: Path) -> None:
    platform = platform_spec(
        "pipelines/typed", {"exec-echo": ("CALLS_DB_URL",)}, parse_step_secrets("CALLS_DB_URL=c/u")
    )
    package = tmp_path / "typed.yaml"
    package.write_text(yaml.safe_dump_all([dict(typed_pipeline.spec), platform], sort_keys=False))
    spec_doc, platform_doc = yaml.safe_load_all(package.read_text())
    json_format.ParseDict(spec_doc, pipeline_spec_pb2.PipelineSpec())
    json_format.ParseDict(platform_doc, pipeline_spec_pb2.PlatformSpec())
    assert "CALLS_DB_URL" in package.read_text() and "c/u" not in package.read_text()


def test_the_log_archive_is_configured_by_env_and_flag(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from skit_pipelines.config import ServerConfig
    from skit_pipelines_cli import local
    from skit_pipelines_cli.main import build_parser

    config = ServerConfig.from_env(
        {"SKIT_KFP_LOGS_URL": "s3://mlpipeline", "SKIT_KFP_LOGS_KEY_FORMAT": KFP_ARCHIVE_KEY_FORMAT}
    )
    assert (config.kfp_logs_url, config.kfp_logs_key_format) == (
        "s3://mlpipeline",
        KFP_ARCHIVE_KEY_FORMAT,
    )
    assert ServerConfig().kfp_logs_key_format == ARGO_KEY_FORMAT
    served: list[ServerConfig] = []
    monkeypatch.setattr("skit_pipelines.server.serve", served.append)
    args = build_parser({}).parse_args(["serve", "--kfp-logs-url", "s3://logs"])
    local.serve(args, None)  # type: ignore[arg-type]  # serve writes nothing
    assert served[0].kfp_logs_url == "s3://logs"


async def test_a_key_format_the_backend_cannot_fill_stops_the_server(
    typed_pipeline: Pipeline, tmp_path: Path
) -> None:
    from skit_pipelines.catalog import Catalog
    from skit_pipelines.config import ServerConfig
    from skit_pipelines.server import ConfigError, _kubeflow_backend
    from skit_pipelines.store.sqlite import SqliteRunStore

    config = ServerConfig(
        home=tmp_path, kfp_host="http://kfp", kfp_logs_key_format="{{workflow.uid}}/x"
    )
    store = SqliteRunStore(tmp_path / "runs.db")
    try:
        with pytest.raises(ConfigError, match=r"SKIT_KFP_LOGS_KEY_FORMAT: .*workflow\.uid"):
            _kubeflow_backend(config, store, Catalog({typed_pipeline.id: typed_pipeline}), {})
    finally:
        await store.close()
