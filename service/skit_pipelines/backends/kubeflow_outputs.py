"""Outputs and logs of runs executed on Kubeflow Pipelines, found in the artifact store.

Artifacts: KFP 2.17's driver gives each output artifact the URI
"<pipeline root>/<pipelineInfo.name>/<KFP run id>/<task>/<uuid>/<output>"
(`backend/src/v2/driver/container.go` provisionOutputs with `uuid.NewString()` as the salt,
`driver/driver.go`, `metadata/client.go` GenerateOutputURI and GetPipeline), and the
launcher uploads the file there. The uuid is random, so the URI is found by listing the
task's prefix. Loop iterations share one task prefix with one uuid each, and nothing but
ML Metadata says which uuid is which iteration: their artifacts are not reported.

Output parameters: the launcher records them in ML Metadata only (`backend/src/v2/
component/launcher_v2.go`); the v2beta1 run API does not return them
(`api_converter.go` toModelTasks fills no outputs from Argo nodes). Steps on Kubeflow
therefore report no output parameters.

Logs: with `archiveLogs: true` in Argo's artifact repository, the wait container of every
pod saves its main container's log as "<keyFormat>/main.log" in the repository's bucket
(argo-workflows `workflow/executor/executor.go` saveContainerLogs); keyFormat defaults to
"{{workflow.name}}/{{pod.name}}" (`pkg/apis/workflow/v1alpha1/artifact_repository_types.go`
DefaultArchivePattern); KFP's manifests set "private-artifacts/{{workflow.namespace}}/
{{workflow.name}}/{{workflow.creationTimestamp.Y}}/{{workflow.creationTimestamp.m}}/
{{workflow.creationTimestamp.d}}/{{pod.name}}" in bucket "mlpipeline"
(`manifests/kustomize/third-party/argo/base/workflow-controller-configmap-patch.yaml`).
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from skit_pipelines.backends.kubeflow_tasks import IrShape, MappedStep, RunTasks
from skit_pipelines.domain import Artifact, Step, StepState

logger = logging.getLogger(__name__)

LOG_FILE = "main.log"
"""The name Argo gives an archived pod log (the main container's)."""
ARGO_KEY_FORMAT = "{{workflow.name}}/{{pod.name}}"
"""Argo's DefaultArchivePattern: the keyFormat of a repository that sets none."""
_TIMESTAMP = re.compile(r"\{\{\s*workflow\.creationTimestamp\.([A-Za-z])\s*\}\}")
_VARIABLE = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")


class KeyFormatError(ValueError):
    """A keyFormat with a variable this service cannot fill in; the message names it."""


class Blobs(ABC):
    """Read-only access to the object store KFP writes to."""

    @abstractmethod
    def list(self, prefix: str) -> list[tuple[str, int]]:
        """(URI, size) of every object under the URI `prefix`. Blocking."""

    @abstractmethod
    def read(self, uri: str) -> bytes | None:
        """The object's bytes; None when there is none. Blocking."""


class FileBlobs(Blobs):
    """file:// URIs (a pipeline root on a shared volume, tests)."""

    def list(self, prefix: str) -> list[tuple[str, int]]:
        root = Path(unquote(urlparse(prefix).path))
        if not root.is_dir():
            return []
        return sorted(
            (path.as_uri(), path.stat().st_size) for path in root.rglob("*") if path.is_file()
        )

    def read(self, uri: str) -> bytes | None:
        path = Path(unquote(urlparse(uri).path))
        return path.read_bytes() if path.is_file() else None


class S3Blobs(Blobs):
    """s3:// URIs, with the standard AWS configuration (and an endpoint override)."""

    def __init__(self, endpoint_url: str = "") -> None:
        import boto3

        self._client: Any = boto3.client("s3", endpoint_url=endpoint_url or None)

    def list(self, prefix: str) -> list[tuple[str, int]]:
        parsed = urlparse(prefix)
        found = []
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=parsed.netloc, Prefix=parsed.path.lstrip("/")
        )
        for page in pages:
            for item in page.get("Contents", ()):
                found.append((f"s3://{parsed.netloc}/{item['Key']}", int(item["Size"])))
        return found

    def read(self, uri: str) -> bytes | None:
        parsed = urlparse(uri)
        try:
            body = self._client.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
        except self._client.exceptions.NoSuchKey:
            return None
        data: bytes = body["Body"].read()
        return data


