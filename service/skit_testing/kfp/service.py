"""The API server's handlers and store: pipelines, versions, experiments and runs.

Sources (kubeflow/pipelines at the 2.17.0 release commit 020857a4, backend/src/apiserver):

- server/pipeline_server.go, server/pipeline_upload_server.go, server/experiment_server.go,
  server/run_server.go: what each v2beta1 call checks and the util.Wrap context each layer
  adds to an error (the gRPC message is that whole chain).
- resource/resource_manager.go: `CreatePipelineVersion` and
  `CreatePipelineAndPipelineVersion` (template validation, pipelineInfo name check),
  `CreateRun` (every error fetching the template, including an unknown version id, is
  wrapped by util.NewInternalServerError: INTERNAL / HTTP 500; bad parameters are
  INVALID_ARGUMENT; the run starts PENDING with scheduled_at = created_at; the workflow is
  named after the spec's pipelineInfo name plus a Kubernetes generateName suffix),
  `GetValidExperimentNamespacePair` (no experiment: the "Default" experiment, created on
  first use), `TerminateRun`, `ReportWorkflowResource` (run state = the workflow's phase,
  CANCELING while a terminated workflow still runs).
- storage/run_store.go: `TerminateRun` moves only PENDING, RUNNING, PAUSED or unspecified
  runs to CANCELING; any other state is INVALID_ARGUMENT "Failed to terminate a run <id>.
  Row not found" (HTTP 400). It does not add to state_history; the next workflow report
  does. Once Argo has failed the workflow the run is FAILED, not CANCELED (the v2 API's
  ToV2 maps Argo's Failed to FAILED; kubeflow/pipelines#1040).
  `UpdateRun` appends to state_history on every change of state.
- storage/task_store.go `CreateOrUpdateTasks` and server/api_converter.go `toModelTasks`,
  `toApiPipelineTaskDetail`, common/util/workflow.go `NodeStatuses`/`RetrievePodName`:
  every Argo node becomes one task detail, keyed by its pod name
  (<workflow>-<template>-<hash>) so its random task_id stays; display_name is the node's
  display name; create_time is the workflow's creation time for every task;
  start_time/end_time are the node's StartedAt/FinishedAt (an unset FinishedAt is Go's zero
  time, 0001-01-01T00:00:00Z); state is the node phase through RuntimeState.ToV2
  (Pending/Running/Succeeded/Skipped -> the same, Failed and Error -> FAILED, Omitted ->
  unspecified, i.e. absent); child_tasks are the node's *children node IDs* given as
  pod_name; parent_task_id, error, execution_id, inputs and outputs stay unset. The run's
  task_details come from a GROUP_CONCAT over the tasks table with no ORDER BY; the
  stand-in orders them by task_id (random UUIDs), as MySQL's RunUUID index returns them.
- server/api_converter.go `toApiRun`: a run never carries an `error` in v2beta1 (only a
  conversion failure sets it); runtime_config is absent when it has neither parameters nor
  a pipeline root; a run created from a version answers pipeline_version_reference (with
  the version's pipeline_id filled in), an inline one echoes pipeline_spec.
- main.go: /apis/v2beta1/healthz is a plain handler answering
  {"commit_sha","tag_name","multi_user","pipeline_store"}.
- In single-user mode `ReplaceNamespace` drops every namespace the client sends.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from kfp_server_api import models

from skit_testing.kfp import artifacts, listing, protojson, validation
from skit_testing.kfp import workflow as argo
from skit_testing.kfp.errors import (
    ApiError,
    Code,
    UploadError,
    already_exists,
    internal,
    invalid_input,
    not_found_resource,
    plain,
)
from skit_testing.kfp.validation import PipelineTemplate

T = TypeVar("T")

DEFAULT_SERVICE_ACCOUNT = "pipeline-runner"
DEFAULT_EXPERIMENT = "Default"
DEFAULT_EXPERIMENT_DESCRIPTION = (
    "All runs created without specifying an experiment will be grouped here."
)
MAX_PIPELINE_NAME = 128
MAX_VERSION_NAME = 127
MAX_UPLOAD_BYTES = 32 << 20
_YAML_SUFFIXES = (".yaml", ".yml", ".json")
_GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
"""k8s.io/apiserver names.SimpleNameGenerator."""
_GENERATE_NAME_LENGTH = 5
_GENERATE_NAME_PREFIX_MAX = 63 - _GENERATE_NAME_LENGTH
ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
"""Go's zero time.Time, which KFP reports for a node's unset FinishedAt."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_TASK_STATES = {
    argo.Phase.PENDING: "PENDING",
    argo.Phase.RUNNING: "RUNNING",
    argo.Phase.SUCCEEDED: "SUCCEEDED",
    argo.Phase.SKIPPED: "SKIPPED",
    argo.Phase.FAILED: "FAILED",
    argo.Phase.ERROR: "FAILED",
    argo.Phase.OMITTED: "RUNTIME_STATE_UNSPECIFIED",
}
_TERMINABLE = frozenset({"PENDING", "RUNNING", "PAUSED", "RUNTIME_STATE_UNSPECIFIED"})


