"""A stand-in KFP API server (v2beta1) on 127.0.0.1, for tests and demos without Kubernetes.

It implements the endpoints the Kubeflow backend calls, with every request and response
body going through the kfp-server-api models: a request field the models do not know is
a 400, and responses are serialized from model instances, so a drift in field names
between the kfp SDK and the API fails loudly. Uploaded pipeline packages must load with
kfp's own loader. Runs do not execute: the test drives their state (`set_state`), and
can inject transient failures (`fail_next`).
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import kfp_server_api
from kfp_server_api import models

_PRIMITIVES = frozenset({"str", "int", "bool", "float", "object", "datetime", "date"})
_API = "/apis/v2beta1"


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_fields(data: Any, type_name: str, where: str = "body") -> None:
    """Raises a 400 when `data` has a field the kfp-server-api model `type_name` lacks."""
    if data is None or type_name in _PRIMITIVES:
        return
    if type_name.startswith("list["):
        for index, item in enumerate(data):
            check_fields(item, type_name[5:-1], f"{where}[{index}]")
        return
    if type_name.startswith("dict("):
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        for key, value in data.items():
            check_fields(value, inner, f"{where}.{key}")
        return
    klass = getattr(models, type_name)
    if not klass.openapi_types:
        return  # an enum, sent as its name
    if not isinstance(data, dict):
        raise _HttpError(400, f"{where}: expected a {type_name} object")
    unknown = set(data) - set(klass.attribute_map.values())
    if unknown:
        raise _HttpError(400, f"{where}: {type_name} has no field(s) {sorted(unknown)}")
    for attribute, key in klass.attribute_map.items():
        if key in data:
            check_fields(data[key], klass.openapi_types[attribute], f"{where}.{key}")


@dataclass(frozen=True)
class Request:
    """One request as the fake saw it."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    """Lower-cased names."""


@dataclass
class _Failure:
    method: str
    path: re.Pattern[str]
    remaining: int
    status: int
    after: bool


@dataclass
class _State:
    pipelines: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    experiments: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, Any] = field(default_factory=dict)
    terminating: set[str] = field(default_factory=set)


class FakeKfpServer:
    """The fake. `start()` returns its URL; `requests` records every call."""

    def __init__(self, *, token: str = "", cookie: str = "") -> None:
        self._token = token
        self._cookie = cookie
        self._lock = threading.Lock()
        self._state = _State()
        self._failures: list[_Failure] = []
        self._client = kfp_server_api.ApiClient()
        self.requests: list[Request] = []
        self.rejected: list[str] = []
        """Why requests were refused (400/401/404/409), for assertions."""
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle

    def start(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # What tests drive and inspect

    def fail_next(
        self, method: str, path: str, count: int = 1, status: int = 503, *, after: bool = False
    ) -> None:
        """The next `count` requests matching `method` and the regex `path` (below
        /apis/v2beta1) fail with `status`; with `after`, once they have taken effect (as
        when a response is lost on the way back)."""
        with self._lock:
            self._failures.append(_Failure(method, re.compile(path), count, status, after))

    def set_state(
        self,
        run_id: str,
        state: str,
        tasks: Mapping[str, str] | None = None,
        error: str = "",
    ) -> None:
        """Sets a run's state and its tasks' (display name -> state)."""
        now = datetime.now(UTC)
        with self._lock:
            run = self._state.runs[run_id]
            run.state = state
            if error:
                run.error = models.GoogleRpcStatus(code=2, message=error)
            root = models.V2beta1PipelineTaskDetail(
                run_id=run_id, task_id=f"{run_id}-root", display_name="root", state=state
            )
            details = [root]
            previous = {
                t.display_name: t for t in (run.run_details.task_details if run.run_details else [])
            }
            for name, task_state in (tasks or {}).items():
                before = previous.get(name)
                start = before.start_time if before and before.start_time else now
                details.append(
                    models.V2beta1PipelineTaskDetail(
                        run_id=run_id,
                        task_id=f"{run_id}-{name}",
                        parent_task_id=root.task_id,
                        display_name=name,
                        state=task_state,
                        create_time=start,
                        start_time=start,
                        end_time=now if task_state in ("SUCCEEDED", "FAILED", "CANCELED") else None,
                        error=models.GoogleRpcStatus(code=2, message=f"{name} failed")
                        if task_state == "FAILED"
                        else None,
                    )
                )
            run.run_details = models.V2beta1RunDetails(task_details=details)
            if state in ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"):
                run.finished_at = now

    def runs(self) -> list[Any]:
        with self._lock:
            return list(self._state.runs.values())

    def run(self, run_id: str) -> Any:
        with self._lock:
            return self._state.runs[run_id]

    def versions(self) -> list[Any]:
        with self._lock:
            return list(self._state.versions.values())

    def package(self, version_id: str) -> str:
        """The pipeline package (IR YAML) uploaded as this version."""
        with self._lock:
            return self._state.packages[version_id]

    def calls(self, method: str, path: str) -> list[Request]:
        """Requests with this method whose path (below /apis/v2beta1) matches the regex."""
        pattern = re.compile(path)
        return [
            r
            for r in list(self.requests)
            if r.method == method and pattern.fullmatch(r.path.removeprefix(_API))
        ]

    # HTTP

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parsed = urlparse(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        request = Request(method, parsed.path, query, headers)
        self.requests.append(request)
        try:
            self._authorize(request)
            self._maybe_fail(method, parsed.path, after=False)
            status, payload = self._route(method, parsed.path, query, handler.headers, body)
            self._maybe_fail(method, parsed.path, after=True)
        except _HttpError as error:
            if error.status < 500:
                self.rejected.append(f"{method} {parsed.path}: {error.status} {error.message}")
            status, payload = error.status, {"code": error.status, "message": error.message}
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _authorize(self, request: Request) -> None:
        if self._token and request.headers.get("authorization") != f"Bearer {self._token}":
            raise _HttpError(401, "missing or wrong bearer token")
        if self._cookie and self._cookie not in request.headers.get("cookie", ""):
            raise _HttpError(401, "missing or wrong cookie")

    def _maybe_fail(self, method: str, path: str, *, after: bool) -> None:
        with self._lock:
            for failure in self._failures:
                if (
                    failure.remaining > 0
                    and failure.after == after
                    and failure.method == method
                    and failure.path.fullmatch(path.removeprefix(_API))
                ):
                    failure.remaining -= 1
                    raise _HttpError(failure.status, "injected failure")

    def _route(
        self, method: str, path: str, query: Mapping[str, str], headers: Any, body: bytes
    ) -> tuple[int, Any]:
        routes: list[tuple[str, str, Callable[..., Any]]] = [
            ("GET", r"/healthz", self._healthz),
            ("GET", r"/pipelines", self._list_pipelines),
            ("POST", r"/pipelines", self._create_pipeline),
            ("GET", r"/pipelines/(?P<pipeline_id>[^/]+)/versions", self._list_versions),
            ("POST", r"/pipelines/upload_version", self._upload_version),
            ("GET", r"/experiments", self._list_experiments),
            ("POST", r"/experiments", self._create_experiment),
            ("GET", r"/runs", self._list_runs),
            ("POST", r"/runs", self._create_run),
            ("GET", r"/runs/(?P<run_id>[^/:]+)", self._get_run),
            ("POST", r"/runs/(?P<run_id>[^/:]+):terminate", self._terminate_run),
        ]
        relative = path.removeprefix(_API)
        for route_method, pattern, action in routes:
            match = re.fullmatch(pattern, relative)
            if path.startswith(_API) and route_method == method and match:
                with self._lock:
                    result = action(query=query, headers=headers, body=body, **match.groupdict())
                return 200, self._client.sanitize_for_serialization(result)
        raise _HttpError(404, f"no route for {method} {path}")

    def _parse(self, body: bytes, type_name: str) -> Any:
        try:
            data = json.loads(body or b"{}")
        except ValueError as exc:
            raise _HttpError(400, f"body is not JSON: {exc}") from exc
        check_fields(data, type_name)

        class _Response:
            pass

        response = _Response()
        response.data = json.dumps(data)  # type: ignore[attr-defined]
        return self._client.deserialize(response, type_name)

    def _name_filter(self, query: Mapping[str, str]) -> Callable[[Any], bool]:
        raw = query.get("filter")
        if not raw:
            return lambda _: True
        data = json.loads(raw)
        check_fields(data, "V2beta1Filter", "filter")
        wanted = []
        for predicate in data.get("predicates", []):
            if predicate.get("operation") != "EQUALS" or predicate.get("key") != "display_name":
                raise _HttpError(400, f"the fake filters by display_name only: {predicate}")
            wanted.append(predicate.get("string_value"))
        return lambda item: all(item.display_name == name for name in wanted)

    # Endpoints

    def _healthz(self, **_: Any) -> Any:
        return models.V2beta1GetHealthzResponse(multi_user=False, pipeline_store="database")

    def _list_pipelines(self, query: Mapping[str, str], **_: Any) -> Any:
        matches = [p for p in self._state.pipelines.values() if self._name_filter(query)(p)]
        return models.V2beta1ListPipelinesResponse(pipelines=matches, total_size=len(matches))

    def _create_pipeline(self, body: bytes, **_: Any) -> Any:
        pipeline = self._parse(body, "V2beta1Pipeline")
        if not pipeline.display_name:
            raise _HttpError(400, "pipeline display_name is required")
        if any(p.display_name == pipeline.display_name for p in self._state.pipelines.values()):
            raise _HttpError(409, f"pipeline {pipeline.display_name} already exists")
        pipeline.pipeline_id = str(uuid.uuid4())
        pipeline.created_at = datetime.now(UTC)
        self._state.pipelines[pipeline.pipeline_id] = pipeline
        return pipeline

    def _list_versions(self, pipeline_id: str, query: Mapping[str, str], **_: Any) -> Any:
        if pipeline_id not in self._state.pipelines:
            raise _HttpError(404, f"pipeline {pipeline_id} not found")
        matches = [
            v
            for v in self._state.versions.values()
            if v.pipeline_id == pipeline_id and self._name_filter(query)(v)
        ]
        return models.V2beta1ListPipelineVersionsResponse(
            pipeline_versions=matches, total_size=len(matches)
        )

    def _upload_version(self, query: Mapping[str, str], headers: Any, body: bytes, **_: Any) -> Any:
        pipeline_id, name = query.get("pipelineid", ""), query.get("name", "")
        if pipeline_id not in self._state.pipelines:
            raise _HttpError(404, f"pipeline {pipeline_id!r} not found")
        if not name:
            raise _HttpError(400, "a version name is required")
        if any(
            v.pipeline_id == pipeline_id and v.display_name == name
            for v in self._state.versions.values()
        ):
            raise _HttpError(409, f"version {name} already exists")
        package = _uploaded_file(headers.get("Content-Type", ""), body)
        _load_with_kfp(package)
        version = models.V2beta1PipelineVersion(
            pipeline_id=pipeline_id,
            pipeline_version_id=str(uuid.uuid4()),
            display_name=name,
            description=query.get("description", ""),
            created_at=datetime.now(UTC),
        )
        self._state.versions[version.pipeline_version_id] = version
        self._state.packages[version.pipeline_version_id] = package
        return version

    def _list_experiments(self, query: Mapping[str, str], **_: Any) -> Any:
        matches = [e for e in self._state.experiments.values() if self._name_filter(query)(e)]
        return models.V2beta1ListExperimentsResponse(experiments=matches, total_size=len(matches))

    def _create_experiment(self, body: bytes, **_: Any) -> Any:
        experiment = self._parse(body, "V2beta1Experiment")
        if any(e.display_name == experiment.display_name for e in self._state.experiments.values()):
            raise _HttpError(409, f"experiment {experiment.display_name} already exists")
        experiment.experiment_id = str(uuid.uuid4())
        experiment.created_at = datetime.now(UTC)
        self._state.experiments[experiment.experiment_id] = experiment
        return experiment

    def _list_runs(self, query: Mapping[str, str], **_: Any) -> Any:
        experiment = query.get("experiment_id")
        matches = [
            r
            for r in self._state.runs.values()
            if self._name_filter(query)(r) and (not experiment or r.experiment_id == experiment)
        ]
        return models.V2beta1ListRunsResponse(runs=matches, total_size=len(matches))

    def _create_run(self, body: bytes, **_: Any) -> Any:
        run = self._parse(body, "V2beta1Run")
        reference = run.pipeline_version_reference
        if reference is None or reference.pipeline_version_id not in self._state.versions:
            raise _HttpError(400, "pipeline_version_reference names no uploaded version")
        if run.experiment_id not in self._state.experiments:
            raise _HttpError(400, f"experiment {run.experiment_id!r} not found")
        run.run_id = str(uuid.uuid4())
        run.state = "PENDING"
        run.created_at = datetime.now(UTC)
        self._state.runs[run.run_id] = run
        return run

    def _get_run(self, run_id: str, **_: Any) -> Any:
        run = self._state.runs.get(run_id)
        if run is None:
            raise _HttpError(404, f"run {run_id} not found")
        if run_id in self._state.terminating:
            # A terminated run is CANCELING for one look, then CANCELED.
            if run.state == "CANCELING":
                run.state = "CANCELED"
                run.finished_at = datetime.now(UTC)
                self._state.terminating.discard(run_id)
            else:
                run.state = "CANCELING"
        return run

    def _terminate_run(self, run_id: str, **_: Any) -> Any:
        run = self._state.runs.get(run_id)
        if run is None:
            raise _HttpError(404, f"run {run_id} not found")
        if run.state in ("PENDING", "RUNNING", "PAUSED"):
            self._state.terminating.add(run_id)
        return {}


def _uploaded_file(content_type: str, body: bytes) -> str:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "uploadfile":
            return part.get_payload(decode=True).decode()
    raise _HttpError(400, "no uploadfile in the multipart body")


def _load_with_kfp(package: str) -> None:
    from kfp import components

    try:
        components.load_component_from_text(package)
    except Exception as exc:
        raise _HttpError(400, f"kfp cannot load the uploaded pipeline: {exc}") from exc
