"""The Kubeflow Pipelines backend: runs execute on a KFP installation (v2beta1 API).

Submitting uploads the compiled IR, with every component image pinned by the digest the
images lock records (imagelock.py), as a pipeline version once per hash of that pinned IR
(found again by name when it exists, so every replica and every restart reuses it, and a
re-released image makes a new version), then creates the KFP run with the run's typed
parameters. A pipeline using an image the lock has no release of is refused before
anything is stored or uploaded. The KFP run is named after our run and found again by
that name before any create, so a retried or resumed submit never starts a second one.
Its id and UI URL are recorded on the run. A run with the cache off (Run.disable_cache)
runs a version whose IR has every task's caching off, as the KFP SDK submits one.

Progress is polled, by exactly one replica per active run: the holder of the run's
lease (store/leases.py). Each replica has one loop that renews its leases, claims the
leases of replicas that died, and polls its runs; KFP task details become steps and KFP
states become run states. Watchers never poll: they follow the store.

Calls go through the kfp SDK client (`kfp.Client`, with a bearer token or a cookie for
auth) in worker threads. Transient failures (connection errors, 429, 5xx, answers that are
not from the KFP API) are retried with exponential backoff and jitter, then UNAVAILABLE;
other HTTP errors are FAILED_PRECONDITION (KfpRefused). Both quote the server's message
(grpc-gateway's `message`, the uploads' `error_message`). A poll that fails is tried again
on the next round. docs/kubeflow.md maps every rule to the KFP source it follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import json
import logging
import re
import tempfile
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import urllib3
import yaml
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from skit_pipelines.backends.base import Backend, RunSink
from skit_pipelines.backends.kubeflow_outputs import (
    ARGO_KEY_FORMAT,
    Collected,
    blobs_for,
    collect,
    log_uri,
    run_outputs,
)
from skit_pipelines.backends.kubeflow_platform import SecretRef, declared_env, platform_spec
from skit_pipelines.backends.kubeflow_tasks import (
    IrShape,
    RunTasks,
    map_steps,
    nodes_from_details,
)
from skit_pipelines.catalog import ir_version
from skit_pipelines.domain import (
    STEP_FAILED_CODE,
    Code,
    ErrorInfo,
    LogLine,
    Pipeline,
    Run,
    RunState,
    Step,
    StepState,
)
from skit_pipelines.errors import FailedPrecondition, NotFound, Unavailable
from skit_pipelines.imagelock import LOCK_PATH, ImageLock, ImageLockError, pin_images
from skit_pipelines.store.base import RunStore
from skit_pipelines.store.leases import RunLeases

if TYPE_CHECKING:
    import kfp
    import kfp_server_api

logger = logging.getLogger(__name__)

T = TypeVar("T")

_TRANSIENT_STATUSES = frozenset({0, 408, 429, 500, 502, 503, 504})

_TAGS = re.compile(r"<[^>]*>")
_MAX_QUOTED = 300
"""Characters of an error body quoted in our messages."""

DEFAULT_NAMESPACE = "kubeflow"
"""Where a single-user KFP installation runs its pods."""

_ACTIVE_KFP_STATES = frozenset({"RUNTIME_STATE_UNSPECIFIED", "PENDING", "RUNNING", "PAUSED"})
_ENDED_KFP_STATES = frozenset({"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"})
_RENEWALS_PER_LEASE = 3
"""Lease renewals per lease period: two may fail or come late before the lease expires."""


@dataclass(frozen=True)
class KubeflowSettings:
    """Where the KFP API server is and how this service uses it."""

    host: str
    """The KFP API endpoint, e.g. http://ml-pipeline.kubeflow:8888."""
    ui_url: str = ""
    """The KFP UI base URL for run links; empty: the host."""
    token: str = field(default="", repr=False)
    """A bearer token for the API (Authorization: Bearer ...)."""
    cookie: str = field(default="", repr=False)
    """A Cookie header value, e.g. "authservice_session=...", for cookie-based auth."""
    namespace: str = ""
    """The Kubernetes namespace of a multi-user installation; empty: single-user."""
    experiment: str = "skit-pipelines"
    """The KFP experiment every run is created in (created when missing)."""
    pipeline_root: str = ""
    """Where KFP writes artifacts (e.g. the S3 artifact store's URL); empty: KFP's default."""
    poll_seconds: float = 5.0
    """How often the lease holder polls each active run."""
    lease_seconds: float = 30.0
    """How long a replica may go silent before another one takes over its runs."""
    retry_seconds: float = 30.0
    """How long one call is retried on transient errors before giving up."""
    request_timeout_seconds: float = 30.0
    """Timeout of each HTTP request to the API server."""
    max_parallel_polls: int = 16
    """How many runs one replica polls at once."""
    step_secrets: Mapping[str, SecretRef] = field(default_factory=dict)
    """Env name -> the Kubernetes secret and key a step declaring it gets it from."""
    logs_url: str = ""
    """The bucket of Argo's artifact repository, where it archives pod logs
    (archiveLogs), e.g. s3://mlpipeline; empty: archiving is off and ReadStepLogs points
    at the KFP UI."""
    logs_key_format: str = ARGO_KEY_FORMAT
    """That repository's keyFormat, in Argo's syntax (kubeflow_outputs.log_uri)."""
    s3_endpoint_url: str = ""
    """Endpoint override for reading s3:// outputs and logs."""