def _seconds(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


@dataclass
class _Pipeline:
    id: str
    name: str
    display_name: str
    description: str
    namespace: str
    created_at: datetime
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class _Version:
    id: str
    pipeline_id: str
    name: str
    display_name: str
    description: str
    created_at: datetime
    template: PipelineTemplate
    package: str
    """The uploaded file as received."""
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class _Experiment:
    id: str
    name: str
    description: str
    namespace: str
    created_at: datetime
    last_run_created_at: datetime = EPOCH


@dataclass
class _Task:
    id: str
    state: str = ""
    history: list[tuple[datetime, str]] = field(default_factory=list)


@dataclass
class _Run:
    id: str
    display_name: str
    description: str
    experiment_id: str
    namespace: str
    k8s_namespace: str
    service_account: str
    pipeline_id: str
    version_id: str
    inline_spec: Mapping[str, Any] | None
    template: PipelineTemplate
    parameters: dict[str, Any]
    pipeline_root: str
    created_at: datetime
    workflow: argo.Workflow
    controls: argo.RunControls
    workflow_uid: str
    state: str = "PENDING"
    history: list[tuple[datetime, str]] = field(default_factory=list)
    finished_at: datetime = EPOCH
    tasks: dict[str, _Task] = field(default_factory=dict)
    """Pod name -> task record."""


@dataclass(frozen=True)
class WrittenObject:
    """An object the simulated launcher or Argo wrote."""

    uri: str
    data: bytes
    kind: str
    """"output", "executor-logs" or "main-log"."""


@dataclass(frozen=True)
class Options:
    """What the stand-in installation looks like."""

    multi_user: bool = False
    namespace: str = "kubeflow"
    """The installation's namespace (POD_NAMESPACE): where single-user workflows run."""
    default_pipeline_root: str = artifacts.DEFAULT_PIPELINE_ROOT
    artifact_writer: artifacts.ArtifactWriter | None = None
    archive_logs: bool = False
    log_repository: str = artifacts.DEFAULT_LOG_REPOSITORY
    log_key_format: str = artifacts.DEFAULT_ARCHIVE_PATTERN
    retry_wrappers: bool = False
    pipeline_store: str = "database"


def _query(query: Mapping[str, str], name: str) -> str:
    return query.get(name, "")


def _page_size(query: Mapping[str, str]) -> int:
    raw = query.get("page_size", "") or "0"
    try:
        return int(raw)
    except ValueError:
        raise ApiError(
            Code.INVALID_ARGUMENT,
            f'type mismatch, parameter: page_size, error: strconv.ParseInt: parsing "{raw}":'
            " invalid syntax",
        ) from None


class KfpService:
    """The stand-in's state. Every public method takes the lock."""

    def __init__(self, options: Options, clock: Callable[[], datetime]) -> None:
        self.options = options
        self._clock = clock
        self._lock = threading.RLock()
        self._pipelines: dict[str, _Pipeline] = {}
        self._versions: dict[str, _Version] = {}
        self._experiments: dict[str, _Experiment] = {}
        self._runs: dict[str, _Run] = {}
        self._default_experiment = ""
        self._written: list[WrittenObject] = []
        self._defaults = argo.RunControls()
        """Conditions, iterations and failures every new run starts with."""
        self.auto_advance = False

    def _now(self) -> datetime:
        return _seconds(self._clock())

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock:
            yield

    def _namespace(self, namespace: str) -> str:
        return namespace if self.options.multi_user else ""

    # Healthz

    def healthz(self) -> dict[str, Any]:
        return {
            "commit_sha": "unknown",
            "tag_name": "unknown",
            "multi_user": self.options.multi_user,
            "pipeline_store": self.options.pipeline_store,
        }

    # Pipelines

    def _pipeline_json(self, p: _Pipeline) -> dict[str, Any]:
        return protojson.to_json(
            models.V2beta1Pipeline(
                pipeline_id=p.id,
                name=p.name,
                display_name=p.display_name,
                description=p.description,
                created_at=p.created_at,
                namespace=p.namespace,
                tags=p.tags or None,
            )
        )

    def list_pipelines(self, query: Mapping[str, str]) -> dict[str, Any]:
        with self._lock:
            namespace = self._namespace(_query(query, "namespace"))
            items = [p for p in self._pipelines.values() if p.namespace == namespace]
            page = _page(
                items,
                listing.PIPELINE,
                _pipeline_value,
                query,
                failure=_invalid_list_options("pipelines", query),
            )
            return _list_json("pipelines", [self._pipeline_json(p) for p in page.items], page)

    def _create_pipeline(
        self, name: str, display_name: str, description: str, namespace: str, tags: dict[str, str]
    ) -> _Pipeline:
        if any(p.name == name and p.namespace == namespace for p in self._pipelines.values()):
            raise already_exists(
                f"Failed to create a new pipeline. The name {name} already exists. Please"
                " specify a new name"
            )
        pipeline = _Pipeline(
            id=str(uuid.uuid4()),
            name=name,
            display_name=display_name or name,
            description=description,
            namespace=namespace,
            created_at=self._now(),
            tags=tags,
        )
        self._pipelines[pipeline.id] = pipeline
        return pipeline

    def create_pipeline(self, body: bytes) -> dict[str, Any]:
        request = protojson.from_json(body, "V2beta1Pipeline")
        with self._lock:
            name = request.name or request.display_name or ""
            display_name = request.display_name or name
            if len(name) > MAX_PIPELINE_NAME:
                raise internal(
                    f"Invalid input error: Pipeline.Name length cannot exceed {MAX_PIPELINE_NAME}",
                    "Failed to convert API pipeline to model pipeline",
                ).wrap("Failed to create a pipeline as pipeline conversion failed")
            if not name:
                raise invalid_input("name is required").wrap(
                    "Failed to create a pipeline due to server error"
                )
            try:
                pipeline = self._create_pipeline(
                    name,
                    display_name,
                    request.description or "",
                    self._namespace(request.namespace or ""),
                    dict(request.tags or {}),
                )
            except ApiError as error:
                raise error.wrap("Failed to create a pipeline in PipelineStore").wrap(
                    "Failed to create a pipeline due to server error"
                ) from None
            return self._pipeline_json(pipeline)

    def _get_pipeline(self, pipeline_id: str) -> _Pipeline:
        pipeline = self._pipelines.get(pipeline_id)
        if pipeline is None:
            raise not_found_resource("Pipeline", pipeline_id).wrap(
                f"Failed to get a pipeline with id {pipeline_id}"
            )
        return pipeline

    def get_pipeline(self, pipeline_id: str) -> dict[str, Any]:
        with self._lock:
            try:
                return self._pipeline_json(self._get_pipeline(pipeline_id))
            except ApiError as error:
                raise error.wrap(
                    f"Failed to get a pipeline {pipeline_id}. Check error stack"
                ) from None

    def get_pipeline_by_name(self, name: str, query: Mapping[str, str]) -> dict[str, Any]:
        with self._lock:
            namespace = self._namespace(_query(query, "namespace"))
            for pipeline in self._pipelines.values():
                if pipeline.name == name and pipeline.namespace == namespace:
                    return self._pipeline_json(pipeline)
            raise not_found_resource(f"Namespace {namespace}/Pipeline", name).wrap(
                f"Failed to get a pipeline with name {name} and namespace {namespace}."
                " Check error stack."
            )

    # Pipeline versions

    def _version_json(self, v: _Version) -> dict[str, Any]:
        return protojson.to_json(
            models.V2beta1PipelineVersion(
                pipeline_id=v.pipeline_id,
                pipeline_version_id=v.id,
                name=v.name,
                display_name=v.display_name,
                description=v.description,
                created_at=v.created_at,
                pipeline_spec=v.template.api_struct(),
                tags=v.tags or None,
            )
        )

    def list_versions(self, pipeline_id: str, query: Mapping[str, str]) -> dict[str, Any]:
        with self._lock:
            try:
                self._get_pipeline(pipeline_id)
            except ApiError as error:
                raise error.wrap(
                    "Failed to list pipeline versions due to error fetching the namespace for"
                    f" pipeline {pipeline_id}"
                ).wrap(f"Failed to list pipeline versions for pipeline {pipeline_id}") from None
            items = [v for v in self._versions.values() if v.pipeline_id == pipeline_id]
            page = _page(
                items,
                listing.PIPELINE_VERSION,
                _version_value,
                query,
                failure=_invalid_list_options("pipeline versions", query),
            )
            return _list_json(
                "pipeline_versions", [self._version_json(v) for v in page.items], page
            )

    def get_version(self, pipeline_id: str, version_id: str) -> dict[str, Any]:
        with self._lock:
            version = self._versions.get(version_id)
            if version is None:
                raise not_found_resource("PipelineVersion", version_id).wrap(
                    f"Failed to get a pipeline version {version_id}"
                )
            return self._version_json(version)

    def create_version(self, pipeline_id: str, body: bytes) -> dict[str, Any]:
        request = protojson.from_json(body, "V2beta1PipelineVersion")
        with self._lock:
            url = request.package_url.pipeline_url if request.package_url else ""
            if request.package_url is None:
                raise invalid_input("Failed to create a pipeline version. Package URL is nil")
            if not url:
                raise invalid_input("Failed to create a pipeline version. Package URL is empty")
            if not pipeline_id or not request.pipeline_id:
                raise invalid_input(
                    "Failed to create a pipeline version. Parent pipeline id is empty"
                )
            # The real server downloads the package over https from allowlisted public
            # domains only (validation/pipeline_url.go); no test URL can pass that.
            raise invalid_input("Pipeline URL validation failed").wrap(
                "Failed to create a pipeline version. Check error stack"
            )

    def _new_version(
        self,
        pipeline_id: str,
        name: str,
        display_name: str,
        description: str,
        template: PipelineTemplate,
        package: str,
        tags: dict[str, str],
    ) -> _Version:
        if any(v.pipeline_id == pipeline_id and v.name == name for v in self._versions.values()):
            raise already_exists(
                f"Failed to create a new pipeline version. The name {name} already exist."
                " Specify a new name"
            )
        version = _Version(
            id=str(uuid.uuid4()),
            pipeline_id=pipeline_id,
            name=name,
            display_name=display_name or name,
            description=description,
            created_at=self._now(),
            template=template,
            package=package,
            tags=tags,
        )
        self._versions[version.id] = version
        return version

    @staticmethod
    def _read_package(filename: str, content: bytes | None) -> str:
        if content is None:
            raise ValueError("no file")
        if len(content) > MAX_UPLOAD_BYTES:
            raise ValueError("too large")
        if not filename.endswith(_YAML_SUFFIXES):
            # zip and tar.gz packages exist on the real server; the stand-in reads YAML/JSON.
            raise ValueError(
                "Unexpected pipeline file format. Support .zip, .tar.gz, .json or YAML"
            )
        return content.decode()

    @staticmethod
    def _template(package: str) -> PipelineTemplate:
        template = validation.parse_template(package.encode())
        validation.validate_pipeline_name(template.name)
        return template

    def upload_version(
        self, query: Mapping[str, str], filename: str, content: bytes | None
    ) -> dict[str, Any]:
        failed = "Failed to create a pipeline version"
        with self._lock:
            try:
                package = self._read_package(filename, content)
            except ValueError:
                raise UploadError(400, failed, sniffed=True) from None
            pipeline_id = _query(query, "pipelineid")
            if not pipeline_id:
                raise UploadError(400, failed, sniffed=True)
            name = _query(query, "name") or _query(query, "display_name") or filename
            if len(name) > MAX_VERSION_NAME:
                raise UploadError(
                    400,
                    f"Invalid input error: PipelineVersion.Name length cannot exceed"
                    f" {MAX_VERSION_NAME}",
                    plain_text=True,
                )
            if pipeline_id not in self._pipelines:
                raise UploadError(400, failed, sniffed=True)
            tags = _tags(query)
            try:
                template = self._template(package)
                version = self._new_version(
                    pipeline_id,
                    name,
                    _query(query, "display_name") or name,
                    _query(query, "description"),
                    template,
                    package,
                    tags,
                )
            except ApiError as error:
                raise _upload_error(error, failed) from None
            return self._version_json(version)

    def upload_pipeline(
        self, query: Mapping[str, str], filename: str, content: bytes | None
    ) -> dict[str, Any]:
        failed = "Failed to create a pipeline and a pipeline version"
        with self._lock:
            try:
                package = self._read_package(filename, content)
            except ValueError as exc:
                message = (
                    "Failed to read pipeline from file"
                    if content is None
                    else "Failed to read a pipeline spec file"
                )
                raise UploadError(400, message, sniffed=True) from exc
            name = _query(query, "name") or _query(query, "display_name") or filename
            display_name = _query(query, "display_name") or name
            if len(name) > MAX_PIPELINE_NAME:
                raise UploadError(
                    400,
                    f"Invalid input error: Pipeline.Name length cannot exceed {MAX_PIPELINE_NAME}",
                    plain_text=True,
                )
            namespace = self._namespace(_query(query, "namespace"))
            tags = _tags(query)
            try:
                template = self._template(package)
                pipeline = self._create_pipeline(
                    name, display_name, _query(query, "description"), namespace, tags
                )
                try:
                    self._new_version(
                        pipeline.id,
                        name,
                        display_name,
                        _query(query, "description"),
                        template,
                        package,
                        {},
                    )
                except ApiError:
                    del self._pipelines[pipeline.id]
                    raise
            except ApiError as error:
                raise _upload_error(error, failed) from None
            return self._pipeline_json(pipeline)

    # Experiments

    def _experiment_json(self, e: _Experiment) -> dict[str, Any]:
        return protojson.to_json(
            models.V2beta1Experiment(
                experiment_id=e.id,
                display_name=e.name,
                description=e.description,
                created_at=e.created_at,
                last_run_created_at=e.last_run_created_at,
                namespace=e.namespace,
                storage_state="AVAILABLE",
            )
        )

    def _create_experiment(self, name: str, description: str, namespace: str) -> _Experiment:
        if any(e.name == name and e.namespace == namespace for e in self._experiments.values()):
            raise already_exists(
                f"Failed to create a new experiment. The name {name} already exists. Please"
                " specify a new name"
            )
        experiment = _Experiment(str(uuid.uuid4()), name, description, namespace, self._now())
        self._experiments[experiment.id] = experiment
        return experiment

    def create_experiment(self, body: bytes) -> dict[str, Any]:
        request = protojson.from_json(body, "V2beta1Experiment")
        with self._lock:
            if not request.display_name:
                raise internal(
                    "Invalid input error: Experiment must have a non-empty name",
                    "Failed to convert API experiment to model experiment",
                ).wrap("[ExperimentServer]: Failed to create a experiment due to conversion error")
            try:
                experiment = self._create_experiment(
                    request.display_name,
                    request.description or "",
                    self._namespace(request.namespace or ""),
                )
            except ApiError as error:
                raise error.wrap("Failed to create a experiment") from None
            return self._experiment_json(experiment)

    def _get_experiment(self, experiment_id: str) -> _Experiment:
        experiment = self._experiments.get(experiment_id)
        if experiment is None:
            raise not_found_resource("Experiment", experiment_id).wrap(
                f"Failed to get experiment {experiment_id}"
            )
        return experiment

    def get_experiment(self, experiment_id: str) -> dict[str, Any]:
        with self._lock:
            try:
                return self._experiment_json(self._get_experiment(experiment_id))
            except ApiError as error:
                raise error.wrap("Failed to fetch experiment") from None

    def list_experiments(self, query: Mapping[str, str]) -> dict[str, Any]:
        with self._lock:
            namespace = self._namespace(_query(query, "namespace"))
            items = [e for e in self._experiments.values() if e.namespace == namespace]
            page = _page(
                items,
                listing.EXPERIMENT,
                _experiment_value,
                query,
                failure="Failed to create list options",
            )
            return _list_json("experiments", [self._experiment_json(e) for e in page.items], page)

    # Runs

    def _run_json(self, run: _Run) -> dict[str, Any]:
        runtime_config = None
        if run.parameters or run.pipeline_root:
            runtime_config = models.V2beta1RuntimeConfig(
                parameters=dict(run.parameters) or None, pipeline_root=run.pipeline_root
            )
        tasks = sorted(
            (self._task_detail(run, node) for node in run.workflow.nodes()),
            key=lambda detail: detail.task_id,
        )
        run_details = models.V2beta1RunDetails(task_details=tasks) if tasks else None
        model = models.V2beta1Run(
            run_id=run.id,
            experiment_id=run.experiment_id,
            display_name=run.display_name,
            description=run.description,
            service_account=run.service_account,
            runtime_config=runtime_config,
            storage_state="AVAILABLE",
            state=run.state,
            state_history=_history(run.history),
            created_at=run.created_at,
            scheduled_at=run.created_at,
            finished_at=run.finished_at,
            run_details=run_details,
        )
        if run.inline_spec is not None:
            model.pipeline_spec = dict(run.inline_spec)
        else:
            model.pipeline_version_reference = models.V2beta1PipelineVersionReference(
                pipeline_id=run.pipeline_id, pipeline_version_id=run.version_id
            )
        return protojson.to_json(model)

    def _task_detail(self, run: _Run, node: argo.ArgoNode) -> Any:
        task = run.tasks[_retrieve_pod_name(run.workflow.name, node)]
        return models.V2beta1PipelineTaskDetail(
            run_id=run.id,
            task_id=task.id,
            display_name=node.display_name,
            create_time=run.created_at,
            start_time=node.started_at,
            end_time=node.finished_at or ZERO_TIME,
            state=task.state,
            state_history=_history(task.history),
            child_tasks=[models.PipelineTaskDetailChildTask(pod_name=c) for c in node.children]
            or None,
        )

    def _get_run(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            raise not_found_resource("Run", run_id).wrap(f"Failed to fetch run {run_id}")
        return run

    def get_run(self, run_id: str) -> dict[str, Any]:
        with self._lock:
            try:
                run = self._get_run(run_id)
            except ApiError as error:
                raise error.wrap("Failed to get a run") from None
            if self.auto_advance:
                self._step(run)
            return self._run_json(run)

    def list_runs(self, query: Mapping[str, str]) -> dict[str, Any]:
        with self._lock:
            experiment_id = _query(query, "experiment_id")
            namespace = self._namespace(_query(query, "namespace"))
            if experiment_id:
                try:
                    self._get_experiment(experiment_id)
                except ApiError as error:
                    raise (
                        error.wrap("Failed to get namespace from experiment ID")
                        .wrap(
                            f"Failed to list runs due to error fetching namespace for experiment"
                            f" {experiment_id}. Try filtering based on namespace"
                        )
                        .wrap("Failed to list runs")
                    ) from None
                items = [r for r in self._runs.values() if r.experiment_id == experiment_id]
            else:
                items = [
                    r for r in self._runs.values() if not namespace or r.namespace == namespace
                ]
            page = _page(
                items, listing.RUN, _run_value, query, failure="Failed to create list options"
            )
            return _list_json("runs", [self._run_json(r) for r in page.items], page)

    def _experiment_for_run(self, experiment_id: str, namespace: str) -> _Experiment:
        if experiment_id:
            try:
                experiment = self._get_experiment(experiment_id)
            except ApiError as error:
                raise error.wrap("Failed to get namespace from experiment ID").wrap(
                    f"Failed to fetch namespace for experiment {experiment_id}"
                ) from None
            if namespace and namespace != experiment.namespace:
                raise invalid_input(
                    f"Experiment {experiment_id} belongs to namespace '{experiment.namespace}'"
                    f" instead of '{namespace}'"
                )
            return experiment
        if not self._default_experiment:
            default = self._create_experiment(
                DEFAULT_EXPERIMENT, DEFAULT_EXPERIMENT_DESCRIPTION, namespace
            )
            self._default_experiment = default.id
        return self._experiments[self._default_experiment]

    def _run_template(self, request: Any) -> tuple[PipelineTemplate, str, str]:
        """fetchTemplateFromPipelineSpec: (template, pipeline id, version id)."""
        reference = request.pipeline_version_reference
        version_id = reference.pipeline_version_id if reference is not None else ""
        pipeline_id = reference.pipeline_id if reference is not None else ""
        if version_id:
            version = self._versions.get(version_id)
            if version is None:
                raise (
                    not_found_resource("PipelineVersion", version_id)
                    .wrap(f"Failed to get pipeline version {version_id}")
                    .wrap(
                        "Failed to fetch a pipeline version and its manifest from pipeline version"
                        f" {version_id}"
                    )
                )
            if pipeline_id and version.pipeline_id != pipeline_id:
                raise invalid_input(
                    f"Pipeline version {version_id} belongs to pipeline {version.pipeline_id}"
                    f" (not {pipeline_id})"
                )
            return version.template, version.pipeline_id, version.id
        if pipeline_id:
            versions = [v for v in self._versions.values() if v.pipeline_id == pipeline_id]
            if not versions:
                raise not_found_resource("PipelineVersion", pipeline_id).wrap(
                    "Failed to fetch a pipeline version and its manifest from pipeline"
                    f" {pipeline_id}"
                )
            latest = max(versions, key=lambda v: (v.created_at, v.id))
            return latest.template, pipeline_id, latest.id
        if not request.pipeline_spec:
            raise invalid_input("Failed to fetch a template with an empty pipeline spec manifest")
        package = validation.template_from_struct(request.pipeline_spec)
        try:
            return validation.parse_template(package), "", ""
        except ApiError as error:
            raise error.wrap(
                "Failed to fetch a template with an invalid pipeline spec manifest"
            ) from None

    def create_run(self, body: bytes) -> dict[str, Any]:
        sources = protojson.fields_set(body) & {
            "pipeline_version_id",
            "pipeline_spec",
            "pipeline_version_reference",
        }
        if len(sources) > 1:
            raise ApiError(
                Code.INVALID_ARGUMENT,
                f'proto: (line 1:1): error parsing "{sorted(sources)[-1]}", oneof'
                " kubeflow.pipelines.backend.api.v2beta1.Run.pipeline_source is already set",
            )
        request = protojson.from_json(body, "V2beta1Run")
        with self._lock:
            try:
                return self._create_run(request)
            except ApiError as error:
                raise error.wrap("Failed to create a new run") from None

    def _create_run(self, request: Any) -> dict[str, Any]:
        if request.plugins_output:
            raise ApiError(
                Code.ABORTED,
                "BadRequestError: plugins_output is server-owned and populated exclusively via"
                " plugin lifecycle hooks: plugins_output must not be set by the client",
                "plugins_output is server-owned and populated exclusively via plugin lifecycle"
                " hooks",
            )
        if not request.display_name:
            raise internal(
                "Invalid input error: Run name cannot be empty",
                "Failed to convert a API run detail to its internal representation",
            ).wrap("CreateJob(job.ToV2())Failed to create a run due to conversion error")
        try:
            experiment = self._experiment_for_run(
                request.experiment_id or "",
                self._namespace(getattr(request, "namespace", "") or ""),
            )
        except ApiError as error:
            raise error.wrap(
                "Failed to create a run due to invalid experimentId and namespace combination"
            ) from None
        try:
            template, pipeline_id, version_id = self._run_template(request)
        except ApiError as error:
            # resource_manager.go CreateRun: util.NewInternalServerError around every error.
            raise internal(
                error.message, "Failed to create a run due to error fetching manifest"
            ) from None
        config = request.runtime_config
        parameters = dict((config.parameters if config is not None else None) or {})
        pipeline_root = (config.pipeline_root if config is not None else "") or ""
        try:
            validation.validate_job_inputs(template.spec, parameters)
        except ApiError as error:
            raise error.wrap("invalid pipeline job inputs").wrap(
                "Failed to generate the ExecutionSpec"
            ) from None
        validation.validate_kubernetes_configs(template)
        try:
            entrypoint = argo.compile_pipeline(template)
        except argo.UnsupportedPipeline as exc:
            raise plain(str(exc)) from None
        now = self._now()
        run_id = request.run_id or str(uuid.uuid4())
        if run_id in self._runs:
            raise already_exists(f"Run {run_id} already exists")
        controls = argo.RunControls(
            conditions=dict(self._defaults.conditions),
            iterations=dict(self._defaults.iterations),
            failures=dict(self._defaults.failures),
        )
        name = _generate_name(template.name.rsplit("/", 1)[-1])
        run = _Run(
            id=run_id,
            display_name=request.display_name,
            description=request.description or "",
            experiment_id=experiment.id,
            namespace=experiment.namespace,
            k8s_namespace=experiment.namespace or self.options.namespace,
            service_account=request.service_account or DEFAULT_SERVICE_ACCOUNT,
            pipeline_id=pipeline_id,
            version_id=version_id,
            inline_spec=None if version_id else dict(request.pipeline_spec),
            template=template,
            parameters=parameters,
            pipeline_root=pipeline_root,
            created_at=now,
            workflow=argo.Workflow(
                name=name,
                entrypoint=entrypoint,
                scope=argo.root_scope(template.spec, parameters),
                controls=controls,
                clock=self._now,
                retry_wrappers=self.options.retry_wrappers,
                on_pod_done=lambda node, _, failure: self._pod_done(
                    self._runs[run_id], node, failure
                ),
            ),
            controls=controls,
            workflow_uid=str(uuid.uuid4()),
            history=[(now, "PENDING")],
        )
        self._runs[run.id] = run
        experiment.last_run_created_at = now
        return self._run_json(run)

    def terminate_run(self, run_id: str) -> dict[str, Any]:
        with self._lock:
            context = "Failed to terminate a run"
            try:
                run = self._get_run(run_id)
            except ApiError as error:
                raise error.wrap(
                    f"Failed to terminate run {run_id} due to error fetching the run"
                ).wrap(context) from None
            if run.state not in _TERMINABLE:
                raise (
                    invalid_input(f"Failed to terminate a run {run_id}. Row not found")
                    .wrap(f"Failed to terminate run {run_id}")
                    .wrap(context)
                )
            run.state = "CANCELING"
            run.workflow.terminate()
            # The patched workflow (activeDeadlineSeconds 0) is reported as terminating.
            self._report(run)
            return {}

    # Progress

    def _step(self, run: _Run) -> bool:
        moved = run.workflow.step()
        if moved:
            self._report(run)
        return moved

    def _report(self, run: _Run) -> None:
        """The persistence agent's report of the workflow (ReportWorkflowResource)."""
        now = self._now()
        flow = run.workflow
        if flow.finished:
            state = "SUCCEEDED" if flow.phase is argo.WorkflowPhase.SUCCEEDED else "FAILED"
            run.finished_at = flow.finished_at or now
        elif flow.terminating:
            state = "CANCELING"
        else:
            state = "RUNNING"
        run.state = state
        if run.history[-1][1] != state:
            run.history.append((now, state))
        for node in flow.nodes():
            key = _retrieve_pod_name(flow.name, node)
            task = run.tasks.setdefault(key, _Task(id=str(uuid.uuid4())))
            task.state = _TASK_STATES[node.phase]
            if not task.history or task.history[-1][1] != task.state:
                task.history.append((now, task.state))

    def _pod_done(self, run: _Run, node: argo.ArgoNode, failure: str) -> None:
        role = node.role
        if role is None:
            return
        log = _pod_log(node, failure)
        if role.kind is argo.PodKind.EXECUTOR:
            root = run.pipeline_root or self.options.default_pipeline_root
            task_root = artifacts.task_root(
                root, run.template.name, run.id, role.task_name, str(uuid.uuid4())
            )
            if not failure:
                for output in role.outputs:
                    data = f"placeholder {output} of {role.ir_path} in run {run.id}\n".encode()
                    self._write(artifacts.output_uri(task_root, output), data, "output")
            self._write(artifacts.executor_logs_uri(task_root), log, "executor-logs")
        if self.options.archive_logs:
            uri = artifacts.archived_log_uri(
                self.options.log_repository,
                self.options.log_key_format,
                workflow_name=run.workflow.name,
                namespace=run.k8s_namespace,
                created_at=run.created_at,
                pod_name=argo.pod_name(run.workflow.name, node.name, node.template_name),
                workflow_uid=run.workflow_uid,
            )
            self._write(uri, log, "main-log")

    def _write(self, uri: str, data: bytes, kind: str) -> None:
        self._written.append(WrittenObject(uri, data, kind))
        if self.options.artifact_writer is not None:
            self.options.artifact_writer(uri, data)

    # Control API (see KfpServer)

    def run_ids(self) -> list[str]:
        with self._lock:
            return list(self._runs)

    def run_json(self, run_id: str) -> dict[str, Any]:
        with self._lock:
            return self._run_json(self._require_run(run_id))

    def _require_run(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            raise KeyError(f"no run {run_id}")
        return run

    def advance(self, run_id: str, steps: int) -> str:
        with self._lock:
            run = self._require_run(run_id)
            for _ in range(steps):
                if not self._step(run):
                    break
            return run.state

    def finish(self, run_id: str, fail_task: str | None, message: str) -> str:
        with self._lock:
            run = self._require_run(run_id)
            if fail_task is not None:
                run.controls.failures[fail_task] = message or argo.DEFAULT_FAILURE_MESSAGE
            while self._step(run):
                pass
            return run.state

    def controls(self, run_id: str | None) -> argo.RunControls:
        with self._lock:
            return self._defaults if run_id is None else self._require_run(run_id).controls

    def nodes(self, run_id: str) -> list[argo.ArgoNode]:
        with self._lock:
            return self._require_run(run_id).workflow.nodes()

    def workflow_name(self, run_id: str) -> str:
        with self._lock:
            return self._require_run(run_id).workflow.name

    def version_ids(self) -> list[str]:
        with self._lock:
            return list(self._versions)

    def version_json(self, version_id: str) -> dict[str, Any]:
        with self._lock:
            return self._version_json(self._versions[version_id])

    def version(self, version_id: str) -> _Version:
        with self._lock:
            return self._versions[version_id]

    def written(self) -> list[WrittenObject]:
        with self._lock:
            return list(self._written)


def _history(history: list[tuple[datetime, str]]) -> list[Any]:
    return [models.V2beta1RuntimeStatus(update_time=t, state=s) for t, s in history]


def _pod_log(node: argo.ArgoNode, failure: str) -> bytes:
    role = node.role
    what = f"{role.kind} of {role.ir_path or 'the pipeline'}" if role is not None else node.name
    lines = [f"[kfp stand-in] {what} ({node.name})"]
    if failure:
        lines.append(failure)
    return ("\n".join(lines) + "\n").encode()


def _retrieve_pod_name(workflow_name: str, node: argo.ArgoNode) -> str:
    """common/util/workflow.go RetrievePodName (the task's identity)."""
    if node.name == workflow_name:
        return workflow_name
    hash_part = node.id.rsplit("-", 1)[-1]
    return f"{workflow_name}-{node.template_name}-{hash_part}"


def _generate_name(prefix: str) -> str:
    base = f"{prefix}-"[:_GENERATE_NAME_PREFIX_MAX]
    suffix = "".join(random.choices(_GENERATE_NAME_ALPHABET, k=_GENERATE_NAME_LENGTH))
    return base + suffix


def _tags(query: Mapping[str, str]) -> dict[str, str]:
    raw = _query(query, "tags")
    if not raw:
        return {}
    try:
        tags = json.loads(raw)
    except ValueError:
        tags = None
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise UploadError(
            400,
            "Failed to parse tags query parameter. Expected JSON object with string keys and"
            " values",
        )
    return {str(k): v for k, v in tags.items()}


def _upload_error(error: ApiError, failed: str) -> UploadError:
    if error.code is Code.ALREADY_EXISTS:
        return UploadError(409, failed)
    if error.code is Code.INVALID_ARGUMENT:
        return UploadError(400, error.external or error.message)
    return UploadError(500, failed)


def _nonempty(key: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: items} if items else {}


def _page(
    items: Sequence[T],
    listable: listing.Listable,
    value: Callable[[T, str], Any],
    query: Mapping[str, str],
    *,
    failure: str,
) -> listing.Page[T]:
    """One page of `items` by the request's list options; bad options fail as `failure`."""
    try:
        return listing.list_page(
            items,
            listable,
            value,
            page_token=_query(query, "page_token"),
            page_size=_page_size(query),
            sort_by=_query(query, "sort_by"),
            filter_raw=_query(query, "filter"),
        )
    except ApiError as error:
        raise error.wrap(failure) from None


def _invalid_list_options(what: str, query: Mapping[str, str]) -> str:
    # Worded as the server's pipeline and version lists word it (sic: "due invalid").
    return (
        f"Failed to list {what} due invalid list options: pageToken: "
        f"{_query(query, 'page_token')}, pageSize: {_page_size(query)}, sortBy: "
        f"{_query(query, 'sort_by')}, filter: {_query(query, 'filter')}"
    )


def _list_json(key: str, items: list[dict[str, Any]], page: listing.Page[Any]) -> dict[str, Any]:
    out: dict[str, Any] = _nonempty(key, items)
    if page.total_size:
        out["total_size"] = page.total_size
    if page.next_page_token:
        out["next_page_token"] = page.next_page_token
    return out


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


def _pipeline_value(p: _Pipeline, name: str) -> Any:
    return {
        "UUID": p.id,
        "Name": p.name,
        "DisplayName": p.display_name,
        "CreatedAtInSec": _unix(p.created_at),
        "Description": p.description,
        "Namespace": p.namespace,
    }[name]


def _version_value(v: _Version, name: str) -> Any:
    return {
        "UUID": v.id,
        "Name": v.name,
        "DisplayName": v.display_name,
        "CreatedAtInSec": _unix(v.created_at),
        "Status": "READY",
        "Description": v.description,
        "PipelineSpec": v.template.manifest(),
    }[name]


def _experiment_value(e: _Experiment, name: str) -> Any:
    return {
        "UUID": e.id,
        "Name": e.name,
        "CreatedAtInSec": _unix(e.created_at),
        "LastRunCreatedAtInSec": _unix(e.last_run_created_at),
        "Description": e.description,
        "Namespace": e.namespace,
        "StorageState": "AVAILABLE",
    }[name]


def _run_value(r: _Run, name: str) -> Any:
    return {
        "UUID": r.id,
        "DisplayName": r.display_name,
        "CreatedAtInSec": _unix(r.created_at),
        "FinishedAtInSec": _unix(r.finished_at),
        "Description": r.description,
        "ScheduledAtInSec": _unix(r.created_at),
        "StorageState": "AVAILABLE",
        "Conditions": r.state,
        "Namespace": r.namespace,
        "ExperimentUUID": r.experiment_id,
        "State": r.state,
        "StateHistory": "",
        "PipelineRuntimeManifest": "",
        "JobUUID": "",
    }[name]
