"""The scale-out settings: environment, `serve` flags, and refusals of settings that
cannot work."""

from __future__ import annotations

from pathlib import Path

import pytest

from skit_pipelines.artifacts import LocalArtifactStore
from skit_pipelines.artifacts_s3 import S3ArtifactStore
from skit_pipelines.cli import build_parser
from skit_pipelines.config import ConfigError, ServerConfig
from skit_pipelines.server import build_application, open_artifact_store, open_run_store


def test_environment() -> None:
    config = ServerConfig.from_env(
        {
            "SKIT_STORE": "postgresql://skit@db/skit",
            "SKIT_ARTIFACTS": "s3://bucket/prefix",
            "SKIT_S3_ENDPOINT_URL": "http://minio:9000",
            "SKIT_S3_MULTIPART_BYTES": "16777216",
            "SKIT_STORE_POOL_SIZE": "4",
            "SKIT_STORE_RETRY_SECONDS": "5.5",
            "SKIT_BACKEND": "kubeflow",
            "SKIT_KFP_HOST": "http://ml-pipeline:8888",
            "SKIT_KFP_UI_URL": "https://kubeflow/pipeline",
            "SKIT_KFP_TOKEN": "t0ken",
            "SKIT_KFP_COOKIE": "authservice_session=c",
            "SKIT_KFP_NAMESPACE": "team",
            "SKIT_KFP_EXPERIMENT": "nightly",
            "SKIT_KFP_POLL_SECONDS": "2",
            "SKIT_LEASE_SECONDS": "20",
        }
    )
    assert config.uses_postgres
    assert (config.artifacts_url, config.s3_endpoint_url) == (
        "s3://bucket/prefix",
        "http://minio:9000",
    )
    assert (config.s3_multipart_bytes, config.store_pool_size) == (16777216, 4)
    assert config.store_retry_seconds == 5.5
    assert (config.backend, config.kfp_host, config.kfp_ui_url) == (
        "kubeflow",
        "http://ml-pipeline:8888",
        "https://kubeflow/pipeline",
    )
    assert (config.kfp_token, config.kfp_cookie) == ("t0ken", "authservice_session=c")
    assert (config.kfp_namespace, config.kfp_experiment) == ("team", "nightly")
    assert (config.kfp_poll_seconds, config.lease_seconds) == (2.0, 20.0)
    assert "t0ken" not in repr(config) and "authservice_session" not in repr(config)
    with pytest.raises(ConfigError, match="SKIT_LEASE_SECONDS"):
        ServerConfig.from_env({"SKIT_LEASE_SECONDS": "soon"})


def test_serve_flags() -> None:
    args = build_parser({}).parse_args(
        [
            "serve",
            "--store",
            "postgresql://skit@db/skit",
            "--artifacts",
            "s3://bucket/prefix",
            "--s3-endpoint-url",
            "http://minio:9000",
            "--backend",
            "kubeflow",
            "--kfp-host",
            "http://ml-pipeline:8888",
            "--kfp-ui-url",
            "https://kubeflow/pipeline",
        ]
    )
    assert (args.store, args.artifacts, args.s3_endpoint_url) == (
        "postgresql://skit@db/skit",
        "s3://bucket/prefix",
        "http://minio:9000",
    )
    assert (args.backend, args.kfp_host, args.kfp_ui_url) == (
        "kubeflow",
        "http://ml-pipeline:8888",
        "https://kubeflow/pipeline",
    )


async def test_stores_are_chosen_by_url(tmp_path: Path) -> None:
    local = ServerConfig(home=tmp_path)
    assert isinstance(open_artifact_store(local), LocalArtifactStore)
    s3 = ServerConfig(home=tmp_path, artifacts_url="s3://bucket/prefix")
    assert isinstance(open_artifact_store(s3), S3ArtifactStore)
    with pytest.raises(ConfigError, match="not gs:"):
        open_artifact_store(ServerConfig(home=tmp_path, artifacts_url="gs://bucket"))
    with pytest.raises(ConfigError, match="not mysql:") as caught:
        await open_run_store(ServerConfig(home=tmp_path, store_url="mysql://u:hunter2@db/x"))
    assert "hunter2" not in str(caught.value)


async def test_kubeflow_needs_a_host_and_backends_are_known(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--kfp-host"):
        await build_application(
            ServerConfig(home=tmp_path, port=0, demo_data=False, backend="kubeflow")
        )
    with pytest.raises(ConfigError, match="local or kubeflow"):
        await build_application(ServerConfig(home=tmp_path, port=0, backend="argo"))
