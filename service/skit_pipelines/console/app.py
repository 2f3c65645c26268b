"""The console's HTTP face over RunController: pages, a JSON API and server-sent events.

Like the servicer, it only translates: requests to the controller's inputs, domain
values to JSON (views.py), domain errors to HTTP statuses in one place (`error_response`).
Roles come from the API's own table (auth.required_role), ownership from the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from datetime import datetime
from importlib import resources
from typing import Any

from aiohttp import web

from skit_pipelines.auth import required_role
from skit_pipelines.console import views
from skit_pipelines.console.dag import Layout, layout
from skit_pipelines.console.previews import ArtifactReader, raw_type
from skit_pipelines.console.sessions import COOKIE, SESSION_SECONDS, Session, Sessions, csrf_matches
from skit_pipelines.domain import Principal, Run, RunState
from skit_pipelines.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PipelinesError,
    ResourceExhausted,
    Unavailable,
)
from skit_pipelines.run_feed import FeedKind
from skit_pipelines.runs import CreateRunInput, ListRunsInput, RunController, WatchRunsInput
from skit_pipelines.servicer import batched

logger = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none';"
    " frame-ancestors 'none'"
)
"""Every page: only this server's own scripts, styles and images; no inline script."""
ARTIFACT_CSP = "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"
"""A raw artifact (a report's HTML): no script, no form, no network but images, and an
opaque origin (`sandbox`), so it can neither read the console nor act as the user."""
CSRF_HEADER = "X-CSRF-Token"
RUN_UPDATE_SECONDS = 0.15
"""A run page gets at most one snapshot per this: a 200-step run stays smooth."""
RUNS_UPDATE_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0
LOG_BATCH_LINES = 500
LOG_BATCH_WAIT = 0.05
MAX_BODY_BYTES = 1024 * 1024

_PAGES = ("/", "/pipelines", "/pipelines/{pipeline}", "/runs", "/runs/{run}", "/step", "/compare")
_STATIC = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
_STATUSES: list[tuple[type[PipelinesError], int]] = [
    (InvalidArgument, 400),
    (NotFound, 404),
    (AlreadyExists, 409),
    (FailedPrecondition, 409),
    (PermissionDenied, 403),
    (ResourceExhausted, 429),
    (Unavailable, 503),
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_SESSION = web.RequestKey("session", Session)


def error_response(exc: BaseException) -> web.Response:
    """The one place domain errors become HTTP responses (JSON, like google.rpc.Status:
    a reason, a message and the field violations of bad input)."""
    if not isinstance(exc, PipelinesError):
        logger.error("console: internal error", exc_info=exc)
        return _json_error(500, "INTERNAL", "internal error; the server log has the details")
    status = next((s for kind, s in _STATUSES if isinstance(exc, kind)), 500)
    body: dict[str, Any] = {"reason": exc.reason, "message": exc.message}
    if isinstance(exc, InvalidArgument):
        body["violations"] = [
            {"field": v.field, "description": v.description} for v in exc.violations
        ]
    if isinstance(exc, AlreadyExists):
        body["existing"] = exc.resource_name
    return web.json_response({"error": body}, status=status)


def _json_error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"error": {"reason": reason, "message": message}}, status=status)


def _static(name: str) -> bytes:
    return resources.files("skit_pipelines.console").joinpath("static", name).read_bytes()


