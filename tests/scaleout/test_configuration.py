"""The scale-out settings: environment, `serve` flags, and refusals of settings that
cannot work."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from skit_pipelines.artifacts import LocalArtifactStore
from skit_pipelines.artifacts.s3 import S3ArtifactStore
from skit_pipelines.backends.kubeflow import KubeflowBackend
from skit_pipelines.config import ConfigError, ServerConfig
from skit_pipelines.errors import FailedPrecondition
from skit_pipelines.runs import CreateRunInput
from skit_pipelines.server import build_application, open_artifact_store, open_run_store
from skit_pipelines_cli.main import build_parser

PROJECT = Path(__file__).resolve().parent / "project"
NOWHERE = "http://127.0.0.1:9"
"""A KFP host nothing answers on: these tests must never reach KFP."""


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
            "SKIT_KFP_IMAGES_LOCK": "/etc/skit/images.lock.json",
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
    assert config.images_lock_path == Path("/etc/skit/images.lock.json")
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
            "--kfp-images-lock",
            "deploy/images.lock.json",
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
    assert args.kfp_images_lock == Path("deploy/images.lock.json")


def test_the_images_lock_defaults_to_the_projects(tmp_path: Path) -> None:
    assert ServerConfig(project_root=tmp_path).images_lock_path == (
        tmp_path / "images" / "images.lock.json"
    )
    assert ServerConfig().images_lock_path == (
        Path(__file__).resolve().parents[2] / "images" / "images.lock.json"
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


async def test_a_second_server_on_a_sqlite_home_is_told_what_to_change(tmp_path: Path) -> None:
    first = await open_run_store(ServerConfig(home=tmp_path))
    try:
        with pytest.raises(ConfigError, match=r"held by process .*--home of its own.*postgresql"):
            await open_run_store(ServerConfig(home=tmp_path))
    finally:
        await first.close()


async def test_kubeflow_needs_a_host_and_backends_are_known(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--kfp-host"):
        await build_application(
            ServerConfig(home=tmp_path, port=0, demo_data=False, backend="kubeflow")
        )
    with pytest.raises(ConfigError, match="local or kubeflow"):
        await build_application(ServerConfig(home=tmp_path, port=0, backend="argo"))


def kubeflow_config(home: Path, lock: Path) -> ServerConfig:
    return ServerConfig(
        home=home,
        port=0,
        demo_data=False,
        project_root=PROJECT,
        backend="kubeflow",
        kfp_host=NOWHERE,
        kfp_images_lock=lock,
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not JSON"),
        ('["t_tick"]', "expected an object"),
        ('{"t_tick": {"version": "0.1.0", "image": "r/t-tick:0.1.0"}}', "has no 'digest'"),
        (
            '{"t_tick": {"version": "0.1.0", "image": "r/t-tick:0.1.0", "digest": "sha256:abc"}}',
            "is not a sha256 digest",
        ),
        (None, "is not a file"),
    ],
    ids=["not-json", "not-an-object", "no-digest", "bad-digest", "missing"],
)
async def test_a_bad_images_lock_fails_the_start(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    lock = tmp_path / "images.lock.json"
    if content is not None:
        lock.write_text(content)
    with pytest.raises(ConfigError, match="--kfp-images-lock") as refused:
        await build_application(kubeflow_config(tmp_path / "home", lock))
    assert problem in str(refused.value) and str(lock) in str(refused.value)
    # Refused before the run store was opened or anything compiled.
    assert not (tmp_path / "home").exists()


async def test_a_directory_as_images_lock_fails_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a file"):
        await build_application(kubeflow_config(tmp_path / "home", tmp_path))


async def test_an_unreadable_images_lock_fails_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / "images.lock.json"
    lock.write_text("{}")

    def denied(path: Path, *args: object, **kwargs: object) -> str:
        # chmod 0 would not stop root, who runs the tests in some sandboxes.
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(ConfigError, match="Permission denied"):
        await build_application(kubeflow_config(tmp_path / "home", lock))


def test_serve_exits_2_with_one_line_for_a_malformed_lock(tmp_path: Path) -> None:
    lock = tmp_path / "images.lock.json"
    lock.write_text("{not json")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "skit_pipelines_cli",
            "serve",
            "--port",
            "0",
            "--home",
            str(tmp_path / "home"),
            "--backend",
            "kubeflow",
            "--kfp-host",
            NOWHERE,
            "--kfp-images-lock",
            str(lock),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SKIT_PROJECT_ROOT": str(PROJECT), "SKIT_DEMO_DATA": "0"},
    )
    assert done.returncode == 2
    [line] = (done.stdout + done.stderr).splitlines()
    message = json.loads(line)["message"]
    assert message.startswith(f"cannot start: the images lock {lock}") and "not JSON" in message


async def test_with_an_empty_lock_the_server_starts_and_refuses_runs_of_unreleased_images(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lock = tmp_path / "images.lock.json"
    lock.write_text("{}")  # as committed before the first release
    caplog.set_level(logging.WARNING, logger="skit_pipelines.server")
    app = await build_application(kubeflow_config(tmp_path / "home", lock))
    try:
        assert isinstance(app.backend, KubeflowBackend)
        assert "pipelines ticker use images not released in" in caplog.text
        with pytest.raises(FailedPrecondition, match="skit-release release t_tick") as refused:
            await app.controller.create_run(
                CreateRunInput(pipeline="pipelines/ticker", parameters={"text": "hi"})
            )
        assert refused.value.reason == "IMAGES_NOT_RELEASED"
        assert await app.store.list_unfinished_runs() == []
    finally:
        await app.stop(grace=0)


def test_local_steps_inherit_only_path_home_and_lang_from_the_service() -> None:
    config = ServerConfig.from_env(
        {"PATH": "/opt/bin:/usr/bin", "LANG": "C.UTF-8", "AWS_SECRET_ACCESS_KEY": "no"}
    )

    assert config.inherited_env == {"PATH": "/opt/bin:/usr/bin", "LANG": "C.UTF-8"}
