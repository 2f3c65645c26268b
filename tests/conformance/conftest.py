"""The KFP conformance suite's harness: pipelines written with the KFP SDK, compiled in the
test, run end to end on the local executor (as the service runs them: the project's
interpreter, the test image folders below, a local artifact store, import roots).

Pipelines are adapted from kubeflow/pipelines' sdk/python/test_data/pipelines (named in
each test's docstring) or written for this suite.
"""

# No `from __future__ import annotations`: kfp reads component signatures' real types.

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
import yaml
from kfp import compiler

from skit_pipelines.artifact_imports import ImportPolicy
from skit_pipelines.artifacts import LocalArtifactStore
from skit_pipelines.domain import Artifact, ErrorInfo, Step, StepState
from skit_pipelines.executor import (
    ExecutorConfig,
    InMemoryStepCache,
    LocalExecutor,
    PipelineFailed,
    StepCache,
)

IMAGES = Path(__file__).parent / "images"


class Recorder:
    """A RunObserver that keeps every step change."""

    def __init__(self) -> None:
        self.events: list[Step] = []

    async def step_changed(self, *steps: Step) -> None:
        self.events.extend(steps)

    def final(self) -> dict[str, Step]:
        return {step.name: step for step in self.events}


@dataclass(frozen=True)
class Ran:
    """How one run ended: its steps' last reports, and its result or error."""

    steps: Mapping[str, Step]
    outputs: tuple[Artifact, ...] = ()
    output_parameters: Mapping[str, Any] = field(default_factory=dict)
    error: ErrorInfo | None = None

    def states(self) -> dict[str, StepState]:
        return {name: step.state for name, step in self.steps.items()}

    def parameter(self, step: str, name: str = "Output") -> Any:
        return self.steps[step].output_parameters[name]

    def artifact(self, step: str, name: str) -> Artifact:
        return next(a for a in self.steps[step].output_artifacts if a.name == name)

    def output(self, name: str) -> Artifact:
        return next(a for a in self.outputs if a.name == name)


class KfpLocal:
    """Compiles pipelines and runs them on one LocalExecutor."""

    def __init__(self, root: Path, cache: StepCache | None = None) -> None:
        self.root = root
        self.data = root / "data"
        """An import root: dsl.importer may read file:// URIs below it."""
        self.data.mkdir(parents=True, exist_ok=True)
        self.artifacts = LocalArtifactStore(root / "artifacts")
        self.executor = LocalExecutor(
            ExecutorConfig(
                images_root=IMAGES,
                work_root=root / "work",
                cancel_grace_seconds=2,
                # The service passes its own environment (see ServerConfig): steps see PATH.
                inherited_env=os.environ,
                import_policy=ImportPolicy(
                    roots=(self.data.resolve(),), artifacts_root=self.artifacts.root
                ),
            ),
            self.artifacts,
            cache,
        )
        self._runs = 0

    @staticmethod
    def content(artifact: Artifact | str) -> str:
        """The text of a stored file artifact."""
        uri = artifact if isinstance(artifact, str) else artifact.uri
        return Path(unquote(urlparse(uri).path)).read_text()

    def compile(self, pipeline: Any) -> dict[str, Any]:
        path = self.root / f"{pipeline.name}.yaml"
        compiler.Compiler().compile(pipeline, str(path))
        spec: dict[str, Any] = yaml.safe_load(path.read_text())
        return spec

    async def run(self, pipeline: Any, arguments: Mapping[str, Any] | None = None) -> Ran:
        """Runs the pipeline to the end; a failure is in `Ran.error`, not raised."""
        spec = self.compile(pipeline)
        self._runs += 1
        recorder = Recorder()
        try:
            result = await self.executor.execute(
                f"run-{self._runs}", spec, dict(arguments or {}), recorder
            )
        except PipelineFailed as failure:
            return Ran(recorder.final(), error=failure.error)
        return Ran(recorder.final(), result.outputs, dict(result.output_parameters))

    async def succeed(self, pipeline: Any, arguments: Mapping[str, Any] | None = None) -> Ran:
        ran = await self.run(pipeline, arguments)
        assert ran.error is None, ran.error
        return ran


@pytest.fixture
def kfp_local(tmp_path: Path) -> KfpLocal:
    return KfpLocal(tmp_path)


@pytest.fixture
def kfp_cached(tmp_path: Path) -> KfpLocal:
    """Runs share a step cache, as runs of the service do."""
    return KfpLocal(tmp_path, InMemoryStepCache())