def blobs_for(uri: str, s3_endpoint_url: str = "") -> Blobs | None:
    """The reader of `uri`'s scheme; None for schemes this service cannot read."""
    scheme = urlparse(uri).scheme
    if scheme == "s3":
        return S3Blobs(s3_endpoint_url)
    if scheme == "file":
        return FileBlobs()
    return None


@dataclass(frozen=True)
class Collected:
    """A succeeded run's outputs as found in the artifact store."""

    artifacts: Mapping[str, tuple[Artifact, ...]] = field(default_factory=dict)
    """Step name -> its output artifacts."""
    run_outputs: tuple[Artifact, ...] = ()
    run_parameters: Mapping[str, Any] = field(default_factory=dict)
    """Always empty: output parameters live in ML Metadata only."""

    def step(self, mapped: MappedStep) -> Step:
        found = self.artifacts.get(mapped.step.name)
        return replace(mapped.step, output_artifacts=found) if found else mapped.step


def task_prefix(pipeline_root: str, pipeline_name: str, kfp_run_id: str, task: str) -> str:
    """Where the outputs of `task` of a KFP run are (driver.go provisionOutputs)."""
    return f"{pipeline_root.rstrip('/')}/{pipeline_name}/{kfp_run_id}/{task}/"


def collect(
    blobs: Blobs, pipeline_root: str, kfp_run_id: str, shape: IrShape, tasks: RunTasks
) -> Collected:
    """The output artifacts of the run's succeeded steps and the run's outputs. Blocking."""
    artifacts: dict[str, tuple[Artifact, ...]] = {}
    for mapped in tasks.steps:
        task = mapped.task
        if mapped.step.state is not StepState.SUCCEEDED or not task.artifacts:
            continue
        if "[" in mapped.step.name:
            continue  # a loop iteration: see the module docstring
        prefix = task_prefix(pipeline_root, shape.pipeline_name, kfp_run_id, task.key)
        listed = blobs.list(prefix)
        salts = {uri.removeprefix(prefix).split("/", 1)[0] for uri, _ in listed}
        if len(salts) != 1:
            logger.info("no single output folder under %s (%d found)", prefix, len(salts))
            continue
        salt = salts.pop()
        found = []
        for name in task.artifacts:
            base = f"{prefix}{salt}/{name}"
            sizes = [size for uri, size in listed if uri == base or uri.startswith(base + "/")]
            if sizes:
                found.append(
                    Artifact(name=name, uri=base, step=mapped.step.name, size_bytes=sum(sizes))
                )
        artifacts[mapped.step.name] = tuple(found)
    return Collected(artifacts, run_outputs(shape, artifacts))


def run_outputs(
    shape: IrShape, artifacts: Mapping[str, tuple[Artifact, ...]]
) -> tuple[Artifact, ...]:
    """The run's outputs among the steps' artifacts (step name -> its artifacts)."""
    wanted = shape.run_outputs(artifacts)
    return tuple(
        artifact
        for step, found in artifacts.items()
        for artifact in found
        if (step, artifact.name) in wanted
    )


def check_key_format(key_format: str) -> None:
    """Raises KeyFormatError when `key_format` uses a variable `log_uri` cannot fill."""
    log_uri("s3://b", key_format, workflow="w", namespace="n", pod="p", created=datetime.now(UTC))


def log_uri(
    logs_url: str,
    key_format: str,
    *,
    workflow: str,
    namespace: str,
    pod: str,
    created: datetime,
) -> str:
    """Where Argo archived a pod's log: the repository's bucket URL `logs_url` (e.g.
    "s3://mlpipeline") joined with the keyFormat, rendered as Argo renders it
    (`{{workflow.name}}`, `{{workflow.namespace}}`, `{{pod.name}}`,
    `{{workflow.creationTimestamp.<strftime letter>}}`).

    Raises:
        KeyFormatError: the keyFormat uses another variable.
    """
    values = {"workflow.name": workflow, "workflow.namespace": namespace, "pod.name": pod}

    def variable(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyFormatError(
                f"the log key format uses {{{{{name}}}}}; only {{{{workflow.name}}}},"
                " {{workflow.namespace}}, {{pod.name}} and"
                " {{workflow.creationTimestamp.<letter>}} can be filled in"
            )
        return values[name]

    key = _TIMESTAMP.sub(lambda m: created.strftime("%" + m.group(1)), key_format)
    key = _VARIABLE.sub(variable, key).strip("/")
    return f"{logs_url.rstrip('/')}/{key}/{LOG_FILE}"