class Console:
    """The aiohttp application's handlers, over one controller, artifact reader and
    session table."""

    def __init__(
        self, controller: RunController, sessions: Sessions, artifacts: ArtifactReader | None
    ) -> None:
        self._controller = controller
        self._sessions = sessions
        self._artifacts = artifacts
        self._layouts: dict[tuple[str, str], Layout] = {}
        self._shell = _static("index.html")
        self._files = {name: _static(name) for name in _STATIC}

    def application(self) -> web.Application:
        app = web.Application(
            middlewares=[self._headers, self._errors, self._guard], client_max_size=MAX_BODY_BYTES
        )
        for path in _PAGES:
            app.router.add_get(path, self._page)
        app.router.add_get("/static/{name}", self._static_file)
        app.router.add_get("/api/session", self._get_session)
        app.router.add_post("/api/session", self._sign_in)
        app.router.add_post("/api/session/end", self._sign_out)
        app.router.add_get("/api/pipelines", self._list_pipelines)
        app.router.add_get("/api/pipelines/{pipeline}", self._get_pipeline)
        app.router.add_get("/api/runs", self._list_runs)
        app.router.add_post("/api/runs", self._create_run)
        app.router.add_get("/api/runs/events", self._runs_events)
        app.router.add_get("/api/runs/{run}", self._get_run)
        app.router.add_get("/api/runs/{run}/events", self._run_events)
        app.router.add_post("/api/runs/{run}/cancel", self._cancel_run)
        app.router.add_post("/api/runs/{run}/retry", self._retry_run)
        app.router.add_get("/api/runs/{run}/logs", self._logs)
        app.router.add_get("/api/runs/{run}/preview", self._preview)
        app.router.add_get("/api/runs/{run}/artifact", self._artifact)
        app.router.add_get("/api/compare", self._compare)
        return app

    # Middlewares

    @web.middleware
    async def _headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # a redirect, the router's 404: headers too
            _secure(exc)
            raise
        return _secure(response)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:
            return error_response(exc)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """API calls need a session (but signing in); POSTs need JSON and the session's
        CSRF token."""
        if not request.path.startswith("/api/") or request.path == "/api/session":
            return await handler(request)
        session = self._sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return _json_error(401, "UNAUTHENTICATED", "sign in with an API token first")
        if request.method == "POST" and (
            request.content_type != "application/json"
            or not csrf_matches(session, request.headers.get(CSRF_HEADER))
        ):
            return _json_error(
                403, "CSRF", f"a POST needs a JSON body and the session's {CSRF_HEADER} header"
            )
        request[_SESSION] = session
        return await handler(request)

    # Pages and files

    async def _page(self, request: web.Request) -> web.Response:
        if request.path == "/":
            raise web.HTTPFound("/runs")
        return web.Response(body=self._shell, content_type="text/html", charset="utf-8")

    async def _static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._files:
            raise web.HTTPNotFound()
        return web.Response(
            body=self._files[name],
            headers={"Content-Type": _STATIC[name], "Cache-Control": "no-cache"},
        )

    # Session

    def _session_json(self, session: Session) -> dict[str, Any]:
        principal = session.principal
        return {
            "auth": self._sessions.auth,
            "principal": {"name": principal.name, "role": principal.role.name.lower()},
            "csrf": session.csrf,
            "may_create": principal.role >= required_role("CreateRun"),
        }

    def _with_cookie(self, response: web.Response, session: Session) -> web.Response:
        response.set_cookie(
            COOKIE,
            session.id,
            httponly=True,
            samesite="Strict",
            path="/",
            max_age=SESSION_SECONDS,
            # Not Secure: the console speaks plain HTTP on its port (TLS, if any, ends at
            # a proxy in front), and a Secure cookie would not come back over plain HTTP.
        )
        return response

    async def _get_session(self, request: web.Request) -> web.Response:
        session = self._sessions.get(request.cookies.get(COOKIE))
        if session is None:
            if self._sessions.auth:
                return _json_error(401, "UNAUTHENTICATED", "sign in with an API token first")
            session = self._sessions.anonymous()
            return self._with_cookie(web.json_response(self._session_json(session)), session)
        return web.json_response(self._session_json(session))

    async def _sign_in(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return _json_error(403, "CSRF", "sign in with a JSON body")
        body = await _body(request)
        token = body.get("token")
        session = self._sessions.sign_in(token if isinstance(token, str) else "")
        if session is None:
            return _json_error(401, "UNAUTHENTICATED", "this token is not valid")
        return self._with_cookie(web.json_response(self._session_json(session)), session)

    async def _sign_out(self, request: web.Request) -> web.Response:
        self._sessions.sign_out(request[_SESSION].id)
        response = web.json_response({})
        response.del_cookie(COOKIE, path="/")
        return response

    # Pipelines

    def _layout(self, pipeline_id: str, version: str) -> Layout | None:
        key = (pipeline_id, version)
        found = self._layouts.get(key)
        if found is None:
            try:
                pipeline = self._controller.get_pipeline(f"pipelines/{pipeline_id}")
            except NotFound:
                return None
            if pipeline.version != version:
                return None
            found = self._layouts[key] = layout(pipeline.spec)
        return found

    async def _list_pipelines(self, request: web.Request) -> web.Response:
        pipelines, _ = self._controller.list_pipelines(page_size=1000)
        return web.json_response({"pipelines": [views.pipeline(p) for p in pipelines]})

    async def _get_pipeline(self, request: web.Request) -> web.Response:
        pipeline = self._controller.get_pipeline(f"pipelines/{request.match_info['pipeline']}")
        found = self._layout(pipeline.id, pipeline.version)
        return web.json_response(
            {**views.pipeline(pipeline), "dag": found.to_json() if found else None}
        )

    # Runs

    def _principal(self, request: web.Request) -> Principal:
        return request[_SESSION].principal

    def _require(self, request: web.Request, method: str) -> Principal:
        principal = self._principal(request)
        needed = required_role(method)
        if principal.role < needed:
            raise PermissionDenied(
                f"{principal.name} ({principal.role.name.lower()}) may not call {method};"
                f" it needs the {needed.name.lower()} role",
                reason="PERMISSION_DENIED",
            )
        return principal

    def _run_json(self, run: Run, principal: Principal) -> dict[str, Any]:
        return views.run(run, principal, self._layout(run.pipeline, run.pipeline_version))

    async def _create_run(self, request: web.Request) -> web.Response:
        principal = self._require(request, "CreateRun")
        body = await _body(request)
        parameters = body.get("parameters", {})
        labels = body.get("labels", {})
        if not isinstance(parameters, dict):
            raise InvalidArgument("parameters must be an object", field="run.parameters")
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise InvalidArgument("labels must map strings to strings", field="run.labels")
        run = await self._controller.create_run(
            CreateRunInput(
                pipeline=str(body.get("pipeline", "")),
                parameters=parameters,
                labels=labels,
                request_id=str(body.get("request_id", "")),
                creator=principal.name,
                disable_cache=bool(body.get("disable_cache", False)),
            )
        )
        return web.json_response(self._run_json(run, principal), status=201)

    async def _get_run(self, request: web.Request) -> web.Response:
        principal = self._require(request, "GetRun")
        run = await self._controller.get_run(f"runs/{request.match_info['run']}")
        return web.json_response(self._run_json(run, principal))

    async def _list_runs(self, request: web.Request) -> web.Response:
        self._require(request, "ListRuns")
        query = _run_filter(request.query)
        size = _integer(request.query, "page_size")
        runs, next_token = await self._controller.list_runs(
            ListRunsInput(
                pipeline=query.pipeline,
                states=query.states,
                labels=query.labels,
                created_after=query.created_after,
                created_before=query.created_before,
                page_size=size,
                page_token=request.query.get("page_token", ""),
            )
        )
        return web.json_response(
            {"runs": [views.run_summary(r) for r in runs], "next_page_token": next_token}
        )

    async def _cancel_run(self, request: web.Request) -> web.Response:
        principal = self._require(request, "CancelRun")
        run = await self._controller.cancel_run(
            f"runs/{request.match_info['run']}", principal=principal
        )
        return web.json_response(self._run_json(run, principal))

    async def _retry_run(self, request: web.Request) -> web.Response:
        principal = self._require(request, "RetryRun")
        run = await self._controller.retry_run(
            f"runs/{request.match_info['run']}", principal=principal
        )
        return web.json_response(self._run_json(run, principal), status=201)

    async def _compare(self, request: web.Request) -> web.Response:
        principal = self._require(request, "GetRun")
        names = [request.query.get("a", ""), request.query.get("b", "")]
        runs = [await self._controller.get_run(n if "/" in n else f"runs/{n}") for n in names]
        if runs[0].pipeline != runs[1].pipeline:
            raise InvalidArgument(
                f"{runs[0].name} and {runs[1].name} are runs of different pipelines", field="b"
            )
        return web.json_response({"runs": [self._run_json(r, principal) for r in runs]})

    # Artifacts

    def _reader(self) -> ArtifactReader:
        if self._artifacts is None:
            raise FailedPrecondition("this console has no artifact store", reason="NO_ARTIFACTS")
        return self._artifacts

    async def _preview(self, request: web.Request) -> web.Response:
        self._require(request, "GetRun")
        run = await self._controller.get_run(f"runs/{request.match_info['run']}")
        query = request.query
        preview = await asyncio.to_thread(
            self._reader().preview,
            run,
            query.get("step", ""),
            query.get("output", ""),
            query.get("path", ""),
        )
        return web.json_response(preview)

    async def _artifact(self, request: web.Request) -> web.StreamResponse:
        self._require(request, "GetRun")
        run = await self._controller.get_run(f"runs/{request.match_info['run']}")
        query = request.query
        located = await asyncio.to_thread(
            self._reader().locate,
            run,
            query.get("step", ""),
            query.get("output", ""),
            query.get("path", ""),
        )
        if located.path.is_dir():
            raise InvalidArgument("this artifact is a directory: name a file in it", field="path")
        content_type, inline = raw_type(located.path)
        disposition = "inline" if inline else "attachment"
        return web.FileResponse(
            located.path,
            headers={
                "Content-Type": content_type,
                "Content-Disposition": f'{disposition}; filename="{located.path.name}"',
                # Framed by the console's own pages only, and sandboxed.
                "Content-Security-Policy": f"{ARTIFACT_CSP}; frame-ancestors 'self'",
                "Cache-Control": "private, max-age=300",
            },
        )

    # Streams

    async def _run_events(self, request: web.Request) -> web.StreamResponse:
        """WatchRun as server-sent events: each event a snapshot with its revision as id,
        so the browser resumes (Last-Event-ID) exactly where it was; coalesced to one per
        RUN_UPDATE_SECONDS."""
        principal = self._require(request, "WatchRun")
        after = request.headers.get("Last-Event-ID") or request.query.get("after") or "0"
        if not after.isdigit():
            raise InvalidArgument("Last-Event-ID must be a revision", field="after_revision")
        watching = self._controller.watch_run(
            f"runs/{request.match_info['run']}", int(after), principal=principal
        )
        async with contextlib.aclosing(watching) as runs:
            first = await anext(runs, None)  # errors (NOT_FOUND) before the stream starts
            response = await _event_stream(request)

            async def send(run: Run) -> None:
                await _send(response, "run", self._run_json(run, principal), str(run.revision))

            async def body() -> None:
                if first is not None:
                    await send(first)
                    await _coalesced(
                        runs,
                        send,
                        RUN_UPDATE_SECONDS,
                        key=lambda r: "",
                    )
                await _send(response, "end", {})

            return await _streamed(response, body())

    async def _runs_events(self, request: web.Request) -> web.StreamResponse:
        """WatchRuns for the runs page: changed rows, coalesced per run."""
        principal = self._require(request, "WatchRuns")
        events = self._controller.watch_runs(
            WatchRunsInput(filter=_run_filter(request.query)), principal=principal
        )
        response = await _event_stream(request)

        async def runs() -> AsyncIterator[Run]:
            async for event in events:
                if event.kind is not FeedKind.SNAPSHOT and event.run is not None:
                    yield event.run

        async def send(run: Run) -> None:
            await _send(response, "run", views.run_summary(run))

        return await _streamed(
            response,
            _coalesced(
                runs(),
                send,
                RUNS_UPDATE_SECONDS,
                key=lambda r: r.id,
            ),
        )

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        principal = self._require(request, "ReadStepLogs")
        run = await self._controller.get_run(f"runs/{request.match_info['run']}")
        step_name = request.query.get("step", "")
        step = next((s for s in run.steps if s.name == step_name), None)
        if step is None:
            raise NotFound(f"{run.name} has no step {step_name[:200]!r}", reason="STEP_NOT_FOUND")
        lines = self._controller.read_step_logs(
            run.name,
            step_name,
            follow=request.query.get("follow") == "1",
            attempt=_integer(request.query, "attempt"),
            principal=principal,
        )
        response = await _event_stream(request)

        async def body() -> None:
            await _send(response, "step", views.step(step))
            batches = batched(lines, max_items=LOG_BATCH_LINES, max_wait=LOG_BATCH_WAIT)
            async for batch in batches:
                await _send(response, "lines", [views.log_line(line) for line in batch])
            await _send(response, "end", {})

        return await _streamed(response, body())


def _secure(response: web.StreamResponse) -> web.StreamResponse:
    """The headers of every response: its CSP (the pages' unless it has its own)."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-store")
    # Not aiohttp's default, which names its version and Python's.
    response.headers["Server"] = "skit-pipelines"
    if "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]:
        response.headers["X-Frame-Options"] = "DENY"
    return response


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise InvalidArgument("the body is not JSON", field="body") from None
    if not isinstance(body, dict):
        raise InvalidArgument("the body must be a JSON object", field="body")
    return body


def _integer(query: Mapping[str, str], name: str) -> int:
    value = query.get(name, "") or "0"
    try:
        return int(value)
    except ValueError:
        raise InvalidArgument(f"{name} must be an integer", field=name) from None


def _time(query: Mapping[str, str], name: str) -> datetime | None:
    value = query.get(name, "")
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidArgument(f"{name} must be an ISO 8601 time", field=name) from None
    if parsed.tzinfo is None:
        raise InvalidArgument(f"{name} must name its time zone (e.g. Z)", field=name)
    return parsed


def _run_filter(query: Mapping[str, str]) -> ListRunsInput:
    """ListRuns' filter from a query string: pipeline, state (repeated names), label
    (repeated key=value), created_after, created_before."""
    multi = query if hasattr(query, "getall") else None
    state_names = multi.getall("state", []) if multi is not None else []
    label_pairs = multi.getall("label", []) if multi is not None else []
    states = []
    for name in state_names:
        try:
            states.append(int(RunState[name.upper()]))
        except KeyError:
            raise InvalidArgument(f"states has an unknown value {name!r}", field="states") from None
    labels = {}
    for pair in label_pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidArgument("a label filter is key=value", field="labels")
        labels[key] = value
    pipeline = query.get("pipeline", "")
    return ListRunsInput(
        pipeline=f"pipelines/{pipeline}" if pipeline and "/" not in pipeline else pipeline,
        states=tuple(states),
        labels=labels,
        created_after=_time(query, "created_after"),
        created_before=_time(query, "created_before"),
    )


async def _event_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            # A buffering proxy would hold events back.
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    return response


async def _streamed(
    response: web.StreamResponse, body: Coroutine[Any, Any, None]
) -> web.StreamResponse:
    """Runs a stream's body after its headers went out, with a keepalive comment every
    KEEPALIVE_SECONDS: through idle proxies, and to notice a browser that went away
    (its write fails), which ends the body and frees its watch. A domain error becomes an
    `error` event (the status is sent already)."""
    task = asyncio.ensure_future(body)

    async def keepalive() -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS)
            await response.write(b": keepalive\n\n")

    pinger = asyncio.create_task(keepalive())
    try:
        await asyncio.wait({task, pinger}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():  # the keepalive failed: nobody reads any more
            pinger.result()
        await task
    except ConnectionResetError:
        logger.debug("console: a browser closed its event stream")
    except Exception as exc:
        status = json.loads(error_response(exc).text or "{}")
        with contextlib.suppress(ConnectionResetError):
            await _send(response, "error", status.get("error", {}))
    finally:
        for pending in (task, pinger):
            pending.cancel()
        await asyncio.gather(task, pinger, return_exceptions=True)
    return response


async def _send(response: web.StreamResponse, event: str, data: Any, event_id: str = "") -> None:
    text = f"event: {event}\n"
    if event_id:
        text += f"id: {event_id}\n"
    text += f"data: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"
    await response.write(text.encode())


async def _coalesced(
    items: AsyncIterator[Run],
    send: Callable[[Run], Awaitable[None]],
    interval: float,
    *,
    key: Callable[[Run], str],
) -> None:
    """Sends the latest item of each key at most once per `interval`: a burst of step
    changes becomes one update, and a slow browser never holds the watch back."""
    latest: dict[str, Run] = {}
    changed = asyncio.Event()
    ended = False

    async def read() -> None:
        nonlocal ended
        try:
            async for item in items:
                latest[key(item)] = item
                changed.set()
        finally:
            ended = True
            changed.set()

    reader = asyncio.create_task(read())
    try:
        while True:
            await changed.wait()
            changed.clear()
            pending = list(latest.values())
            latest.clear()
            for item in pending:
                await send(item)
            if ended and not latest:
                break
            await asyncio.sleep(interval)
        reader.result()  # raises what ended the watch, if it failed
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
