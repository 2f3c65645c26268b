"""A step process's environment: what it inherits from the service, and what it declares.

The executor never reads os.environ: the caller hands it the service's PATH, HOME and
LANG (ExecutorConfig.inherited_env) and the values for declared variables (step_env).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from kfp.pipeline_spec.pipeline_spec_pb2 import PipelineDeploymentConfig

from skit_pipelines.images import ImageFolder

_INHERITED_DEFAULTS = {"PATH": os.defpath, "HOME": "/", "LANG": "C.UTF-8"}
"""The only variables of the service's environment a step sees, and their values when
the caller passes none."""


class StepEnvironment:
    """Builds each step process's environment.

    Args:
        inherited: The service's environment, or the part of it steps inherit; only
            PATH, HOME and LANG are taken, the others are ignored so that passing the whole
            environment leaks nothing.
        step_env: Values for the variables components declare (`skit.ai/env`); a step
            receives only the ones its image folder declares.
    """

    def __init__(self, inherited: Mapping[str, str], step_env: Mapping[str, str]) -> None:
        self._base = {
            name: inherited.get(name, default) for name, default in _INHERITED_DEFAULTS.items()
        }
        self._base["PYTHONUNBUFFERED"] = "1"
        self._step_env = dict(step_env)

    def for_step(
        self,
        folder: ImageFolder,
        container: PipelineDeploymentConfig.PipelineContainerSpec,
        tmp: Path,
        trace: Mapping[str, str],
    ) -> dict[str, str]:
        """The environment of one attempt: inherited, TMPDIR, the container's `env`, the
        declared variables that have values, and the trace context."""
        env = dict(self._base)
        env["TMPDIR"] = str(tmp)
        for item in container.env:
            env[str(item.name)] = str(item.value)
        for name in folder.declared_env:
            if name in self._step_env:
                env[name] = self._step_env[name]
        env.update(trace)
        return env
