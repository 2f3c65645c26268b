"""Where a KFP 2.17 installation writes artifacts and archived logs, and writers for them.

Output artifacts (written by the v2 launcher, kubeflow/pipelines at 2.17.0, 020857a4):

- backend/src/v2/driver/root_dag.go: the pipeline root is the run's
  runtime_config.pipeline_root, else the kfp-launcher ConfigMap's defaultPipelineRoot,
  else "minio://mlpipeline/v2/artifacts" (backend/src/v2/config/env.go). The spec's
  defaultPipelineRoot is not read by the 2.17 backend.
- backend/src/v2/metadata/client.go `GetPipeline`: the run's root is
  GenerateOutputURI(root, [pipelineInfo.name, run_id], preserveQueryString=true).
- backend/src/v2/driver/driver.go `provisionOutputs` (called by driver/container.go with
  uuid.NewString() as the salt and the driver's --task_name, the IR task key): the task
  root is GenerateOutputURI(run root, [task name, salt], false), and each output artifact
  is <task root>/<output name>. With the driver's default --publish_logs=true
  (backend/src/v2/cmd/driver/main.go) an extra "executor-logs" output is provisioned.
- backend/src/v2/component/launcher_v2.go: `qualifyExecutorLogsURI` appends "-<retry
  index>" (KFP_RETRY_INDEX, else the "(N)" of the pod's Argo node name, else 0) to the
  executor-logs URI, the executor's stdout and stderr go there, and
  `uploadOutputArtifacts` uploads every output when the component succeeded, only
  executor-logs when it failed.

So an output lands at
  <pipeline_root>/<pipelineInfo.name>/<run id>/<task name>/<uuid4>/<output name>
and the executor's log at
  <pipeline_root>/<pipelineInfo.name>/<run id>/<task name>/<uuid4>/executor-logs-0
(GenerateOutputURI trims trailing "/" from the root, path-joins the parts and drops the
root's "?query" for these URIs).

Archived pod logs (Argo Workflows v4.0.5, the version KFP 2.17 installs:
manifests/kustomize/third-party/argo):

- workflow/executor/executor.go `SaveLogs`/`saveContainerLogs`: with
  artifactRepository.archiveLogs, the wait container of *every* pod (drivers, executors,
  importers) saves its main container's log as artifact "main-logs" at
  <archive location key>/main.log (`saveArtifactFromFile`: path.Join(key, fileName)).
- pkg/apis/workflow/v1alpha1/artifact_repository_types.go: the key is the repository's
  keyFormat, default "{{workflow.name}}/{{pod.name}}" (DefaultArchivePattern); KFP's
  manifests (third-party/argo/base/workflow-controller-configmap-patch.yaml) set
  "private-artifacts/{{workflow.namespace}}/{{workflow.name}}/{{workflow.creationTimestamp.Y}}/
  {{workflow.creationTimestamp.m}}/{{workflow.creationTimestamp.d}}/{{pod.name}}" in the
  "mlpipeline" bucket.
- workflow/util/pod_name.go `GeneratePodName` (POD_NAMES=v2, the default): a pod is named
  <workflow name>-<template name>-<fnv32a(node name)>, the prefix cut to 242 characters.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

DEFAULT_PIPELINE_ROOT = "minio://mlpipeline/v2/artifacts"
"""backend/src/v2/config/env.go defaultPipelineRoot."""
DEFAULT_ARCHIVE_PATTERN = "{{workflow.name}}/{{pod.name}}"
"""Argo's DefaultArchivePattern (keyFormat when the repository sets none)."""
KFP_ARCHIVE_KEY_FORMAT = (
    "private-artifacts/{{workflow.namespace}}/{{workflow.name}}/"
    "{{workflow.creationTimestamp.Y}}/{{workflow.creationTimestamp.m}}/"
    "{{workflow.creationTimestamp.d}}/{{pod.name}}"
)
"""The keyFormat of KFP 2.17's manifests."""
DEFAULT_LOG_REPOSITORY = "s3://mlpipeline"
"""The Argo artifact repository of KFP's manifests: bucket "mlpipeline"."""
EXECUTOR_LOGS = "executor-logs"
ARCHIVED_LOG_FILE = "main.log"
FIRST_RETRY_INDEX = "0"

