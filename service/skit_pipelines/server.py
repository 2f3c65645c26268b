"""Wires the service together (implementations chosen here, once) and serves it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlparse

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

# health.aio, which grpc-stubs does not know (it types only the sync servicer).
from grpc_health.v1._async import HealthServicer as AsyncHealthServicer

from skit.pipelines.v1 import pipeline_service_pb2
from skit_pipelines import jsonlog, reflection
from skit_pipelines.auth import AuthInterceptor, TokenFile
from skit_pipelines.backends.base import Backend
from skit_pipelines.backends.deferred import DeferredBackend
from skit_pipelines.catalog import Catalog
from skit_pipelines.config import ConfigError, ServerConfig
from skit_pipelines.errors import FailedPrecondition, NotFound
from skit_pipelines.memory import MemoryReclaimer
from skit_pipelines.runs import RunController
from skit_pipelines.servicer import PipelineServicer, add_to_server
from skit_pipelines.store.base import RunStore
from skit_pipelines.store.sqlite import SqliteRunStore, StoreInUse
from skit_pipelines.telemetry import Telemetry

if TYPE_CHECKING:
    from skit_pipelines.artifact_imports import ImportPolicy
    from skit_pipelines.artifacts import ArtifactStore
    from skit_pipelines.backends.local_checks import LocalRunChecks
    from skit_pipelines.console import ConsoleServer
    from skit_pipelines.imagelock import ImageLock
    from skit_pipelines.notifications.controller import SubscriptionController
    from skit_pipelines.notifications.worker import DeliveryWorker
    from skit_pipelines.retention import RetentionSweeper
    from skit_pipelines.schedules import ScheduleController, Scheduler

logger = logging.getLogger(__name__)

SERVICE_NAME = pipeline_service_pb2.DESCRIPTOR.services_by_name["PipelineService"].full_name


_MAX_PENDING_CALLS = 20_000


def _grpc_options(config: ServerConfig) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", config.max_message_bytes),
        # The transport's ceiling: up to it, the servicer's parsers refuse a request over
        # max_request_bytes with INVALID_ARGUMENT naming its largest field.
        (
            "grpc.max_receive_message_length",
            max(config.max_message_bytes, config.max_request_bytes),
        ),
        # Long-lived WatchRun streams: ping idle connections and let clients ping us.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        # gRPC cancels calls beyond 1,000 not yet picked up by the event loop: a burst of
        # watchers reconnecting after a restart would get CANCELLED, which clients do not
        # retry.
        ("grpc.server.max_pending_requests", _MAX_PENDING_CALLS),
        ("grpc.server.max_pending_requests_hard_limit", _MAX_PENDING_CALLS),
    ]


def prepare_config(config: ServerConfig) -> ServerConfig:
    """With demo data on (the embedded default), creates the demo databases on first start
    and hands their URLs to the steps, except where the configuration names its own."""
    if not config.demo_data:
        return config
    from skit_demo import ensure_demo_data

    demo_env = ensure_demo_data(config.demo_root)
    return replace(config, step_env={**demo_env, **config.step_env})


_T = TypeVar("_T")


class LaterPart(Generic[_T]):
    """A part of the service that no call needs before SERVING, built at its first use
    (or, for the schedules' and the subscriptions' parts, right after SERVING by
    Application.start, whichever comes first): its modules stay off the start. Those of
    schedules, notifications and the local run checks define dozens of dataclasses, each
    ~0.5 ms to create.

    Args:
        build: Builds the part, on the event loop; quick once `imports` are imported.
        imports: Modules `build` needs, which Application.start imports in a thread after
            SERVING so the event loop goes on answering meanwhile.
    """

    def __init__(self, build: Callable[[], _T], *, imports: tuple[str, ...] = ()) -> None:
        self._build = build
        self.imports = imports
        self.built: _T | None = None
        """The part, once built."""

    def __call__(self) -> _T:
        if self.built is None:
            self.built = self._build()
        return self.built


@dataclass
class Application:
    config: ServerConfig
    server: grpc.aio.Server
    port: int
    controller: RunController
    backend: Backend
    store: RunStore
    health: AsyncHealthServicer
    telemetry: Telemetry = field(default_factory=Telemetry)
    health_only: HealthOnlyServer | None = None
    """The plaintext health port (config.health_port), if any."""
    retention: RetentionSweeper | None = None
    """Deletes old finished runs in the background (config.retention_days), if on."""
    scheduling: LaterPart[tuple[ScheduleController, Scheduler]] | None = None
    """The Schedule RPCs' controller, and the Scheduler making the runs of schedules'
    ticks (one replica at a time on PostgreSQL)."""
    notifications: LaterPart[tuple[SubscriptionController, DeliveryWorker]] | None = None
    """The Subscription RPCs' controller, and the worker sending their notifications
    (each by exactly one replica)."""
    console: ConsoleServer | None = None
    """The web console on config.console_port, if on."""
    reclaimer: MemoryReclaimer | None = None
    """Gives memory back after bursts of watch streams; prepared after SERVING."""
    _later: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    async def start(self) -> None:
        self.telemetry.start()
        await self.controller.resume()
        if self.retention is not None:
            self.retention.start()
        await self.server.start()
        if self.health_only is not None:
            await self.health_only.server.start()
            logger.info("serving health alone on %s:%s", self.config.host, self.health_only.port)
        if self.console is not None and self.config.console_port is not None:
            await self.console.start(self.config.console_port)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        logger.info("serving PipelineService on %s", self.address)
        if isinstance(self.backend, DeferredBackend):
            # Built now rather than at the first run: a starting executor also stops the
            # steps a killed server left running.
            self.backend.load()
        self._later = asyncio.get_running_loop().create_task(
            self._start_later_parts(), name="later-parts"
        )
        self._later.add_done_callback(_log_failure)

    async def _start_later_parts(self) -> None:
        if self.reclaimer is not None:
            await asyncio.to_thread(self.reclaimer.prepare)
        # The scheduler and the worker start from what the store holds (schedules'
        # cursors, subscriptions' feed cursors): the changes made before they run are
        # theirs all the same.
        parts = [part for part in (self.scheduling, self.notifications) if part is not None]
        for part in parts:
            for module in part.imports:
                await asyncio.to_thread(importlib.import_module, module)
        if self.scheduling is not None:
            self.scheduling()[1].start()
        if self.notifications is not None:
            self.notifications()[1].start()
        if isinstance(self.backend, DeferredBackend):
            with contextlib.suppress(Exception):  # logged where it failed
                # Shielded: stopping cancels this task, not the build (shutdown awaits it).
                await asyncio.shield(self.backend.load())

    @property
    def later_parts(self) -> asyncio.Task[None] | None:
        """Building what start() left for after SERVING (the backend, the schedules' and
        the notifications' parts); done once they are built or have failed."""
        return self._later

    async def stop(self, grace: float | None = None) -> None:
        """Graceful: health NOT_SERVING first, then calls and streams get `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        self.controller.drain()
        # Watch streams never end on their own while runs go on: end them now with
        # UNAVAILABLE so their clients resume elsewhere, instead of waiting out the grace.
        await self.store.hub.close()
        await self.controller.feed.close()
        if self.console is not None:
            await self.console.stop()
        await self.server.stop(self.config.shutdown_grace_seconds if grace is None else grace)
        if self.health_only is not None:
            # Last: probes see NOT_SERVING, not a refused connection, while calls drain.
            await self.health_only.server.stop(None)
        if self.retention is not None:
            await self.retention.stop()
        if self._later is not None:
            self._later.cancel()
            await asyncio.gather(self._later, return_exceptions=True)
        if self.scheduling is not None and self.scheduling.built is not None:
            await self.scheduling.built[1].stop()
        if self.notifications is not None and self.notifications.built is not None:
            # Sends in flight get a few seconds to finish; the rest are cancelled: their
            # claims expire and another replica (or the restart) sends them again.
            await self.notifications.built[1].stop()
        await self.backend.shutdown()
        await self.store.close()
        await self.telemetry.shutdown()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("cannot start the schedules or notifications", exc_info=task.exception())


class ExposureError(ConfigError):
    """The configuration would expose an unauthenticated server beyond this machine."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(config: ServerConfig) -> None:
    if _is_loopback(config.host) or config.tokens_file is not None or config.insecure:
        return
    raise ExposureError(
        f"refusing to listen on {config.host} without authentication: pass --tokens-file"
        " (or, to expose an unauthenticated server knowingly, --insecure)"
    )


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    if config.tls_cert_file is None and config.tls_key_file is None:
        if config.tls_client_ca_file is not None:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if config.tls_cert_file is None or config.tls_key_file is None:
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    client_ca = config.tls_client_ca_file.read_bytes() if config.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(config.tls_key_file.read_bytes(), config.tls_cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


async def create_grpc_server(
    controller: RunController,
    config: ServerConfig,
    telemetry: Telemetry | None = None,
    *,
    schedules: Callable[[], ScheduleController] | None = None,
    subscriptions: Callable[[], SubscriptionController] | None = None,
    reclaimer: MemoryReclaimer | None = None,
) -> tuple[grpc.aio.Server, int, AsyncHealthServicer]:
    """The gRPC server with PipelineService, health (NOT_SERVING until started) and
    reflection, bound to config.host:config.port (port 0 picks one). `schedules` and
    `subscriptions` give their RPCs' controllers (built at the first such call);
    `reclaimer` counts the watch streams (a new one when not given)."""
    # Telemetry first: rejected calls are traced and measured too.
    interceptors = telemetry.server_interceptors(SERVICE_NAME) if telemetry else []
    if config.tokens_file is not None:
        interceptors.append(AuthInterceptor(TokenFile.load(config.tokens_file)))
    server = grpc.aio.server(options=_grpc_options(config), interceptors=interceptors)
    add_to_server(
        PipelineServicer(
            controller,
            max_message_bytes=config.max_message_bytes,
            schedules=schedules,
            subscriptions=subscriptions,
            reclaimer=reclaimer,
        ),
        server,
        max_request_bytes=config.max_request_bytes,
    )
    health_servicer = AsyncHealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, _GenericHandlersOnly(server))
    await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable((SERVICE_NAME, health.SERVICE_NAME), server)
    check_exposure(config)
    address = f"{config.host}:{config.port}"
    credentials = server_credentials(config)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {config.host}:{config.port}")
    return server, port, health_servicer


@dataclass(frozen=True)
class HealthOnlyServer:
    """The plaintext server of grpc.health.v1 alone (--health-port)."""

    server: grpc.aio.Server
    port: int
    """The port it listens on (the one picked when --health-port is 0)."""


class _GenericHandlersOnly:
    """Hands a server only the generic handler of what generated code (grpcio >= 1.63)
    registers. As for PipelineService (servicer.add_to_server), grpc.aio's server loop
    keeps one pending request per registered method and waits on all of them for every
    incoming call: health's two methods would cost every call two more futures."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(
        self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Any]) -> None:
        return None


def create_health_server(
    health_servicer: AsyncHealthServicer, config: ServerConfig
) -> HealthOnlyServer | None:
    """grpc.health.v1 alone, plaintext, on config.health_port: a Kubernetes `grpc:` probe
    speaks no TLS, and health answers without a token on the main port too. It shares
    the main server's health servicer, so it reports the same states."""
    if config.health_port is None:
        return None
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(f"{config.host}:{config.health_port}")
    if port == 0:
        raise OSError(f"cannot listen on {config.host}:{config.health_port}")
    return HealthOnlyServer(server, port)


def check_layout(config: ServerConfig) -> None:
    """The pipelines and images directories exist: outside a checkout (an installed
    package, the image) they must be configured."""
    for path, setting in (
        (config.pipelines_root, "--pipelines-dir (SKIT_PIPELINES_DIR)"),
        (config.images_root, "--images-dir (SKIT_IMAGES_DIR)"),
    ):
        if not path.is_dir():
            raise ConfigError(f"{path} is not a directory: set {setting}")


def _scheme(url: str) -> str:
    # Only the scheme goes into error messages: store URLs may carry passwords.
    return urlparse(url).scheme or url.split(":", 1)[0]


async def open_run_store(config: ServerConfig) -> RunStore:
    """SQLite (the embedded default) or PostgreSQL (shared by replicas)."""
    if config.uses_postgres:
        from skit_pipelines.store.postgres import PostgresRunStore, RetryPolicy

        return await PostgresRunStore.open(
            config.store_url,
            history_limit=config.watch_history_limit,
            change_limit=config.run_change_limit,
            pool_size=config.store_pool_size,
            retry=RetryPolicy(budget_seconds=config.store_retry_seconds),
        )
    if config.store_url and not config.store_url.startswith("sqlite:///"):
        raise ConfigError(
            f"--store must be sqlite:///path or postgresql://..., not {_scheme(config.store_url)}:"
        )
    try:
        return SqliteRunStore(
            config.database_path,
            history_limit=config.watch_history_limit,
            change_limit=config.run_change_limit,
        )
    except StoreInUse as error:
        raise ConfigError(
            f"{error}; stop that server, give this one a --home of its own, or serve from"
            " PostgreSQL (--store postgresql://...) to run several"
        ) from None


def open_artifact_store(config: ServerConfig) -> ArtifactStore:
    """A local directory (the embedded default) or an S3 bucket prefix."""
    # Imported here: only the executor (built after the service answers) needs it.
    from skit_pipelines.artifacts import LocalArtifactStore

    if config.artifacts_url.startswith("s3://"):
        from skit_pipelines.artifacts.s3 import S3ArtifactStore, S3Settings

        return S3ArtifactStore.from_url(
            config.artifacts_url,
            S3Settings(
                endpoint_url=config.s3_endpoint_url,
                multipart_threshold_bytes=config.s3_multipart_bytes,
                multipart_chunk_bytes=config.s3_multipart_bytes,
            ),
        )
    if config.artifacts_url and not config.artifacts_url.startswith("file://"):
        raise ConfigError(
            f"--artifacts must be file:///path or s3://bucket/prefix,"
            f" not {_scheme(config.artifacts_url)}:"
        )
    return LocalArtifactStore(config.artifacts_root)


def replica_id() -> str:
    """This process among the replicas: the owner name of its leases."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


def load_images_lock(config: ServerConfig) -> ImageLock:
    """The images lock the Kubeflow backend pins images with, read once at start (a
    release changes it and comes with a redeploy).

    Raises:
        ConfigError: the file is missing, unreadable or not a valid lock; an empty lock
            is valid (every CreateRun is then refused with IMAGES_NOT_RELEASED).
    """
    from skit_pipelines.imagelock import ImageLockError, load_lock

    path = config.images_lock_path
    where = f"the images lock {path} (--kfp-images-lock, SKIT_KFP_IMAGES_LOCK)"
    # load_lock reads a missing file as an empty lock, which suits a first release; here
    # it would be a wrong path that makes every run fail, so it is refused.
    if not path.is_file():
        raise ConfigError(f"{where} is not a file")
    try:
        return load_lock(path)
    except (OSError, ImageLockError) as error:
        raise ConfigError(f"{where}: {str(error).removeprefix(f'{path}: ')}") from None


def _kubeflow_backend(
    config: ServerConfig, store: RunStore, catalog: Catalog, images: ImageLock
) -> Backend:
    from skit_pipelines.backends.kubeflow import KubeflowBackend, KubeflowSettings
    from skit_pipelines.backends.kubeflow_outputs import KeyFormatError, check_key_format
    from skit_pipelines.backends.kubeflow_platform import SecretMappingError, parse_step_secrets
    from skit_pipelines.images import resolve_image

    try:
        step_secrets = parse_step_secrets(config.kfp_step_secrets)
    except SecretMappingError as error:
        raise ConfigError(f"--kfp-step-secrets (SKIT_KFP_STEP_SECRETS): {error}") from None
    try:
        check_key_format(config.kfp_logs_key_format)
    except KeyFormatError as error:
        raise ConfigError(f"SKIT_KFP_LOGS_KEY_FORMAT: {error}") from None

    def env_of_image(image: str) -> tuple[str, ...]:
        # An image without a folder here declares nothing (as for the local executor).
        try:
            return resolve_image(image, config.images_root).declared_env
        except NotFound:
            return ()

    owner = replica_id()
    settings = KubeflowSettings(
        host=config.kfp_host,
        ui_url=config.kfp_ui_url,
        token=config.kfp_token,
        cookie=config.kfp_cookie,
        namespace=config.kfp_namespace,
        experiment=config.kfp_experiment,
        # KFP writes its artifacts next to ours when they live in S3.
        pipeline_root=config.artifacts_url if config.artifacts_url.startswith("s3://") else "",
        poll_seconds=config.kfp_poll_seconds,
        lease_seconds=config.lease_seconds,
        step_secrets=step_secrets,
        logs_url=config.kfp_logs_url,
        logs_key_format=config.kfp_logs_key_format,
        s3_endpoint_url=config.s3_endpoint_url,
    )
    logger.info("running pipelines on Kubeflow at %s as %s", config.kfp_host, owner)
    backend = KubeflowBackend(
        settings,
        store,
        store.leases(owner, config.lease_seconds),
        catalog.get,
        images=images,
        env_of_image=env_of_image,
    )
    unrunnable = []
    for pipeline in catalog.list():
        try:
            backend.check_runnable(pipeline)
        except FailedPrecondition:
            unrunnable.append(pipeline.id)
    if unrunnable:
        # Not fatal: the other pipelines run, and CreateRun says what to release.
        logger.warning(
            "pipelines %s use images not released in %s, or step variables no secret is"
            " mapped to (--kfp-step-secrets); their runs are refused",
            ", ".join(unrunnable),
            config.images_lock_path,
        )
    return backend


def import_policy(config: ServerConfig) -> ImportPolicy:
    """Where dsl.importer may read on the local executor: the import roots and the
    artifact store."""
    from skit_pipelines.artifact_imports import ImportPolicy

    s3 = config.artifacts_url.startswith("s3://")
    return ImportPolicy(
        roots=tuple(root.resolve() for root in config.import_roots),
        artifacts_root=None if s3 else config.artifacts_root,
        artifacts_url=config.artifacts_url if s3 else "",
    )


def _local_run_checks(config: ServerConfig) -> LocalRunChecks:
    from skit_pipelines.backends.local_checks import LocalRunChecks

    return LocalRunChecks(import_policy(config))


def _local_backend(config: ServerConfig, store: RunStore, telemetry: Telemetry) -> Backend:
    # The executor is imported here so that importing this module (for
    # create_grpc_server) stays light.
    from skit_pipelines.backends.local import LocalBackend, StoreStepCache
    from skit_pipelines.executor import ExecutorConfig, LocalExecutor

    executor = LocalExecutor(
        ExecutorConfig(
            images_root=config.images_root,
            work_root=config.work_root,
            max_parallel_steps=config.max_parallel_steps,
            cancel_grace_seconds=config.cancel_grace_seconds,
            step_env=dict(config.step_env),
            inherited_env=dict(config.inherited_env),
            import_policy=import_policy(config),
        ),
        open_artifact_store(config),
        cache=StoreStepCache(store),
    )
    return LocalBackend(
        executor,
        max_active_runs=config.max_active_runs,
        trace_context=telemetry.step_trace_env if telemetry.tracing else None,
    )


def _replicated_local_backend(
    config: ServerConfig, store: RunStore, catalog: Catalog, telemetry: Telemetry
) -> Backend:
    """The local executor on replicas sharing PostgreSQL: a run executes on the replica
    holding its lease."""
    from skit_pipelines.backends.leased import LeasedBackend

    return LeasedBackend(
        _local_backend(config, store, telemetry),
        store.leases(replica_id(), config.lease_seconds),
        store,
        catalog.get,
        renew_seconds=config.lease_seconds / 3,
    )


async def build_application(
    config: ServerConfig, *, telemetry: Telemetry | None = None
) -> Application:
    """The whole service; `telemetry` replaces the one the configuration asks for."""
    telemetry = telemetry or Telemetry.from_config(config)
    if config.backend not in ("local", "kubeflow"):
        raise ConfigError(f"--backend must be local or kubeflow, not {config.backend!r}")
    if config.backend == "kubeflow" and not config.kfp_host:
        raise ConfigError("--backend kubeflow needs --kfp-host (SKIT_KFP_HOST)")
    if config.retention_days is not None and config.retention_days <= 0:
        raise ConfigError("--retention-days (SKIT_RETENTION_DAYS) must be more than 0")
    # Read before anything is opened or compiled, so a bad lock fails the start at once.
    images = load_images_lock(config) if config.backend == "kubeflow" else {}
    check_layout(config)
    catalog = await asyncio.to_thread(
        Catalog.load,
        config.pipelines_root,
        config.resolved_home / "cache",
        images_root=config.images_root,
    )
    store = await open_run_store(config)
    if config.backend == "kubeflow":
        backend = _kubeflow_backend(prepare_config(config), store, catalog, images)
    elif config.uses_postgres:
        backend = _replicated_local_backend(prepare_config(config), store, catalog, telemetry)
    else:
        # The demo data only the steps read is checked (or generated) after SERVING too.
        prepared = LaterPart(lambda: prepare_config(config))
        local_checks = LaterPart(lambda: _local_run_checks(config))
        backend = DeferredBackend(
            "local",
            lambda: _local_backend(prepared(), store, telemetry),
            imports=("skit_pipelines.backends.local", "skit_pipelines.executor"),
            prepare=prepared,
            check=lambda pipeline, parameters: local_checks().check(pipeline, parameters),
        )
    controller = RunController(
        store,
        catalog,
        backend,
        observer=telemetry,
        max_streams_per_principal=config.max_streams_per_principal,
        limits=config.request_limits,
    )
    # WatchRun streams (and followed step logs), and WatchRuns streams.
    telemetry.count_watchers(lambda: store.hub.watcher_count() + controller.feed.stream_count())
    backend.start(controller)
    retention = None
    if config.retention_days is not None:
        # Imported here: only a configured retention period needs it.
        from skit_pipelines.retention import RetentionSweeper

        retention = RetentionSweeper(controller, store, timedelta(days=config.retention_days))

    scheduling = LaterPart(
        lambda: build_scheduling(config, controller, catalog), imports=SCHEDULING_IMPORTS
    )
    # Checked now: a configuration that cannot send fails the start, not a later call.
    check_notifications(config)
    notifications = LaterPart(
        lambda: build_notifications(config, store), imports=NOTIFICATION_IMPORTS
    )
    reclaimer = MemoryReclaimer()
    server, port, health_servicer = await create_grpc_server(
        controller,
        config,
        telemetry,
        schedules=lambda: scheduling()[0],
        subscriptions=lambda: notifications()[0],
        reclaimer=reclaimer,
    )
    health_only = create_health_server(health_servicer, config)
    console = None
    if config.console_port is not None:
        # Imported here: aiohttp and the pages load only when the console is on.
        from skit_pipelines.console import create_console

        console = create_console(
            controller,
            host=config.host,
            tokens_file=config.tokens_file,
            artifacts=open_artifact_store(config),
        )
    return Application(
        config=config,
        server=server,
        port=port,
        controller=controller,
        backend=backend,
        store=store,
        health=health_servicer,
        telemetry=telemetry,
        health_only=health_only,
        retention=retention,
        scheduling=scheduling,
        notifications=notifications,
        console=console,
        reclaimer=reclaimer,
    )


SCHEDULING_IMPORTS = ("skit_pipelines.schedules", "skit_pipelines.schedule_convert")
"""What build_scheduling and the Schedule RPCs import."""


def build_scheduling(
    config: ServerConfig, controller: RunController, catalog: Catalog
) -> tuple[ScheduleController, Scheduler]:
    """The Schedule RPCs' controller and the scheduler making their runs."""
    from skit_pipelines.schedules import ScheduleController, Scheduler

    scheduler = Scheduler(controller)
    schedules = ScheduleController(
        controller, catalog, limits=config.request_limits, on_change=scheduler.wake
    )
    return schedules, scheduler


NOTIFICATION_IMPORTS = (
    "skit_pipelines.notifications.controller",
    "skit_pipelines.notifications.worker",
    "skit_pipelines.notifications.sinks.slack",
    "skit_pipelines.notifications.sinks.webhook",
    "skit_pipelines.subscription_convert",
)
"""What build_notifications and the Subscription RPCs import."""


def check_notifications(config: ServerConfig) -> None:
    """Raises ConfigError if the notification settings cannot work."""
    if config.notify_retry_base_seconds <= 0 or config.notify_concurrency <= 0:
        raise ConfigError(
            "SKIT_NOTIFY_RETRY_BASE_SECONDS and SKIT_NOTIFY_CONCURRENCY must be more than 0"
        )
    if config.secrets_dir is not None and not config.secrets_dir.is_dir():
        raise ConfigError(
            f"--secrets-dir (SKIT_SECRETS_DIR) {config.secrets_dir} is not a directory"
        )


def build_notifications(
    config: ServerConfig, store: RunStore
) -> tuple[SubscriptionController, DeliveryWorker]:
    """The Subscription RPCs' controller and the worker delivering their notifications,
    with the secrets and sink settings of the configuration."""
    from skit_pipelines.notifications.controller import SubscriptionController
    from skit_pipelines.notifications.model import SlackSink, WebhookSink
    from skit_pipelines.notifications.secrets import Secrets
    from skit_pipelines.notifications.sinks.slack import SlackSender
    from skit_pipelines.notifications.sinks.webhook import WebhookSender
    from skit_pipelines.notifications.worker import DeliverySettings, DeliveryWorker

    check_notifications(config)
    secrets = Secrets(config.secrets_dir, config.secrets)
    worker = DeliveryWorker(
        store,
        {
            SlackSink: SlackSender(secrets, base_url=config.slack_api_url),
            WebhookSink: WebhookSender(secrets),
        },
        settings=DeliverySettings(
            retry_base_seconds=config.notify_retry_base_seconds,
            concurrency=config.notify_concurrency,
            poll_seconds=config.notify_poll_seconds,
        ),
    )
    controller = SubscriptionController(
        store, secrets, limits=config.request_limits, on_change=worker.wake
    )
    return controller, worker


async def _serve(config: ServerConfig) -> None:
    # From the start: the threads that load the executor and the schedules' and
    # notifications' parts right after SERVING hold the GIL against the loop too.
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    app = await build_application(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await app.start()
    # What starting allocated (modules, descriptors, the catalog) lives as long as the
    # process: frozen out of the collector's sight, a full collection stops walking it
    # (~20 ms with kfp loaded) while calls wait. So does what the parts built after
    # SERVING load (the executor, the schedules' and notifications' modules: another
    # ~45,000 objects, ~15 ms more for each full collection).
    gc.freeze()
    if app.later_parts is not None:
        app.later_parts.add_done_callback(lambda _: gc.freeze())
    await stopping.wait()
    logger.info("shutting down; open calls get %ss", config.shutdown_grace_seconds)
    await app.stop()


GIL_SWITCH_SECONDS = 0.001
"""How long a worker thread running Python code (preparing a step's folder, removing it,
spawning a process) may keep the event loop waiting for the GIL; CPython's default is
5 ms, which a watcher of a running step feels as a delivery delay."""


def serve(config: ServerConfig) -> int:
    """Runs the service until SIGTERM/SIGINT; returns the process exit code (2 when the
    configuration cannot work)."""
    jsonlog.configure()
    try:
        asyncio.run(_serve(config))
    except ConfigError as error:
        logger.error("cannot start: %s", error)
        return 2
    return 0