class KfpRefused(FailedPrecondition):
    """KFP answered a call with an error that retrying does not fix; the message quotes
    the server's."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message, reason="KFP_REQUEST_FAILED")
        self.status = status


class KfpBadAnswer(Exception):
    """KFP's answer lacks what every answer of the real server has: something else (a
    login page, a proxy) answered in its place."""


def _transient(error: BaseException) -> bool:
    import kfp_server_api

    if isinstance(error, kfp_server_api.ApiException):
        return error.status in _TRANSIENT_STATUSES
    return isinstance(
        error, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError | KfpBadAnswer
    )


def _status(error: BaseException) -> int | None:
    return getattr(error, "status", None)


def _server_message(body: object) -> str:
    """The message of an error body: grpc-gateway v2's {"code", "message", "details"},
    the upload handlers' {"error_message", "error_details"}
    (backend/src/apiserver/server/pipeline_upload_server.go), else the text of what
    answered (an HTML page of a proxy), on one line and short."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for key in ("message", "error_message", "error"):
            if isinstance(parsed.get(key), str) and parsed[key]:
                return " ".join(parsed[key].split())
    text = " ".join(_TAGS.sub(" ", text).split())
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 1] + "…"


def _describe(error: BaseException) -> str:
    status = _status(error)
    if status is not None:
        reason = getattr(error, "reason", None) or HTTPStatus(status).phrase
        message = _server_message(getattr(error, "body", None))
        return f"HTTP {status} {reason}" + (f": {message}" if message else "")
    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        # "HTTPConnection(...): Failed to establish a new connection: [Errno 111] ...".
        return str(error.reason).rsplit(": ", 1)[-1].strip("'\")") or type(error.reason).__name__
    return " ".join(str(error).split()) or type(error).__name__


