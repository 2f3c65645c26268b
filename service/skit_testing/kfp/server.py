"""The HTTP side of the stand-in: routes, auth, error bodies, fault injection, control API.

Routing follows backend/src/apiserver/main.go (kubeflow/pipelines 2.17.0, 020857a4)
`buildHTTPRouter`: /apis/v2beta1/pipelines/upload and /upload_version (multipart, any
method, pipeline_upload_server.go) and /apis/v2beta1/healthz (any method) are plain
handlers; every other /apis/ path goes to grpc-gateway, whose routes come from
backend/api/v2beta1/{pipeline,experiment,run}.proto; an unmatched /apis/ path answers
NOT_FOUND "Not Found", a known path with another method UNIMPLEMENTED "Method Not Allowed"
(grpc-gateway v2 DefaultRoutingErrorHandler); anything else gorilla/mux's
"404 page not found".

Auth is what a proxy in front of KFP (Istio/oauth2-proxy) does: with a token, every
request needs "Authorization: Bearer <token>"; with a cookie, its Cookie header must hold
that name=value pair. Refused requests get 401 with the body grpc-gateway writes for
UNAUTHENTICATED (auth/authenticator_token_review.go words the message).
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from skit_testing.kfp import artifacts, protojson
from skit_testing.kfp.errors import (
    ApiError,
    Code,
    UploadError,
    code_for_http_status,
    gateway,
    routing_not_found,
    unauthenticated,
)
from skit_testing.kfp.service import KfpService, Options, WrittenObject
from skit_testing.kfp.workflow import ArgoNode

API_PREFIX = "/apis/v2beta1"
_SEGMENT = r"[^/:]+"
_NOT_FOUND_TEXT = b"404 page not found\n"
_AUTH_MESSAGE = "Request header error: Failed to review the token provided"
UPLOAD_FILE_FIELD = "uploadfile"
"""pipeline_upload_server.go FormFileKey."""

Handler = Callable[..., Any]


@dataclass(frozen=True)
class Request:
    """One request as the stand-in saw it, and its answer's status."""

    method: str
    path: str
    """The full path, without the query."""
    query: Mapping[str, str]
    headers: Mapping[str, str]
    """Lower-cased names."""
    body: bytes
    status: int


@dataclass
class _Fault:
    method: str
    path: re.Pattern[str]
    status: int
    remaining: int
    after: bool


