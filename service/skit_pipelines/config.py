"""The one configuration object. Built from the environment and flags in main; nobody
else reads os.environ."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50051
DEFAULT_HOME = Path(".skit-pipelines")

STEP_ENV_PREFIX = "SKIT_STEP_ENV_"
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
    """The checkout holding pipelines/ and images/."""
    store_url: str = ""
    """The run store: "" for SQLite at <home>/runs.db, or sqlite:///path."""
    artifacts_url: str = ""
    """The artifact store: "" for <home>/artifacts, or file:///path."""
    step_env: Mapping[str, str] = field(default_factory=dict)
    """Values of the environment variables components declare (database URLs, API keys)."""
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
    """gRPC send/receive message size limit."""
    watch_history_limit: int = 10_000
    """Revisions per run kept for WatchRun replay."""
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
    insecure: bool = False
    """Allow listening on a non-loopback address without authentication."""

    @property
    def images_root(self) -> Path:
        return self.project_root / "images"

    @property
    def pipelines_root(self) -> Path:
        return self.project_root / "pipelines"

    @property
    def resolved_home(self) -> Path:
        return self.home.resolve()

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
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerConfig:
        """Reads SKIT_HOST, SKIT_PORT, SKIT_HOME, SKIT_PROJECT_ROOT, SKIT_STORE, SKIT_ARTIFACTS,
        SKIT_DEMO_DATA, SKIT_MAX_PARALLEL_STEPS, SKIT_MAX_ACTIVE_RUNS and SKIT_STEP_ENV_*."""
        env = os.environ if environ is None else environ
        config = cls()
        step_env = {
            key.removeprefix(STEP_ENV_PREFIX): value
            for key, value in env.items()
            if key.startswith(STEP_ENV_PREFIX)
        }
        return config.with_overrides(
            host=env.get("SKIT_HOST"),
            port=int(env["SKIT_PORT"]) if "SKIT_PORT" in env else None,
            home=Path(env["SKIT_HOME"]) if "SKIT_HOME" in env else None,
            project_root=Path(env["SKIT_PROJECT_ROOT"]) if "SKIT_PROJECT_ROOT" in env else None,
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
        )


def _path(env: Mapping[str, str], key: str) -> Path | None:
    return Path(env[key]) if env.get(key) else None
