"""Fixtures for the KFP stand-in's tests: compiled pipelines, a started server, clients."""

# No `from __future__ import annotations`: kfp reads the pipeline signatures' real types.

import json
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from skit_testing.kfp import KfpServer


def _compile(pipeline: Any, path: Path) -> Path:
    from kfp import compiler

    compiler.Compiler().compile(pipeline, str(path))
    return path


def _pipelines(tmp: Path) -> dict[str, Path]:
    # kfp's decorators are untyped: they are applied as calls, on typed functions.
    from kfp import dsl, kubernetes

    def produce(msg: str, out: dsl.Output[dsl.Artifact]) -> dsl.ContainerSpec:
        return dsl.ContainerSpec(image="alpine:3", command=["sh", "-c"], args=[msg, out.path])

    def consume(data: dsl.Input[dsl.Artifact]) -> dsl.ContainerSpec:
        return dsl.ContainerSpec(image="alpine:3", command=["cat"], args=[data.path])

    def square(x: int) -> dsl.ContainerSpec:
        return dsl.ContainerSpec(image="alpine:3", command=["echo"], args=[str(x)])

    # The components are named after the functions: comp-produce, exec-produce, ...
    produce_task = dsl.container_component(produce)
    consume_task = dsl.container_component(consume)
    square_task = dsl.container_component(square)

    def chain(msg: str = "hi") -> None:
        first = produce_task(msg=msg)
        consume_task(data=first.outputs["out"])

    def branches(flag: bool = True, msg: str = "hi") -> None:
        first = produce_task(msg=msg)
        with dsl.If(flag == True):  # noqa: E712 - a KFP condition, not a Python comparison
            consume_task(data=first.outputs["out"])
        produce_task(msg="independent")

    def loops(xs: list = [1, 2, 3, 4]) -> None:  # type: ignore[type-arg]  # noqa: B006
        with dsl.ParallelFor([1, 2, 3]) as item:
            square_task(x=item)
        with dsl.ParallelFor(xs) as x:
            square_task(x=x)

    def secrets(msg: str = "hi") -> None:
        task = produce_task(msg=msg)
        kubernetes.use_secret_as_env(task, secret_name="creds", secret_key_to_env={"k": "TOKEN"})

    def required(count: int, msg: str = "hi") -> None:
        produce_task(msg=msg)

    functions = {
        "chain": chain,
        "branches": branches,
        "loops": loops,
        "secrets": secrets,
        "required": required,
    }
    return {
        name: _compile(dsl.pipeline(name=name)(function), tmp / f"{name}.yaml")
        for name, function in functions.items()
    }


@pytest.fixture(scope="session")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Pipeline packages compiled by the kfp SDK: chain, branches, loops, secrets, required."""
    return _pipelines(tmp_path_factory.mktemp("kfp-packages"))


@pytest.fixture
def server() -> Iterator[KfpServer]:
    with KfpServer() as stand_in:
        yield stand_in


def _make_client(url: str, **kwargs: Any) -> Any:
    import kfp

    with warnings.catch_warnings():
        # "This client only works with Kubeflow Pipeline v2.0.0-beta.2 and later".
        warnings.simplefilter("ignore")
        return kfp.Client(host=url, **kwargs)


@pytest.fixture
def make_client() -> Callable[..., Any]:
    """kfp.Client(host=url, **kwargs), as the backend builds it."""
    return _make_client


@pytest.fixture
def client(server: KfpServer) -> Any:
    return _make_client(server.url)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _http(
    url: str,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> Answer:
    """A plain HTTP call, for exact status codes and bodies."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, dict(error.headers), error.read())


@pytest.fixture
def http() -> Callable[..., Answer]:
    """http(url, method="GET", body=None, headers=None, raw=None) -> Answer."""
    return _http


def _submit(
    server: KfpServer,
    packages: dict[str, Path],
    name: str,
    parameters: dict[str, Any] | None = None,
    pipeline_root: str | None = None,
) -> str:
    """Uploads packages[name] as a new pipeline version and runs it; returns the run id."""
    import kfp_server_api

    client = _make_client(server.url)
    pipeline = client.pipelines.pipeline_service_create_pipeline(
        kfp_server_api.V2beta1Pipeline(display_name=f"{name}-{len(server.versions())}")
    )
    version = client.pipeline_uploads.upload_pipeline_version(
        str(packages[name]), name="v1", pipelineid=pipeline.pipeline_id
    )
    run = client.runs.run_service_create_run(
        kfp_server_api.V2beta1Run(
            display_name=f"run-of-{name}",
            pipeline_version_reference=kfp_server_api.V2beta1PipelineVersionReference(
                pipeline_id=pipeline.pipeline_id,
                pipeline_version_id=version.pipeline_version_id,
            ),
            runtime_config=kfp_server_api.V2beta1RuntimeConfig(
                parameters=parameters or {}, pipeline_root=pipeline_root
            ),
        )
    )
    return str(run.run_id)


@pytest.fixture
def submit(packages: dict[str, Path]) -> Callable[..., str]:
    """submit(server, package name, parameters=None, pipeline_root=None) -> run id."""

    def start(server: KfpServer, name: str, parameters: dict[str, Any] | None = None,
              pipeline_root: str | None = None) -> str:  # fmt: skip
        return _submit(server, packages, name, parameters, pipeline_root)

    return start