ArtifactWriter = Callable[[str, bytes], None]
"""Stores `data` at a URI like "s3://bucket/key", "minio://bucket/key" or "file:///path"."""

_TIMESTAMP_VARIABLE = re.compile(r"\{\{\s*workflow\.creationTimestamp\.([A-Za-z])\s*\}\}")
_VARIABLE = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")


def generate_output_uri(root: str, parts: list[str], preserve_query: bool) -> str:
    """metadata.GenerateOutputURI."""
    query = ""
    base, sep, rest = root.partition("?")
    if sep and "?" not in rest:
        root = base
        if preserve_query:
            query = "?" + rest
    return f"{root.rstrip('/')}/{posixpath.normpath(posixpath.join(*parts))}{query}"


def run_root(pipeline_root: str, pipeline_name: str, run_id: str) -> str:
    """The run's pipeline root as the root DAG driver records it in MLMD."""
    return generate_output_uri(pipeline_root, [pipeline_name, run_id], preserve_query=True)


def task_root(pipeline_root: str, pipeline_name: str, run_id: str, task: str, salt: str) -> str:
    """The root of one execution's outputs (driver.go provisionOutputs)."""
    root = run_root(pipeline_root, pipeline_name, run_id)
    return generate_output_uri(root, [task, salt], preserve_query=False)


def output_uri(task_root_uri: str, output: str) -> str:
    return generate_output_uri(task_root_uri, [output], preserve_query=False)


def executor_logs_uri(task_root_uri: str, retry_index: str = FIRST_RETRY_INDEX) -> str:
    """launcher_v2.go qualifyExecutorLogsURI."""
    return output_uri(task_root_uri, EXECUTOR_LOGS) + "-" + retry_index


def archived_log_uri(
    repository: str,
    key_format: str,
    *,
    workflow_name: str,
    namespace: str,
    created_at: datetime,
    pod_name: str,
    workflow_uid: str,
) -> str:
    """Where Argo archives a pod's main container log.

    Raises:
        ValueError: the key format uses a variable the stand-in does not know.
    """

    def timestamp(match: re.Match[str]) -> str:
        return created_at.strftime("%" + match.group(1))

    values = {
        "workflow.name": workflow_name,
        "workflow.namespace": namespace,
        "workflow.uid": workflow_uid,
        "pod.name": pod_name,
    }

    def variable(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ValueError(f"unsupported keyFormat variable {{{{{name}}}}}")
        return values[name]

    key = _VARIABLE.sub(variable, _TIMESTAMP_VARIABLE.sub(timestamp, key_format))
    return f"{repository.rstrip('/')}/{posixpath.join(key, ARCHIVED_LOG_FILE)}"


class _PutObject(Protocol):
    def put_object(self, **kwargs: Any) -> Any: ...


def split_uri(uri: str) -> tuple[str, str, str]:
    """(scheme, bucket, key) of "scheme://bucket/key"."""
    parts = urlsplit(uri)
    return parts.scheme, parts.netloc, parts.path.lstrip("/")


class LocalObjectStore:
    """An ArtifactWriter into a directory: "scheme://bucket/key" goes to
    <root>/<bucket>/<key>; "file:///abs/path" to that path."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, uri: str) -> Path:
        scheme, bucket, key = split_uri(uri)
        if scheme == "file":
            return Path(urlsplit(uri).path)
        return self.root / bucket / key

    def __call__(self, uri: str, data: bytes) -> None:
        target = self.path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


class S3ObjectStore:
    """An ArtifactWriter into S3 (e.g. a moto bucket) through a boto3 client: the URI's
    host is the bucket, whatever the scheme (s3://, minio://)."""

    def __init__(self, client: _PutObject) -> None:
        self.client = client

    def __call__(self, uri: str, data: bytes) -> None:
        _, bucket, key = split_uri(uri)
        self.client.put_object(Bucket=bucket, Key=key, Body=data)
