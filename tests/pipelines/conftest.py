"""The in-process harness the pipeline end-to-end tests share: the run controller, the local
backend and the local executor running the real components on demo data.

A test module names its pipeline module in `PIPELINE`, and sets `WRITES_DEMO_DATA = True`
when its runs change the demo data (so each test gets its own copy)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from skit_demo import ensure_demo_data
from skit_pipelines.artifacts import ArtifactStore, LocalArtifactStore
from skit_pipelines.backends.local import LocalBackend, StoreStepCache
from skit_pipelines.catalog import Catalog, compile_pipeline, pipeline_from_spec
from skit_pipelines.domain import Run
from skit_pipelines.executor import ExecutorConfig, LocalExecutor
from skit_pipelines.runs import CreateRunInput, RunController
from skit_pipelines.store.sqlite import SqliteRunStore

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_SECONDS = 180


@pytest.fixture(scope="module")
def catalog(request: pytest.FixtureRequest) -> Catalog:
    module = ROOT / "pipelines" / f"{request.module.PIPELINE}.py"
    compiled = compile_pipeline(module)
    pipeline = pipeline_from_spec(compiled.spec, compiled.rules)
    return Catalog({pipeline.id: pipeline})


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo data, generated once per module."""
    root = tmp_path_factory.mktemp("home") / "demo"
    ensure_demo_data(root)
    return root


@pytest.fixture
def demo_env(request: pytest.FixtureRequest, demo_root: Path, tmp_path: Path) -> dict[str, str]:
    """The env vars the steps get: the module's demo data, or a private copy of it when the
    module's runs write to it (the metrics database, the model registry)."""
    if not getattr(request.module, "WRITES_DEMO_DATA", False):
        return ensure_demo_data(demo_root)
    copy = tmp_path / "demo"
    shutil.copytree(demo_root, copy)
    return ensure_demo_data(copy)


@pytest.fixture
def run_pipeline(tmp_path: Path, demo_env: dict[str, str], catalog: Catalog):
    """Runs the module's pipeline with the given parameters; returns the finished run.
    `extra_env` adds step env vars (e.g. an LLM endpoint) to `demo_env`; `artifacts` replaces
    the local artifact directory (e.g. an S3ArtifactStore: every output is uploaded and the
    next step's inputs downloaded from there)."""

    async def _run(
        extra_env: dict[str, str] | None = None,
        artifacts: ArtifactStore | None = None,
        **parameters,
    ) -> Run:
        store = SqliteRunStore(tmp_path / "runs.db")
        executor = LocalExecutor(
            ExecutorConfig(
                images_root=ROOT / "images",
                work_root=tmp_path / "work",
                step_env={**demo_env, **(extra_env or {})},
            ),
            artifacts or LocalArtifactStore(tmp_path / "artifacts"),
            cache=StoreStepCache(store),
        )
        backend = LocalBackend(executor)
        controller = RunController(store, catalog, backend)
        backend.start(controller)
        try:
            (pipeline,) = catalog.list()
            run = await controller.create_run(
                CreateRunInput(pipeline=pipeline.name, parameters=parameters)
            )

            async def finished() -> Run:
                async for snapshot in controller.watch_run(run.name):
                    if snapshot.state.terminal:
                        return snapshot
                raise AssertionError("the watch ended before the run did")

            return await asyncio.wait_for(finished(), RUN_TIMEOUT_SECONDS)
        finally:
            await backend.shutdown()
            await store.close()

    return _run
