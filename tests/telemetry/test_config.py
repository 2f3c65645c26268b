"""Telemetry settings: environment, serve flags, and refusal of unknown exporters."""

from __future__ import annotations

import asyncio

import pytest

from skit_pipelines import server
from skit_pipelines.config import ConfigError, ServerConfig
from skit_pipelines.telemetry import Telemetry
from skit_pipelines_cli import main as cli


def test_telemetry_settings_come_from_the_environment() -> None:
    config = ServerConfig.from_env(
        {
            "SKIT_TRACES_EXPORTER": "otlp",
            "SKIT_OTLP_ENDPOINT": "http://collector:4317",
            "SKIT_METRICS_PORT": "9464",
            "SKIT_METRICS_HOST": "0.0.0.0",
            "SKIT_METRICS_OTLP": "1",
        }
    )

    assert (config.traces_exporter, config.otlp_endpoint) == ("otlp", "http://collector:4317")
    assert (config.metrics_port, config.metrics_host, config.metrics_otlp) == (
        9464,
        "0.0.0.0",
        True,
    )
    defaults = ServerConfig.from_env({})
    assert (defaults.traces_exporter, defaults.metrics_port, defaults.metrics_otlp) == (
        "none",
        None,
        False,
    )


def test_serve_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[ServerConfig] = []
    monkeypatch.setenv("SKIT_TRACES_EXPORTER", "console")
    monkeypatch.setattr(server, "serve", lambda config: served.append(config) or 0)

    code = cli.main(
        [
            *("serve", "--traces-exporter", "otlp", "--otlp-endpoint", "http://c:4317"),
            *("--metrics-port", "9464", "--metrics-host", "0.0.0.0", "--metrics-otlp"),
        ]
    )

    assert code == 0
    (config,) = served
    assert (config.traces_exporter, config.otlp_endpoint) == ("otlp", "http://c:4317")
    assert (config.metrics_port, config.metrics_host, config.metrics_otlp) == (
        9464,
        "0.0.0.0",
        True,
    )


def test_an_unknown_traces_exporter_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="--traces-exporter must be one of none, console, otlp"):
        Telemetry.from_config(ServerConfig(traces_exporter="jaeger"))


def test_off_by_default_imports_no_exporter() -> None:
    telemetry = Telemetry.from_config(ServerConfig())

    assert not telemetry.tracing
    assert telemetry.metrics_address is None


def test_a_metrics_port_in_use_is_a_configuration_error() -> None:
    first = Telemetry.from_config(ServerConfig(metrics_port=0))
    first.start()
    try:
        port = int(first.metrics_address.rsplit(":", 1)[1])
        taken = Telemetry.from_config(ServerConfig(metrics_port=port))
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            taken.start()
    finally:
        asyncio.run(first.shutdown())