def _log_retry(what: str) -> Callable[[RetryCallState], None]:
    def log(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        logger.warning(
            "Kubeflow %s failed (attempt %s), retrying: %s",
            what,
            state.attempt_number,
            _describe(error) if error else "",
        )

    return log


@functools.cache
def _serializer() -> kfp_server_api.ApiClient:
    import kfp_server_api

    return kfp_server_api.ApiClient()


def _filter_by_name(name: str) -> str:
    """A v2beta1 Filter (as JSON) matching display_name == name."""
    import kfp_server_api

    predicate = kfp_server_api.V2beta1Predicate(
        operation="EQUALS", key="display_name", string_value=name
    )
    body = _serializer().sanitize_for_serialization(
        kfp_server_api.V2beta1Filter(predicates=[predicate])
    )
    return json.dumps(body)


def without_caching(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the IR with every task's `cachingOptions.enableCache` false, for a run
    with the cache off: what the KFP SDK's `enable_caching=False` does to the IR it submits
    (kfp.client's `_override_caching_options`), which rewrites the root DAG's tasks only;
    here the tasks of nested DAGs (conditions, loops, exit handlers) too, whose options
    KFP's driver reads the same way. Other caching options (a cacheKey) stay."""
    rewritten = copy.deepcopy(dict(spec))
    dags = [rewritten.get("root", {}).get("dag", {})]
    dags += [component.get("dag", {}) for component in rewritten.get("components", {}).values()]
    for dag in dags:
        for task in dag.get("tasks", {}).values():
            task["cachingOptions"] = {**task.get("cachingOptions", {}), "enableCache": False}
    return rewritten


def version_name(pipeline: Pipeline) -> str:
    """The KFP pipeline version name for an IR hash (of the pinned IR, see
    `KubeflowBackend.pinned`): DNS-label safe, as KFP's Kubernetes pipeline store requires."""
    return "sha256-" + pipeline.version.removeprefix("sha256:")[:32]


class KfpApi:
    """The calls this backend makes, through one lazily built kfp.Client. Blocking calls
    run in worker threads; transient failures are retried."""

    def __init__(self, settings: KubeflowSettings) -> None:
        self._settings = settings
        self._client: kfp.Client | None = None
        self._lock = threading.Lock()

    def _kfp(self) -> kfp.Client:
        with self._lock:
            if self._client is None:
                import kfp

                settings = self._settings

                # kfp's healthz check runs in the constructor and tries 5 times, 5 s apart,
                # on any HTTP error (a proxy's 502): once here, and `call` retries within
                # retry_seconds. The healthz answer ({"commit_sha", "tag_name",
                # "multi_user", "pipeline_store"}, apiserver main.go) says whether the
                # installation is multi-user.
                class Client(kfp.Client):  # type: ignore[misc]  # kfp is untyped
                    def get_kfp_healthz(self, sleep_duration: int = 0) -> Any:
                        return self._healthz_api.healthz_service_get_healthz()

                with warnings.catch_warnings():
                    # "This client only works with Kubeflow Pipeline v2.0.0-beta.2 and later".
                    warnings.simplefilter("ignore", FutureWarning)
                    self._client = Client(
                        host=settings.host,
                        existing_token=settings.token or None,
                        cookies=settings.cookie or None,
                        namespace=settings.namespace or DEFAULT_NAMESPACE,
                        ui_host=settings.ui_url or None,
                    )
            return self._client

    async def call(self, what: str, request: Callable[[kfp.Client, float], T]) -> T:
        """Runs `request(client, timeout)` with retries.

        Raises:
            Unavailable: transient failures (unreachable, 429, 5xx, an answer that is not
                the KFP API) went on for retry_seconds.
            KfpRefused: any other HTTP error; `status` is its HTTP status.
        """
        import kfp_server_api

        timeout = self._settings.request_timeout_seconds
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_transient),
                wait=wait_exponential_jitter(multiplier=0.2, jitter=0.2, max=5.0),
                stop=stop_after_delay(self._settings.retry_seconds),
                before_sleep=_log_retry(what),
                reraise=True,
            ):
                with attempt:
                    return await asyncio.to_thread(lambda: request(self._kfp(), timeout))
        except Exception as exc:
            where = f"Kubeflow Pipelines at {self._settings.host}"
            if _transient(exc):
                raise Unavailable(
                    f"{where} is unavailable ({what}): {_describe(exc)}",
                    reason="BACKEND_UNAVAILABLE",
                ) from exc
            if isinstance(exc, kfp_server_api.ApiException):
                raise KfpRefused(
                    f"{where} refused {what}: {_describe(exc)}", status=exc.status
                ) from exc
            raise
        raise AssertionError("unreachable: tenacity either returns or raises")

    def run_url(self, kfp_run_id: str) -> str:
        base = (self._settings.ui_url or self._settings.host).rstrip("/")
        return f"{base}/#/runs/details/{kfp_run_id}"


@dataclass
class _Tracked:
    """A run this replica holds the lease of."""

    pipeline: Pipeline | None
    """The pipeline version the run was created with; None when this replica lacks it."""
    shape: IrShape | None
    """Its IR's tasks; None until known (from KFP when this replica lacks the pipeline)."""


class KubeflowBackend(Backend):
    """Runs pipelines on KFP.

    `images` is the images lock, read once when the server starts (server.py): a release
    changes images/images.lock.json and comes with a redeploy, so a running replica never
    needs to see a newer lock, and every upload of one replica pins the same digests.
    """

    name = "kubeflow"

    def __init__(
        self,
        settings: KubeflowSettings,
        store: RunStore,
        leases: RunLeases,
        pipelines: Callable[[str], Pipeline],
        *,
        images: ImageLock,
        api: KfpApi | None = None,
        env_of_image: Callable[[str], tuple[str, ...]] | None = None,
    ) -> None:
        self._settings = settings
        self._images = images
        self._env_of_image = env_of_image or _declares_nothing
        self._platforms: dict[str, dict[str, Any] | None] = {}
        """Pinned IR hash -> the platform spec uploaded with it."""
        # Read only (a run's KFP id and state): what the poller learns goes to the sink.
        self._store = store
        self._leases = leases
        self._pipelines = pipelines
        self._api = api or KfpApi(settings)
        self._tracked: dict[str, _Tracked] = {}
        self._creating: set[str] = set()
        self._terminated: set[str] = set()
        """Runs whose KFP run this replica terminated (KFP accepted it)."""
        self._versions: dict[str, tuple[str, str]] = {}
        """Pinned IR hash -> (KFP pipeline id, version id)."""
        self._pinned: dict[tuple[str, bool], Pipeline] = {}
        """(Catalog IR hash, caching off) -> the pipeline as uploaded (see `pinned`)."""
        self._experiment_id = ""
        self._setup_lock = asyncio.Lock()
        self._loop: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._polls = asyncio.Semaphore(settings.max_parallel_polls)

    def active_runs(self) -> int:
        return len(self._tracked)

    def check_runnable(
        self, pipeline: Pipeline, parameters: Mapping[str, Any] | None = None
    ) -> None:
        # KFP installs packages_to_install and reads importer URIs itself.
        self.pinned(pipeline)

    def pinned(self, pipeline: Pipeline, *, disable_cache: bool = False) -> Pipeline:
        """The pipeline as uploaded to KFP: its IR with every image pinned by the lock's
        digest, and the hash of that IR as its version (computed like the catalog's, so
        re-pinning an image after a release gives a new KFP pipeline version). With
        disable_cache (a run's Run.disable_cache), every task's caching is off as well
        (`without_caching`): a KFP pipeline version of its own.

        Raises:
            FailedPrecondition: IMAGES_NOT_RELEASED, naming the images to release.
        """
        known = self._pinned.get((pipeline.version, disable_cache))
        if known is None:
            try:
                spec = pin_images(pipeline.spec, self._images)
            except ImageLockError as exc:
                details = str(exc).removeprefix("cannot pin images: ")
                raise FailedPrecondition(
                    f"{pipeline.name} cannot run on Kubeflow: images not released:"
                    f" {', '.join(exc.unreleased)}. Release them with `skit-release release"
                    f" {' '.join(exc.unreleased)}` (it records their digests in {LOCK_PATH})"
                    " and redeploy the service with that lock."
                    f" Details: {details}",
                    reason="IMAGES_NOT_RELEASED",
                ) from None
            if disable_cache:
                spec = without_caching(spec)
            platform = platform_spec(
                pipeline.name,
                declared_env(spec, self._env_of_image),
                self._settings.step_secrets,
            )
            # The platform spec is part of what is uploaded: a new secret mapping makes
            # a new KFP pipeline version.
            version = ir_version(
                spec if platform is None else {"pipelineSpec": spec, "platformSpec": platform}
            )
            known = replace(pipeline, spec=spec, version=version)
            self._platforms[version] = platform
            # Keyed by the catalog's version: the lock does not change while this runs.
            self._pinned[pipeline.version, disable_cache] = known
        return known

    def tracked_runs(self) -> list[str]:
        """The runs this replica polls."""
        return sorted(self._tracked)

    def start(self, sink: RunSink, *, background: bool = True) -> None:
        """Starts this replica's poll loop; progress of every run it polls goes to `sink`
        (also runs it takes over from a replica that died). background=False only hands
        over the sink: the caller runs the rounds (`poll_once`), as tests of a replica that
        stops do."""
        super().start(sink)
        if background and self._loop is None:
            loop = asyncio.get_running_loop()
            self._loop = loop.create_task(self._poll_forever(), name="kubeflow-poller")
            # Leases are renewed on their own clock: a poll that is retrying a slow or
            # failing KFP must not let this live replica's leases expire.
            self._renewer = loop.create_task(self._renew_forever(), name="kubeflow-leases")

    async def shutdown(self) -> None:
        for task in (self._loop, self._renewer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._loop = self._renewer = None
        owned = list(self._tracked)
        self._tracked.clear()
        try:
            # The runs go on in Kubeflow: let another replica pick them up right away.
            await self._leases.hand_over(owned)
        except Exception:
            logger.exception("handing over %s runs failed; they move when leases expire", owned)

    # Submit and cancel

    async def submit(self, run: Run, pipeline: Pipeline) -> None:
        if not await self._leases.acquire(run.id):
            logger.info("%s is followed by another replica", run.name, extra={"run": run.id})
            return
        self._track(run.id, pipeline)
        if not run.backend_run_id:
            # Tracked (so its lease is renewed) but not polled until the KFP run exists.
            self._creating.add(run.id)
            try:
                await self._create(run, pipeline)
            except BaseException:
                self._tracked.pop(run.id, None)
                await self._leases.release(run.id)
                raise
            finally:
                self._creating.discard(run.id)
        self._wake.set()

    async def resume_cancelling(self, run: Run, pipeline: Pipeline | None) -> None:
        # The KFP run may still go on (the replica that stored CANCELLING may have died
        # before terminating it): its poller terminates it, and reports CANCELLED only
        # once KFP has stopped it.
        if not await self._leases.acquire(run.id):
            logger.info("%s is followed by another replica", run.name, extra={"run": run.id})
            return
        self._track(run.id, pipeline)
        self._wake.set()

    async def cancel(self, run_id: str) -> None:
        run = await self._store.get_run(run_id)
        if not run.backend_run_id:
            # Not on Kubeflow yet; should its create still finish, the poller terminates it.
            await self.sink.run_cancelled(run_id)
            return
        try:
            await self._terminate(run)
        except Unavailable:
            logger.warning(
                "cannot terminate %s now; its poller keeps trying", run.name, exc_info=True
            )

    async def _terminate(self, run: Run) -> None:
        kfp_id = run.backend_run_id
        try:
            await self._api.call(
                "terminate_run",
                lambda c, t: c.runs.run_service_terminate_run(kfp_id, _request_timeout=t),
            )
        except KfpRefused as exc:
            if exc.status != HTTPStatus.BAD_REQUEST:
                raise
            # run_store.go TerminateRun: only a PENDING/RUNNING/PAUSED run can be
            # terminated; INVALID_ARGUMENT "Failed to terminate a run <id>. Row not
            # found" says it has just ended (or is CANCELING already). Its poller reports
            # how it ended.
            logger.info(
                "Kubeflow run %s of %s is not running any more: %s",
                kfp_id,
                run.name,
                exc.message,
                extra={"run": run.id},
            )
            self._wake.set()
            return
        self._terminated.add(run.id)
        logger.info("terminating Kubeflow run %s of %s", kfp_id, run.name, extra={"run": run.id})

    def _track(self, run_id: str, pipeline: Pipeline | None) -> None:
        if run_id not in self._tracked:
            shape = IrShape.of(pipeline.spec) if pipeline is not None else None
            self._tracked[run_id] = _Tracked(pipeline, shape)

    async def _untrack(self, run_id: str) -> None:
        self._terminated.discard(run_id)
        if self._tracked.pop(run_id, None) is not None:
            await self._leases.release(run_id)

    # Creating the KFP run

    async def _create(self, run: Run, pipeline: Pipeline) -> None:
        pinned = self.pinned(pipeline, disable_cache=run.disable_cache)
        pipeline_id, version_id = await self._pipeline_version(pipeline, pinned)
        experiment_id = await self._experiment()
        created = await self._api.call(
            "create_run",
            lambda c, t: self._find_or_create_run(
                c, t, run, experiment_id, pipeline_id, version_id
            ),
        )
        await self.sink.backend_run_assigned(
            run.id, created.run_id, self._api.run_url(created.run_id)
        )

    def _find_or_create_run(
        self,
        client: kfp.Client,
        timeout: float,
        run: Run,
        experiment_id: str,
        pipeline_id: str,
        version_id: str,
    ) -> kfp_server_api.V2beta1Run:
        """One attempt: a KFP run named after ours is ours (an earlier attempt, or another
        replica, created it); otherwise it is created now."""
        import kfp_server_api

        found = client.runs.run_service_list_runs(
            experiment_id=experiment_id,
            filter=_filter_by_name(run.id),
            page_size=1,
            _request_timeout=timeout,
        )
        if found.runs:
            _required(found.runs[0].run_id, "list_runs", "run_id")
            return found.runs[0]
        body = kfp_server_api.V2beta1Run(
            display_name=run.id,
            description=f"skit-pipelines {run.name} of pipelines/{run.pipeline}",
            experiment_id=experiment_id,
            pipeline_version_reference=kfp_server_api.V2beta1PipelineVersionReference(
                pipeline_id=pipeline_id, pipeline_version_id=version_id
            ),
            runtime_config=kfp_server_api.V2beta1RuntimeConfig(
                parameters=dict(run.parameters),
                pipeline_root=self._settings.pipeline_root or None,
            ),
        )
        created = client.runs.run_service_create_run(body, _request_timeout=timeout)
        _required(created.run_id, "create_run", "run_id")
        return created

    async def _experiment(self) -> str:
        async with self._setup_lock:
            if not self._experiment_id:
                self._experiment_id = await self._api.call(
                    "experiment", self._find_or_create_experiment
                )
            return self._experiment_id

    def _find_or_create_experiment(self, client: kfp.Client, timeout: float) -> str:
        import kfp_server_api

        name, namespace = self._settings.experiment, self._settings.namespace or None

        def find() -> str | None:
            listed = client.experiments.experiment_service_list_experiments(
                filter=_filter_by_name(name), namespace=namespace, _request_timeout=timeout
            )
            if not listed.experiments:
                return None
            return _required(listed.experiments[0].experiment_id, "experiments", "experiment_id")

        experiment_id = find()
        if experiment_id is None:
            try:
                experiment_id = _required(
                    client.experiments.experiment_service_create_experiment(
                        kfp_server_api.V2beta1Experiment(display_name=name, namespace=namespace),
                        _request_timeout=timeout,
                    ).experiment_id,
                    "create_experiment",
                    "experiment_id",
                )
            except kfp_server_api.ApiException as exc:
                # Another replica created it a moment ago.
                experiment_id = find()
                if exc.status != 409 or experiment_id is None:
                    raise
        return experiment_id

    async def _pipeline_version(self, pipeline: Pipeline, pinned: Pipeline) -> tuple[str, str]:
        """The KFP pipeline and version ids of the pinned IR, uploading it the first time."""
        async with self._setup_lock:
            known = self._versions.get(pinned.version)
            if known is None:
                known = await self._api.call(
                    "pipeline upload", lambda c, t: self._find_or_upload(c, t, pipeline, pinned)
                )
                self._versions[pinned.version] = known
            return known

    def _find_or_upload(
        self, client: kfp.Client, timeout: float, pipeline: Pipeline, pinned: Pipeline
    ) -> tuple[str, str]:
        import kfp_server_api

        pipeline_id = self._find_pipeline(client, timeout, pipeline.id)
        if pipeline_id is None:
            try:
                pipeline_id = _required(
                    client.pipelines.pipeline_service_create_pipeline(
                        kfp_server_api.V2beta1Pipeline(
                            display_name=pipeline.id,
                            description=pipeline.description or pipeline.display_name,
                            namespace=self._settings.namespace or None,
                        ),
                        _request_timeout=timeout,
                    ).pipeline_id,
                    "create_pipeline",
                    "pipeline_id",
                )
            except kfp_server_api.ApiException as exc:
                # Another replica created it a moment ago.
                pipeline_id = self._find_pipeline(client, timeout, pipeline.id)
                if exc.status != 409 or pipeline_id is None:
                    raise
        name = version_name(pinned)
        version_id = self._find_version(client, timeout, pipeline_id, name)
        if version_id is None:
            with tempfile.TemporaryDirectory() as tmp:
                package = Path(tmp) / f"{pipeline.id}.yaml"
                documents: list[Any] = [dict(pinned.spec)]
                if self._platforms.get(pinned.version) is not None:
                    documents.append(self._platforms[pinned.version])
                package.write_text(yaml.safe_dump_all(documents, sort_keys=False))
                try:
                    version_id = _required(
                        client.pipeline_uploads.upload_pipeline_version(
                            str(package),
                            name=name,
                            pipelineid=pipeline_id,
                            # The catalog's version is what our runs record.
                            description=f"{pipeline.id} {pipeline.version}, images pinned",
                            _request_timeout=timeout,
                        ).pipeline_version_id,
                        "upload_pipeline_version",
                        "pipeline_version_id",
                    )
                except kfp_server_api.ApiException as exc:
                    version_id = self._find_version(client, timeout, pipeline_id, name)
                    if exc.status != 409 or version_id is None:
                        raise
            logger.info("uploaded %s version %s to Kubeflow", pipeline.id, name)
        return pipeline_id, version_id

    def _find_pipeline(self, client: kfp.Client, timeout: float, name: str) -> str | None:
        listed = client.pipelines.pipeline_service_list_pipelines(
            filter=_filter_by_name(name),
            namespace=self._settings.namespace or None,
            page_size=1,
            _request_timeout=timeout,
        )
        if not listed.pipelines:
            return None
        return _required(listed.pipelines[0].pipeline_id, "list_pipelines", "pipeline_id")

    @staticmethod
    def _find_version(
        client: kfp.Client, timeout: float, pipeline_id: str, name: str
    ) -> str | None:
        listed = client.pipelines.pipeline_service_list_pipeline_versions(
            pipeline_id, filter=_filter_by_name(name), page_size=1, _request_timeout=timeout
        )
        versions = listed.pipeline_versions or []
        if not versions:
            return None
        return _required(versions[0].pipeline_version_id, "list_versions", "pipeline_version_id")

    # Polling

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:
                logger.exception("Kubeflow poll round failed; trying again")
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as the event is set, and shutdown would wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.poll_seconds):
                    await self._wake.wait()
            self._wake.clear()

    async def _renew_forever(self) -> None:
        interval = self._settings.lease_seconds / _RENEWALS_PER_LEASE
        while True:
            try:
                await self._renew()
            except Exception:
                logger.warning("renewing Kubeflow run leases failed; trying again", exc_info=True)
            await asyncio.sleep(interval)

    async def _renew(self) -> None:
        requested = list(self._tracked)
        held = await self._leases.renew(requested)
        for lost in set(requested) - held:
            logger.warning("lost the lease of runs/%s; another replica follows it now", lost)
            self._tracked.pop(lost, None)

    async def poll_once(self) -> None:
        """One round: renew leases, take over orphaned runs, poll every run held."""
        await self._renew()
        for run_id in await self._leases.claim_expired(limit=self._settings.max_parallel_polls):
            await self._adopt(run_id)
        await asyncio.gather(*(self._poll_guarded(run_id) for run_id in list(self._tracked)))

    async def _adopt(self, run_id: str) -> None:
        try:
            run = await self._store.get_run(run_id)
        except NotFound:
            await self._leases.release(run_id)
            return
        try:
            pipeline: Pipeline | None = self._pipelines(run.pipeline)
        except NotFound:
            pipeline = None
        if pipeline is not None and pipeline.version != run.pipeline_version:
            # Its IR is on Kubeflow already; polling it needs none of ours.
            pipeline = None
        logger.info("taking over %s from a replica that stopped", run.name, extra={"run": run_id})
        self._track(run_id, pipeline)

    async def _poll_guarded(self, run_id: str) -> None:
        async with self._polls:
            try:
                await self._poll(run_id)
            except Exception:
                logger.warning("polling runs/%s failed; trying again", run_id, exc_info=True)

    async def _poll(self, run_id: str) -> None:

        tracked = self._tracked.get(run_id)
        sink = self.sink
        if tracked is None or run_id in self._creating:
            return
        run = await self._store.get_run(run_id)
        if not run.backend_run_id:
            if run.state.terminal or run.state is RunState.CANCELLING:
                if not run.state.terminal:
                    await sink.run_cancelled(run_id)
                await self._untrack(run_id)
                return
            # The replica that submitted it died before the KFP run existed.
            if tracked.pipeline is None:
                await sink.run_failed(
                    run_id,
                    ErrorInfo(
                        code=Code.FAILED_PRECONDITION,
                        message=f"pipeline version {run.pipeline_version} is no longer available",
                        reason="PIPELINE_VERSION_GONE",
                    ),
                )
                await self._untrack(run_id)
                return
            try:
                await self._create(run, tracked.pipeline)
            except FailedPrecondition as exc:
                # This replica's lock lacks an image the submitting replica's had.
                await sink.run_failed(
                    run_id,
                    ErrorInfo(
                        code=Code.FAILED_PRECONDITION, message=exc.message, reason=exc.reason
                    ),
                )
                await self._untrack(run_id)
                return
            run = await self._store.get_run(run_id)
        kfp_id = run.backend_run_id
        try:
            remote = await self._api.call("get_run", lambda c, t: _get_run(c, t, kfp_id))
        except KfpRefused as exc:
            if exc.status != HTTPStatus.NOT_FOUND:
                raise
            await sink.run_failed(
                run_id,
                ErrorInfo(
                    code=Code.NOT_FOUND,
                    message=f"Kubeflow run {kfp_id} no longer exists",
                    reason="KFP_RUN_NOT_FOUND",
                ),
            )
            await self._untrack(run_id)
            return
        state = remote.state or "RUNTIME_STATE_UNSPECIFIED"
        if state in _ACTIVE_KFP_STATES and (run.state is RunState.CANCELLING or run.state.terminal):
            await self._terminate(run)
        await self._report(run, remote, tracked, sink)

    async def _shape(self, remote: kfp_server_api.V2beta1Run, tracked: _Tracked) -> IrShape:
        """The run's IR tasks from the pipeline version KFP ran (this replica's catalog
        lacks the version); no tasks when KFP cannot say, and asked again next poll."""
        reference = remote.pipeline_version_reference
        spec: Mapping[str, Any] = remote.pipeline_spec or {}
        if not spec and reference is not None and reference.pipeline_version_id:
            version = await self._api.call(
                "get_pipeline_version",
                lambda c, t: c.pipelines.pipeline_service_get_pipeline_version(
                    reference.pipeline_id, reference.pipeline_version_id, _request_timeout=t
                ),
            )
            spec = version.pipeline_spec or {}
        # An upload with a platform spec comes back as {"pipeline_spec", "platform_spec"}.
        spec = spec.get("pipeline_spec", spec)
        if not spec:
            return IrShape.of({})
        tracked.shape = IrShape.of(spec)
        return tracked.shape

    async def _collect(
        self, remote: kfp_server_api.V2beta1Run, shape: IrShape, tasks: RunTasks
    ) -> Collected | None:
        """The outputs of the succeeded steps `tasks`, from the pipeline root; None when
        that root cannot be read (KFP's default root or an unreadable scheme)."""
        root = self._settings.pipeline_root
        blobs = blobs_for(root, self._settings.s3_endpoint_url) if root else None
        if blobs is None or not tasks.steps:
            return None
        try:
            return await asyncio.to_thread(collect, blobs, root, remote.run_id, shape, tasks)
        except Exception:
            # Outputs are a courtesy of the artifact store: the run still succeeded.
            logger.warning(
                "cannot list the outputs of Kubeflow run %s", remote.run_id, exc_info=True
            )
            return None

    async def read_logs(
        self, run: Run, step: str, attempt: int, still_writing: Callable[[], bool]
    ) -> AsyncIterator[LogLine]:
        logs_url = self._settings.logs_url
        blobs = blobs_for(logs_url, self._settings.s3_endpoint_url) if logs_url else None
        if blobs is None:
            raise self._logs_unavailable(run, step, "Argo's log archive is not configured")
        if not run.backend_run_id:
            raise self._logs_unavailable(run, step, "the run has not started on Kubeflow")
        kfp_id = run.backend_run_id
        remote = await self._api.call("get_run", lambda c, t: _get_run(c, t, kfp_id))
        try:
            pipeline: Pipeline | None = self._pipelines(run.pipeline)
        except NotFound:
            pipeline = None
        if pipeline is not None and pipeline.version != run.pipeline_version:
            pipeline = None
        tracked = _Tracked(pipeline, IrShape.of(pipeline.spec) if pipeline else None)
        shape = tracked.shape or await self._shape(remote, tracked)
        tasks = map_steps(shape, nodes_from_details(_task_details(remote)))
        mapped = next((m for m in tasks.steps if m.step.name == step), None)
        pod = tasks.pod_name(mapped) if mapped is not None else ""
        if mapped is None or not pod:
            raise self._logs_unavailable(run, step, "no pod of it ran on Kubeflow")
        created = (remote.created_at or run.create_time).astimezone(UTC)
        uri = log_uri(
            logs_url,
            self._settings.logs_key_format,
            workflow=tasks.workflow,
            namespace=self._settings.namespace or DEFAULT_NAMESPACE,
            pod=pod,
            created=created,
        )
        data = await asyncio.to_thread(blobs.read, uri)
        if data is None:
            # Argo archives a log when its pod ends.
            raise self._logs_unavailable(run, step, f"nothing is archived at {uri} yet")
        when = mapped.step.end_time or created
        for text in data.decode(errors="replace").splitlines():
            yield LogLine(time=when, stream="stdout", text=text, attempt=mapped.step.attempt)

    def _logs_unavailable(self, run: Run, step: str, why: str) -> FailedPrecondition:
        ui_url = run.backend_run_url or self._api.run_url(run.backend_run_id)
        return FailedPrecondition(
            f"the log of step {step} of {run.name} cannot be read here ({why}); see it in"
            f" the Kubeflow UI: {ui_url}",
            reason="LOGS_UNAVAILABLE",
            metadata={"ui_url": ui_url},
        )

    async def _report(
        self,
        run: Run,
        remote: kfp_server_api.V2beta1Run,
        tracked: _Tracked,
        sink: RunSink,
    ) -> None:
        state = remote.state or "RUNTIME_STATE_UNSPECIFIED"
        if run.state.terminal:
            if state not in _ACTIVE_KFP_STATES:
                await self._untrack(run.id)
            return
        if state not in ("PENDING", "RUNTIME_STATE_UNSPECIFIED") and run.state is RunState.QUEUED:
            await sink.run_started(run.id)
        # A terminated run ends FAILED on KFP, after CANCELING (kubeflow/pipelines#1040;
        # run_store.go TerminateRun): terminated through CancelRun or the KFP UI, its
        # history shows CANCELING, or this replica's terminate was accepted. A run that
        # failed on its own before a cancel reached it stays FAILED.
        cancelled = state == "CANCELED" or (
            state == "FAILED"
            and (
                _was_canceling(remote)
                or (run.state is RunState.CANCELLING and run.id in self._terminated)
            )
        )
        ended_as = None
        if cancelled:
            ended_as = StepState.CANCELLED
        elif state in _ENDED_KFP_STATES:
            ended_as = StepState.SKIPPED
        shape = tracked.shape or await self._shape(remote, tracked)
        tasks = map_steps(shape, nodes_from_details(_task_details(remote)), ended_as=ended_as)
        known = {step.name: step for step in run.steps}
        # Outputs are listed once, as a step succeeds (the launcher uploads them before
        # its pod ends), so they come in the revision of that change, as locally.
        steps = [_keeping_outputs(m.step, known.get(m.step.name)) for m in tasks.steps]
        finished = [
            m
            for m, step in zip(tasks.steps, steps, strict=True)
            if step.state is StepState.SUCCEEDED and _newly(step, known.get(step.name))
        ]
        collected = await self._collect(remote, shape, replace(tasks, steps=tuple(finished)))
        for mapped, step in zip(tasks.steps, steps, strict=True):
            if collected is not None and mapped in finished:
                step = collected.step(mapped)
            if known.get(step.name) != step:
                await sink.step_changed(run.id, step)
            known[step.name] = step
        if cancelled:
            await sink.run_cancelled(run.id)
        elif state in ("SUCCEEDED", "SKIPPED"):
            artifacts = {name: step.output_artifacts for name, step in known.items()}
            await sink.run_succeeded(run.id, run_outputs(shape, artifacts), {})
        elif state == "FAILED":
            failed = [m.step.name for m in tasks.steps if m.step.state is StepState.FAILED]
            await sink.run_failed(run.id, _run_error(remote, failed))
        elif state == "CANCELING" and run.state is not RunState.CANCELLING:
            # Cancelled in the KFP UI rather than through CancelRun.
            await sink.cancel_requested_remotely(run.id)
            return
        else:
            return
        await self._untrack(run.id)


def _keeping_outputs(step: Step, before: Step | None) -> Step:
    """`step` as mapped now, with the outputs found when it succeeded (task details carry
    none)."""
    if before is None or not before.output_artifacts:
        return step
    return replace(step, output_artifacts=before.output_artifacts)


def _newly(step: Step, before: Step | None) -> bool:
    return before is None or before.state is not step.state


def _required(value: str | None, call: str, field: str) -> str:
    if not value:
        raise KfpBadAnswer(f"the answer to {call} has no {field}: it is not from the KFP API")
    return value


def _get_run(client: kfp.Client, timeout: float, kfp_id: str) -> kfp_server_api.V2beta1Run:
    remote = client.runs.run_service_get_run(kfp_id, _request_timeout=timeout)
    _required(remote.run_id, "get_run", "run_id")
    return remote


def _run_error(remote: kfp_server_api.V2beta1Run, failed: list[str]) -> ErrorInfo:
    """Why the KFP run failed. A 2.17 server never sets run.error (api_converter.go
    toApiRun) and task details carry none: the failed steps are named instead."""
    error = remote.error
    message = (error.message if error else "") or "the Kubeflow run failed"
    if failed and not (error and error.message):
        message += f" (failed: {', '.join(failed)}; their logs say why)"
    # Without KFP's own code, a named failed step makes it a step failure, coded as the
    # local executor codes one (domain.STEP_FAILED_CODE); with neither, it is unknown.
    fallback = STEP_FAILED_CODE if failed else Code.UNKNOWN
    return ErrorInfo(
        code=(error.code if error else Code.OK) or fallback,
        message=message,
        reason="KFP_RUN_FAILED",
    )


def _declares_nothing(image: str) -> tuple[str, ...]:
    return ()


def _task_details(remote: kfp_server_api.V2beta1Run) -> list[Any]:
    return list(remote.run_details.task_details or ()) if remote.run_details else []


def _was_canceling(remote: kfp_server_api.V2beta1Run) -> bool:
    """KFP's state history shows CANCELING (terminated in the KFP UI, say, between two
    polls of ours)."""
    return any(status.state == "CANCELING" for status in remote.state_history or ())
