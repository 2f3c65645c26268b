"""The one configuration object. Built from the environment and flags in main; nobody
else reads os.environ."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from skit_pipelines.limits import RequestLimits

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50051
DEFAULT_HOME = Path(".skit-pipelines")

STEP_ENV_PREFIX = "SKIT_STEP_ENV_"
SECRET_ENV_PREFIX = "SKIT_SECRET_"
"""SKIT_SECRET_SLACK_BOT_TOKEN=... is the notification sinks' secret "slack-bot-token"
(notifications/secrets.py); values stay in config.secrets, which never prints."""
INHERITED_ENV = ("PATH", "HOME", "LANG")
"""The service's environment variables that local steps inherit."""
"""SKIT_STEP_ENV_CALLS_DB_URL=... hands CALLS_DB_URL to the steps whose component declares it."""


class ConfigError(ValueError):
    """The configuration cannot work; the message says which setting to change."""


def _project_root() -> Path:
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ServerConfig:
    """How one service process runs."""

    host: str = DEFAULT_HOST
    """Address to listen on."""
    port: int = DEFAULT_PORT
    """Port to listen on; 0 picks a free one."""
    home: Path = DEFAULT_HOME
    """Where the embedded default keeps its state: runs.db, artifacts/, work/, demo/."""
    project_root: Path = field(default_factory=_project_root)
    """The checkout holding pipelines/ and images/ (the defaults of pipelines_dir and
    images_dir)."""
    pipelines_dir: Path | None = None
    """The pipeline modules, one `pipeline` per *.py; None: pipelines/ under project_root.
    Set it (with images_dir) where the service runs outside a checkout, as in its image."""
    images_dir: Path | None = None
    """The image folders (component.yaml and VERSION in each); None: images/ under
    project_root."""
    store_url: str = ""
    """The run store: "" for SQLite at <home>/runs.db, sqlite:///path, or
    postgresql://user@host/db (shared by several replicas)."""
    artifacts_url: str = ""
    """The artifact store: "" for <home>/artifacts, file:///path, or s3://bucket/prefix."""
    import_roots: tuple[Path, ...] = ()
    """Directories whose files dsl.importer may import (file:// URIs) on the local executor,
    besides the artifact store; none by default."""
    step_env: Mapping[str, str] = field(default_factory=dict)
    """Values of the environment variables components declare (database URLs, API keys)."""
    inherited_env: Mapping[str, str] = field(default_factory=dict)
    """What steps of the local executor inherit from the service's environment (PATH, HOME,
    LANG); read here so that the executor never reads os.environ."""
    demo_data: bool = True
    """Generate demo databases on first start when no calls/metrics database is configured."""
    max_parallel_steps: int = 4
    """How many steps of all runs execute at once on the local executor."""
    max_active_runs: int = 8
    """How many runs execute at once; more wait in QUEUED."""
    cancel_grace_seconds: float = 10.0
    """Time a cancelled step gets between SIGTERM and SIGKILL."""
    shutdown_grace_seconds: float = 10.0
    """Time open streams and calls get to finish on SIGTERM/SIGINT."""
    max_message_bytes: int = 16 * 1024 * 1024
    """gRPC send limit, and the receive limit of the transport: a larger request is
    refused by gRPC itself (RESOURCE_EXHAUSTED). ListRuns trims its pages to fit it."""
    max_request_bytes: int = 1024 * 1024
    """Requests larger than this (but within max_message_bytes) are refused with
    INVALID_ARGUMENT naming their largest field."""
    max_parameter_bytes: int = RequestLimits.max_parameter_bytes
    """One CreateRun parameter value (a string's UTF-8 bytes, any other value's JSON)."""
    max_parameters: int = RequestLimits.max_parameters
    """Parameters in one CreateRun."""
    max_parameters_bytes: int = RequestLimits.max_parameters_bytes
    """All parameter names and values of one CreateRun together."""
    max_labels: int = RequestLimits.max_labels
    """Labels on one run."""
    max_label_key_length: int = RequestLimits.max_label_key_length
    """Characters of a label key."""
    max_label_value_length: int = RequestLimits.max_label_value_length
    """Characters of a label value."""
    watch_history_limit: int = 10_000
    """Revisions per run kept for WatchRun replay."""
    run_change_limit: int = 100_000
    """Run changes kept for WatchRuns (and subscriptions) to resume from, over all runs; a
    cursor older than the oldest kept gets a re-list marker. Each holds a run snapshot
    (typically a few KB)."""
    tokens_file: Path | None = None
    """Turns authentication on: principals with roles and token hashes (see auth.py)."""
    tls_cert_file: Path | None = None
    """PEM certificate chain of the server; with tls_key_file, serves TLS only."""
    tls_key_file: Path | None = None
    """PEM private key of the server."""
    tls_client_ca_file: Path | None = None
    """PEM CA bundle: clients must present a certificate it signed (mutual TLS); its common
    name may stand for a principal in the tokens file."""
    max_streams_per_principal: int = 10_000
    """Open WatchRun/ReadStepLogs streams one principal may hold; more get RESOURCE_EXHAUSTED."""
    health_port: int | None = None
    """Also serves grpc.health.v1 alone, in plaintext and without authentication, on
    host:health_port, so that a Kubernetes `grpc:` probe (which speaks no TLS) reaches it
    when the main port needs TLS; None: off, 0: any free port."""
    console_port: int | None = None
    """Also serves the web console (console/) over HTTP on host:console_port, with the
    same controller and tokens; None: off, 0: any free port."""
    insecure: bool = False
    """Allow listening on a non-loopback address without authentication."""
    store_pool_size: int = 10
    """PostgreSQL connections per replica."""
    store_retry_seconds: float = 30.0
    """How long a PostgreSQL operation is retried through a lost connection or a server
    restart before the call fails with UNAVAILABLE."""
    s3_endpoint_url: str = ""
    """Overrides the endpoint of an s3:// artifact store (MinIO, a test server). Region and
    credentials always come from the standard AWS configuration (AWS_* variables, shared
    config files, instance or pod roles)."""
    s3_multipart_bytes: int = 8 * 1024 * 1024
    """Artifacts at least this large move to and from S3 in parts of this size."""
    backend: str = "local"
    """Where runs execute: "local" (the embedded executor) or "kubeflow"."""
    kfp_host: str = ""
    """The Kubeflow Pipelines API endpoint, e.g. http://ml-pipeline.kubeflow:8888."""
    kfp_ui_url: str = ""
    """The KFP UI base URL for run links; empty: kfp_host."""
    kfp_token: str = field(default="", repr=False)
    """Bearer token for the KFP API."""
    kfp_cookie: str = field(default="", repr=False)
    """Cookie header value for the KFP API (e.g. "authservice_session=...")."""
    kfp_namespace: str = ""
    """The namespace of a multi-user KFP installation; empty: single-user."""
    kfp_experiment: str = "skit-pipelines"
    """The KFP experiment runs are created in."""
    kfp_poll_seconds: float = 5.0
    """How often the replica holding a run's lease polls KFP for it."""
    kfp_images_lock: Path | None = None
    """The images lock (`skit-release release` writes it) whose digests pin every image
    uploaded to KFP; None: images/images.lock.json under project_root."""
    kfp_step_secrets: str = ""
    """Kubernetes secrets the variables components declare come from on KFP:
    "ENV=secret/key,..." (backends/kubeflow_platform.py parses it)."""
    kfp_logs_url: str = ""
    """The bucket Argo archives pod logs in (archiveLogs of its artifact repository), e.g.
    s3://mlpipeline, for ReadStepLogs on KFP; empty: logs are read in the KFP UI."""
    kfp_logs_key_format: str = "{{workflow.name}}/{{pod.name}}"
    """The keyFormat of that artifact repository, in Argo's syntax (Argo's default here;
    KFP's manifests set private-artifacts/{{workflow.namespace}}/{{workflow.name}}/...)."""
    lease_seconds: float = 30.0
    """How long a replica may stop renewing its runs' leases before another replica takes
    them over."""
    retention_days: float | None = None
    """Finished runs that ended longer ago than this are deleted in the background, as
    DeleteRun deletes them (retention.py); None keeps runs until DeleteRun."""
    traces_exporter: str = "none"
    """Where spans go: "none", "console" (stdout) or "otlp" (to otlp_endpoint)."""
    metrics_port: int | None = None
    """Serves Prometheus metrics at http://metrics_host:metrics_port/metrics; None: off,
    0: any free port."""
    metrics_host: str = "127.0.0.1"
    """Address of the /metrics endpoint."""
    metrics_otlp: bool = False
    """Also push metrics over OTLP to otlp_endpoint (every OTEL_METRIC_EXPORT_INTERVAL ms,
    default 60 s)."""
    otlp_endpoint: str = ""
    """The OTLP/gRPC collector, e.g. http://otel-collector:4317; empty: the exporter's
    default (OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4317). Headers and certificates
    come from the standard OTEL_EXPORTER_OTLP_* variables, which the exporter reads."""

    secrets_dir: Path | None = None
    """Secrets that notification sinks name (Slack tokens, webhook signing keys), one file
    per secret named like it: a Kubernetes secret mounted as a volume."""
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    """The same from the environment: SKIT_SECRET_<NAME> (upper case, "-" and "." as "_")."""
    slack_api_url: str = "https://slack.com/api/"
    """The Slack Web API base URL the Slack sink posts to (a stand-in in tests)."""
    notify_retry_base_seconds: float = 30.0
    """The first retry delay of a failed notification; it doubles (jittered) per attempt,
    up to an hour, for 24 hours."""
    notify_concurrency: int = 16
    """Notifications sent at once by one replica."""
    notify_poll_seconds: float = 1.0
    """How often a replica looks for due notification retries and new subscriptions."""

    @property
    def request_limits(self) -> RequestLimits:
        return RequestLimits(
            max_parameter_bytes=self.max_parameter_bytes,
            max_parameters=self.max_parameters,
            max_parameters_bytes=self.max_parameters_bytes,
            max_labels=self.max_labels,
            max_label_key_length=self.max_label_key_length,
            max_label_value_length=self.max_label_value_length,
        )

    @property
    def images_root(self) -> Path:
        return self.images_dir or self.project_root / "images"

    @property
    def images_lock_path(self) -> Path:
        # Imported here: the client commands read this module and need no YAML parser.
        from skit_pipelines.imagelock import LOCK_PATH

        return self.kfp_images_lock or self.images_root / LOCK_PATH.name

    @property
    def pipelines_root(self) -> Path:
        return self.pipelines_dir or self.project_root / "pipelines"

    @property
    def resolved_home(self) -> Path:
        return self.home.resolve()

    @property
    def uses_postgres(self) -> bool:
        return self.store_url.startswith(("postgresql://", "postgres://"))

    @property
    def database_path(self) -> Path:
        if self.store_url.startswith("sqlite:///"):
            return Path(self.store_url.removeprefix("sqlite:///"))
        return self.resolved_home / "runs.db"

    @property
    def artifacts_root(self) -> Path:
        if self.artifacts_url.startswith("file://"):
            return Path(self.artifacts_url.removeprefix("file://"))
        return self.resolved_home / "artifacts"

    @property
    def work_root(self) -> Path:
        return self.resolved_home / "work"

    @property
    def demo_root(self) -> Path:
        return self.resolved_home / "demo"

    def with_overrides(self, **changes: object) -> ServerConfig:
        """A copy with the given fields replaced; None values are ignored."""
        # Field names and types are checked by the dataclass at run time, not statically.
        given: dict[str, Any] = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **given)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerConfig:
        """Reads SKIT_HOST, SKIT_PORT, SKIT_HOME, SKIT_PROJECT_ROOT, SKIT_PIPELINES_DIR,
        SKIT_IMAGES_DIR, SKIT_HEALTH_PORT, SKIT_CONSOLE_PORT, SKIT_STORE, SKIT_ARTIFACTS,
        SKIT_IMPORT_ROOTS (directories separated by os.pathsep),
        SKIT_DEMO_DATA, SKIT_MAX_PARALLEL_STEPS, SKIT_MAX_ACTIVE_RUNS, SKIT_STEP_ENV_*, the
        scale-out settings (SKIT_STORE_POOL_SIZE, SKIT_STORE_RETRY_SECONDS,
        SKIT_S3_ENDPOINT_URL, SKIT_S3_MULTIPART_BYTES, SKIT_BACKEND, SKIT_KFP_HOST,
        SKIT_KFP_UI_URL, SKIT_KFP_TOKEN, SKIT_KFP_COOKIE, SKIT_KFP_NAMESPACE,
        SKIT_KFP_EXPERIMENT, SKIT_KFP_POLL_SECONDS, SKIT_KFP_IMAGES_LOCK, SKIT_KFP_STEP_SECRETS,
        SKIT_KFP_LOGS_URL, SKIT_KFP_LOGS_KEY_FORMAT, SKIT_LEASE_SECONDS), SKIT_RETENTION_DAYS,
        notifications' (SKIT_SECRETS_DIR, SKIT_SECRET_*, SKIT_SLACK_API_URL,
        SKIT_NOTIFY_RETRY_BASE_SECONDS, SKIT_NOTIFY_CONCURRENCY, SKIT_NOTIFY_POLL_SECONDS),
        the request limits (SKIT_MAX_MESSAGE_BYTES,
        SKIT_MAX_REQUEST_BYTES, SKIT_MAX_PARAMETER_BYTES, SKIT_MAX_PARAMETERS,
        SKIT_MAX_PARAMETERS_BYTES, SKIT_MAX_LABELS, SKIT_MAX_LABEL_KEY_LENGTH,
        SKIT_MAX_LABEL_VALUE_LENGTH),
        the security ones and telemetry's (SKIT_TRACES_EXPORTER, SKIT_METRICS_PORT,
        SKIT_METRICS_HOST, SKIT_METRICS_OTLP, SKIT_OTLP_ENDPOINT)."""
        env = os.environ if environ is None else environ
        config = cls()
        step_env = {
            key.removeprefix(STEP_ENV_PREFIX): value
            for key, value in env.items()
            if key.startswith(STEP_ENV_PREFIX)
        }
        secrets = {key: value for key, value in env.items() if key.startswith(SECRET_ENV_PREFIX)}
        return config.with_overrides(
            host=env.get("SKIT_HOST"),
            port=int(env["SKIT_PORT"]) if "SKIT_PORT" in env else None,
            home=Path(env["SKIT_HOME"]) if "SKIT_HOME" in env else None,
            project_root=Path(env["SKIT_PROJECT_ROOT"]) if "SKIT_PROJECT_ROOT" in env else None,
            pipelines_dir=_path(env, "SKIT_PIPELINES_DIR"),
            images_dir=_path(env, "SKIT_IMAGES_DIR"),
            health_port=_number(env, "SKIT_HEALTH_PORT", int),
            console_port=_number(env, "SKIT_CONSOLE_PORT", int),
            store_url=env.get("SKIT_STORE"),
            tokens_file=_path(env, "SKIT_TOKENS_FILE"),
            tls_cert_file=_path(env, "SKIT_TLS_CERT"),
            tls_key_file=_path(env, "SKIT_TLS_KEY"),
            tls_client_ca_file=_path(env, "SKIT_TLS_CLIENT_CA"),
            max_streams_per_principal=int(env["SKIT_MAX_STREAMS_PER_PRINCIPAL"])
            if "SKIT_MAX_STREAMS_PER_PRINCIPAL" in env
            else None,
            insecure=env["SKIT_INSECURE"] in ("1", "true", "yes")
            if "SKIT_INSECURE" in env
            else None,
            artifacts_url=env.get("SKIT_ARTIFACTS"),
            import_roots=tuple(Path(p) for p in env["SKIT_IMPORT_ROOTS"].split(os.pathsep) if p)
            if env.get("SKIT_IMPORT_ROOTS")
            else None,
            demo_data=env["SKIT_DEMO_DATA"] not in ("0", "false", "no")
            if "SKIT_DEMO_DATA" in env
            else None,
            max_parallel_steps=int(env["SKIT_MAX_PARALLEL_STEPS"])
            if "SKIT_MAX_PARALLEL_STEPS" in env
            else None,
            max_active_runs=int(env["SKIT_MAX_ACTIVE_RUNS"])
            if "SKIT_MAX_ACTIVE_RUNS" in env
            else None,
            step_env=step_env or None,
            inherited_env={name: env[name] for name in INHERITED_ENV if name in env} or None,
            store_pool_size=_number(env, "SKIT_STORE_POOL_SIZE", int),
            store_retry_seconds=_number(env, "SKIT_STORE_RETRY_SECONDS", float),
            s3_endpoint_url=env.get("SKIT_S3_ENDPOINT_URL"),
            s3_multipart_bytes=_number(env, "SKIT_S3_MULTIPART_BYTES", int),
            backend=env.get("SKIT_BACKEND"),
            kfp_host=env.get("SKIT_KFP_HOST"),
            kfp_ui_url=env.get("SKIT_KFP_UI_URL"),
            kfp_token=env.get("SKIT_KFP_TOKEN"),
            kfp_cookie=env.get("SKIT_KFP_COOKIE"),
            kfp_namespace=env.get("SKIT_KFP_NAMESPACE"),
            kfp_experiment=env.get("SKIT_KFP_EXPERIMENT"),
            kfp_poll_seconds=_number(env, "SKIT_KFP_POLL_SECONDS", float),
            kfp_images_lock=_path(env, "SKIT_KFP_IMAGES_LOCK"),
            kfp_step_secrets=env.get("SKIT_KFP_STEP_SECRETS"),
            kfp_logs_url=env.get("SKIT_KFP_LOGS_URL"),
            kfp_logs_key_format=env.get("SKIT_KFP_LOGS_KEY_FORMAT"),
            lease_seconds=_number(env, "SKIT_LEASE_SECONDS", float),
            retention_days=_number(env, "SKIT_RETENTION_DAYS", float),
            secrets_dir=_path(env, "SKIT_SECRETS_DIR"),
            secrets=secrets or None,
            slack_api_url=env.get("SKIT_SLACK_API_URL"),
            notify_retry_base_seconds=_number(env, "SKIT_NOTIFY_RETRY_BASE_SECONDS", float),
            notify_concurrency=_number(env, "SKIT_NOTIFY_CONCURRENCY", int),
            notify_poll_seconds=_number(env, "SKIT_NOTIFY_POLL_SECONDS", float),
            traces_exporter=env.get("SKIT_TRACES_EXPORTER"),
            metrics_port=_number(env, "SKIT_METRICS_PORT", int),
            metrics_host=env.get("SKIT_METRICS_HOST"),
            metrics_otlp=env["SKIT_METRICS_OTLP"] in ("1", "true", "yes")
            if env.get("SKIT_METRICS_OTLP")
            else None,
            otlp_endpoint=env.get("SKIT_OTLP_ENDPOINT"),
            max_message_bytes=_number(env, "SKIT_MAX_MESSAGE_BYTES", int),
            max_request_bytes=_number(env, "SKIT_MAX_REQUEST_BYTES", int),
            max_parameter_bytes=_number(env, "SKIT_MAX_PARAMETER_BYTES", int),
            max_parameters=_number(env, "SKIT_MAX_PARAMETERS", int),
            max_parameters_bytes=_number(env, "SKIT_MAX_PARAMETERS_BYTES", int),
            max_labels=_number(env, "SKIT_MAX_LABELS", int),
            max_label_key_length=_number(env, "SKIT_MAX_LABEL_KEY_LENGTH", int),
            max_label_value_length=_number(env, "SKIT_MAX_LABEL_VALUE_LENGTH", int),
        )


def _path(env: Mapping[str, str], key: str) -> Path | None:
    return Path(env[key]) if env.get(key) else None


def _number(env: Mapping[str, str], key: str, kind: type[int] | type[float]) -> float | None:
    if not env.get(key):
        return None
    try:
        return kind(env[key])
    except ValueError:
        raise ConfigError(f"{key} must be a number, got {env[key]!r}") from None
