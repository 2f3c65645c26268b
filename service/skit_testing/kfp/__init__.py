"""A stand-in for the Kubeflow Pipelines 2.17 v2beta1 REST API server, for tests.

It answers what the real server answers, derived from its code (kubeflow/pipelines at the
2.17.0 release commit 020857a4, and Argo Workflows v4.0.5, which KFP 2.17 installs); each
module names its sources:

- server.py: HTTP, routing, auth (bearer token / cookie), fault injection, control API.
- service.py: pipelines, versions, experiments and runs; run creation and termination;
  Argo node statuses reported as run task_details.
- workflow.py: the IR compiled to Argo templates as KFP's Argo compiler does, run node by
  node as Argo would (drivers, executors, DAG, condition and ParallelFor nodes).
- validation.py: upload and run validation (template.go, v2_template.go).
- listing.py: page_size / page_token / sort_by / filter (list.go, filter.go).
- artifacts.py: where outputs and archived logs land, and writers for them.
- protojson.py / errors.py: answers and error bodies as grpc-gateway v2 writes them.

Usage::

    server = KfpServer(token="t0k", archive_logs=True,
                       artifact_writer=LocalObjectStore(tmp_path))
    url = server.start()                       # http://127.0.0.1:<free port>
    client = kfp.Client(host=url, existing_token="t0k")
    ...                                        # the code under test uploads and runs
    (run,) = server.runs()                     # kfp_server_api.V2beta1Run
    server.advance(run.run_id)                 # one Argo node transition
    server.finish(run.run_id, fail_task="train", message="OOM")   # -> "FAILED"
    server.fail_next("GET", r"/runs/.*", status=503, times=3)
    assert server.calls("POST", r"/runs")
    server.stop()

Control API (KfpServer): start() -> url, stop(), context manager; advance(run_id, steps=1)
-> state; finish(run_id, fail_task=None, message="") -> state; auto_advance (property: each
GET of a run first advances it one node); fail_task(task, message="", run_id=None);
set_condition(task, value, run_id=None); set_iterations(task, count, run_id=None);
fail_next(method, path_pattern, status=503, times=1, after=False); calls(method=None,
path=None) -> [Request]; runs(), run(run_id), versions(); package(version_id) -> str;
pipeline_spec(version_id) / platform_spec(version_id) -> dict; nodes(run_id) ->
[ArgoNode]; workflow_name(run_id); written(kind=None) -> [WrittenObject].
Terminate runs through the API (RunServiceApi.run_service_terminate_run): the run is
CANCELING until Argo has failed the workflow, then FAILED, as on the real server.
"""

from skit_testing.kfp.artifacts import (
    DEFAULT_ARCHIVE_PATTERN,
    DEFAULT_PIPELINE_ROOT,
    KFP_ARCHIVE_KEY_FORMAT,
    ArtifactWriter,
    LocalObjectStore,
    S3ObjectStore,
)
from skit_testing.kfp.server import KfpServer, Request
from skit_testing.kfp.service import WrittenObject
from skit_testing.kfp.workflow import ArgoNode, NodeType, Phase

__all__ = [
    "DEFAULT_ARCHIVE_PATTERN",
    "DEFAULT_PIPELINE_ROOT",
    "KFP_ARCHIVE_KEY_FORMAT",
    "ArgoNode",
    "ArtifactWriter",
    "KfpServer",
    "LocalObjectStore",
    "NodeType",
    "Phase",
    "Request",
    "S3ObjectStore",
    "WrittenObject",
]