class KfpServer:
    """A KFP 2.17 v2beta1 API server on a free port of 127.0.0.1; see the package docs."""

    def __init__(
        self,
        *,
        token: str | None = None,
        cookie: str | None = None,
        multi_user: bool = False,
        namespace: str = "kubeflow",
        auto_advance: bool = False,
        pipeline_root: str = artifacts.DEFAULT_PIPELINE_ROOT,
        artifact_writer: artifacts.ArtifactWriter | None = None,
        archive_logs: bool = False,
        log_repository: str = artifacts.DEFAULT_LOG_REPOSITORY,
        log_key_format: str = artifacts.DEFAULT_ARCHIVE_PATTERN,
        retry_wrappers: bool = False,
        clock: Callable[[], datetime] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """
        Args:
            token: require "Authorization: Bearer <token>".
            cookie: require this "name=value" in the Cookie header.
            multi_user: what healthz reports; namespaces are kept (single-user mode drops
                them, as ReplaceNamespace does).
            namespace: the installation's namespace, where single-user workflows run.
            auto_advance: every GET of a run first moves it by one Argo node transition.
            pipeline_root: the kfp-launcher default pipeline root, for runs that set none.
            artifact_writer: receives (uri, bytes) for every output artifact, executor log
                and archived pod log (e.g. LocalObjectStore(tmp_path) or
                S3ObjectStore(boto3_client)); None: only recorded, see `written()`.
            archive_logs: Argo's artifactRepository.archiveLogs: every pod's main.log.
            log_repository: the Argo artifact repository's bucket URL.
            log_key_format: its keyFormat (artifacts.KFP_ARCHIVE_KEY_FORMAT is KFP's).
            retry_wrappers: KFP 2.17's manifests give every Argo template a retryStrategy,
                which wraps each node in a Retry node (`<name>` -> `<name>(0)`).
            clock: the time source (UTC); KFP keeps whole seconds.
        """
        self._token = token
        self._cookie = cookie
        self._service = KfpService(
            Options(
                multi_user=multi_user,
                namespace=namespace,
                default_pipeline_root=pipeline_root,
                artifact_writer=artifact_writer,
                archive_logs=archive_logs,
                log_repository=log_repository,
                log_key_format=log_key_format,
                retry_wrappers=retry_wrappers,
            ),
            clock or (lambda: datetime.now(UTC)),
        )
        self._service.auto_advance = auto_advance
        self._address = (host, port)
        self._faults: list[_Fault] = []
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._http: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes = self._route_table()

    # Lifecycle

    def start(self) -> str:
        """Starts serving; returns the base URL (http://127.0.0.1:<port>)."""
        stand_in = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _any(self) -> None:
                stand_in._handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self._http = ThreadingHTTPServer(self._address, _Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        if self._http is None:
            raise RuntimeError("the KFP stand-in is not started")
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> KfpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Driving runs

    @property
    def auto_advance(self) -> bool:
        return self._service.auto_advance

    @auto_advance.setter
    def auto_advance(self, value: bool) -> None:
        self._service.auto_advance = value

    def advance(self, run_id: str, steps: int = 1) -> str:
        """Moves the run's workflow by `steps` Argo node transitions; returns the run state."""
        return self._service.advance(run_id, steps)

    def finish(self, run_id: str, fail_task: str | None = None, message: str = "") -> str:
        """Drives the run to its end; `fail_task` (IR task path or name) fails, `message`
        going to its pod's log. Returns the final run state (SUCCEEDED or FAILED)."""
        return self._service.finish(run_id, fail_task, message)

    def fail_task(self, task: str, message: str = "", *, run_id: str | None = None) -> None:
        """Makes `task` fail when it runs (in `run_id`, or in every run created later)."""
        controls = self._service.controls(run_id)
        with self._service.locked():
            controls.failures[task] = message or "failed by the test"

    def set_condition(self, task: str, value: bool, *, run_id: str | None = None) -> None:
        """Decides the trigger condition of an IR task (path or name), e.g. "condition-1"."""
        controls = self._service.controls(run_id)
        with self._service.locked():
            controls.conditions[task] = value

    def set_iterations(self, task: str, count: int, *, run_id: str | None = None) -> None:
        """Decides how many iterations a ParallelFor task (path or name) has."""
        controls = self._service.controls(run_id)
        with self._service.locked():
            controls.iterations[task] = count

    # Faults

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        status: int = 503,
        times: int = 1,
        *,
        after: bool = False,
    ) -> None:
        """The next `times` requests with `method` whose path below /apis/v2beta1 fully
        matches the regex `path_pattern` get `status` (a grpc-gateway body with the code of
        that status). With `after`, the request takes effect first and only its answer is
        replaced, as when a response is lost on the way back."""
        with self._lock:
            self._faults.append(
                _Fault(method.upper(), re.compile(path_pattern), status, times, after)
            )

    # Inspection

    def calls(self, method: str | None = None, path: str | None = None) -> list[Request]:
        """Requests seen, optionally with this method and a path below /apis/v2beta1 that
        fully matches the regex `path`."""
        pattern = re.compile(path) if path is not None else None
        with self._lock:
            requests = list(self._requests)
        return [
            r
            for r in requests
            if (method is None or r.method == method.upper())
            and (pattern is None or pattern.fullmatch(r.path.removeprefix(API_PREFIX)))
        ]

    def runs(self) -> list[Any]:
        """Every run as kfp_server_api.V2beta1Run (without advancing it)."""
        return [self.run(run_id) for run_id in self._service.run_ids()]

    def run(self, run_id: str) -> Any:
        """The run as GetRun would answer, as kfp_server_api.V2beta1Run (no auto_advance)."""
        return protojson.to_model(self._service.run_json(run_id), "V2beta1Run")

    def versions(self) -> list[Any]:
        """Every pipeline version as kfp_server_api.V2beta1PipelineVersion."""
        return [
            protojson.to_model(self._service.version_json(v), "V2beta1PipelineVersion")
            for v in self._service.version_ids()
        ]

    def package(self, version_id: str) -> str:
        """The file uploaded as this version, as received."""
        return self._service.version(version_id).package

    def pipeline_spec(self, version_id: str) -> dict[str, Any]:
        """The version's PipelineSpec as the server stores it (protojson-normalized)."""
        return dict(self._service.version(version_id).template.spec)

    def platform_spec(self, version_id: str) -> dict[str, Any] | None:
        """The version's PlatformSpec document (kfp-kubernetes configs), or None."""
        platform = self._service.version(version_id).template.platform_spec
        return None if platform is None else dict(platform)

    def nodes(self, run_id: str) -> list[ArgoNode]:
        """The run's Argo workflow nodes, in creation order."""
        return self._service.nodes(run_id)

    def workflow_name(self, run_id: str) -> str:
        return self._service.workflow_name(run_id)

    def written(self, kind: str | None = None) -> list[WrittenObject]:
        """Objects written so far ("output", "executor-logs", "main-log")."""
        return [w for w in self._service.written() if kind is None or w.kind == kind]

    # HTTP

    def _route_table(self) -> list[tuple[str, re.Pattern[str], Handler]]:
        s = self._service
        table: list[tuple[str, str, Handler]] = [
            ("GET", r"/pipelines", lambda q, b: s.list_pipelines(q)),
            ("POST", r"/pipelines", lambda q, b: s.create_pipeline(b)),
            ("GET", rf"/pipelines/names/(?P<name>{_SEGMENT})", s.get_pipeline_by_name),
            ("GET", rf"/pipelines/(?P<pipeline_id>{_SEGMENT})", self._get_pipeline),
            ("GET", rf"/pipelines/(?P<pipeline_id>{_SEGMENT})/versions", self._list_versions),
            ("POST", rf"/pipelines/(?P<pipeline_id>{_SEGMENT})/versions", self._create_version),
            (
                "GET",
                rf"/pipelines/(?P<pipeline_id>{_SEGMENT})/versions/(?P<version_id>{_SEGMENT})",
                self._get_version,
            ),
            ("GET", r"/experiments", lambda q, b: s.list_experiments(q)),
            ("POST", r"/experiments", lambda q, b: s.create_experiment(b)),
            ("GET", rf"/experiments/(?P<experiment_id>{_SEGMENT})", self._get_experiment),
            ("GET", r"/runs", lambda q, b: s.list_runs(q)),
            ("POST", r"/runs", lambda q, b: s.create_run(b)),
            ("GET", rf"/runs/(?P<run_id>{_SEGMENT})", self._get_run),
            ("POST", rf"/runs/(?P<run_id>{_SEGMENT}):terminate", self._terminate_run),
        ]
        return [(m, re.compile(p), h) for m, p, h in table]

    def _get_pipeline(self, q: Mapping[str, str], b: bytes, pipeline_id: str) -> Any:
        return self._service.get_pipeline(pipeline_id)

    def _list_versions(self, q: Mapping[str, str], b: bytes, pipeline_id: str) -> Any:
        return self._service.list_versions(pipeline_id, q)

    def _create_version(self, q: Mapping[str, str], b: bytes, pipeline_id: str) -> Any:
        return self._service.create_version(pipeline_id, b)

    def _get_version(
        self, q: Mapping[str, str], b: bytes, pipeline_id: str, version_id: str
    ) -> Any:
        return self._service.get_version(pipeline_id, version_id)

    def _get_experiment(self, q: Mapping[str, str], b: bytes, experiment_id: str) -> Any:
        return self._service.get_experiment(experiment_id)

    def _get_run(self, q: Mapping[str, str], b: bytes, run_id: str) -> Any:
        return self._service.get_run(run_id)

    def _terminate_run(self, q: Mapping[str, str], b: bytes, run_id: str) -> Any:
        return self._service.terminate_run(run_id)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        method = handler.command.upper()
        parts = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        status, content_type, payload, extra = self._answer(
            method, parts.path, query, headers, body
        )
        with self._lock:
            self._requests.append(Request(method, parts.path, query, headers, body, status))
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in extra.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)

    def _answer(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> tuple[int, str, bytes, dict[str, str]]:
        try:
            self._authorize(headers)
            fault = self._fault(method, path, after=False)
            if fault is not None:
                raise fault
            status, content_type, payload = self._dispatch(method, path, query, headers, body)
            fault = self._fault(method, path, after=True)
            if fault is not None:
                raise fault
            return status, content_type, payload, {}
        except ApiError as error:
            extra = {}
            if error.code is Code.UNAUTHENTICATED:
                extra["WWW-Authenticate"] = error.message
            data = json.dumps(error.body()).encode()
            return error.http_status, "application/json", data, extra
        except UploadError as error:
            content_type, data = error.payload()
            return error.status, content_type, data, {}

    def _authorize(self, headers: Mapping[str, str]) -> None:
        if self._token is not None and headers.get("authorization") != f"Bearer {self._token}":
            raise unauthenticated("no valid bearer token", _AUTH_MESSAGE)
        if self._cookie is not None:
            cookies = [c.strip() for c in headers.get("cookie", "").split(";")]
            if self._cookie not in cookies:
                raise unauthenticated("no valid session cookie", _AUTH_MESSAGE)

    def _fault(self, method: str, path: str, *, after: bool) -> ApiError | None:
        relative = path.removeprefix(API_PREFIX)
        with self._lock:
            for fault in self._faults:
                if (
                    fault.remaining > 0
                    and fault.after == after
                    and fault.method == method
                    and fault.path.fullmatch(relative)
                ):
                    fault.remaining -= 1
                    return _StatusError(
                        code_for_http_status(fault.status),
                        f"injected failure (HTTP {fault.status})",
                        fault.status,
                    )
        return None

    def _dispatch(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> tuple[int, str, bytes]:
        if not path.startswith("/apis/"):
            return 404, "text/plain; charset=utf-8", _NOT_FOUND_TEXT
        relative = path.removeprefix(API_PREFIX) if path.startswith(API_PREFIX + "/") else None
        if relative == "/healthz":
            return 200, "application/json", json.dumps(self._service.healthz()).encode()
        if relative in ("/pipelines/upload", "/pipelines/upload_version"):
            filename, content = _uploaded_file(headers.get("content-type", ""), body)
            if relative == "/pipelines/upload":
                result = self._service.upload_pipeline(query, filename, content)
            else:
                result = self._service.upload_version(query, filename, content)
            return 200, "application/json", json.dumps(result).encode()
        if relative is None:
            raise routing_not_found()
        path_matched = False
        for route_method, pattern, action in self._routes:
            match = pattern.fullmatch(relative)
            if match is None:
                continue
            path_matched = True
            if route_method == method:
                result = action(query, body, **match.groupdict())
                return 200, "application/json", json.dumps(result).encode()
        if path_matched:
            raise gateway(Code.UNIMPLEMENTED, "Method Not Allowed")
        raise routing_not_found()


class _StatusError(ApiError):
    """An injected failure: the HTTP status is the one asked for."""

    def __init__(self, code: Code, message: str, status: int) -> None:
        super().__init__(code, message)
        self._status = status

    @property
    def http_status(self) -> int:
        return self._status


def _uploaded_file(content_type: str, body: bytes) -> tuple[str, bytes | None]:
    """The "uploadfile" part of a multipart body: (filename, content or None)."""
    if not content_type.startswith("multipart/"):
        return "", None
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    for part in message.iter_parts():
        if not isinstance(part, Message):
            continue
        if part.get_param("name", header="content-disposition") == UPLOAD_FILE_FIELD:
            payload = part.get_payload(decode=True)
            return part.get_filename() or "", payload if isinstance(payload, bytes) else b""
    return "", None
