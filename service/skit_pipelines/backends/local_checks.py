"""What CreateRun (and RetryRun) check before the local executor gets a run: what would
otherwise become a FAILED run a second later, where nothing but a change of the pipeline,
the server or the parameters can help.

- KFP Python components run with the service's own environment, and nothing is installed
  at run time: `packages_to_install` it does not satisfy refuse the pipeline
  (FAILED_PRECONDITION, PACKAGES_NOT_INSTALLED, naming them).
- dsl.importer reads only what the ImportPolicy allows: a constant URI outside it refuses
  the pipeline (FAILED_PRECONDITION, IMPORT_NOT_ALLOWED); a URI that comes from a
  pipeline parameter refuses the parameter (INVALID_ARGUMENT with a field violation on
  `run.parameters.<name>`). A URI computed by a step is checked when the importer runs.

Works on the IR as the catalog holds it (a dict), without kfp: the local backend may
not be loaded yet when the first CreateRun arrives.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from skit_pipelines.artifact_imports import ImportPolicy
from skit_pipelines.domain import Pipeline
from skit_pipelines.errors import FailedPrecondition, FieldViolation, InvalidArgument
from skit_pipelines.python_components import recognise, unsatisfied

_ITERATORS = ("parameterIterator", "artifactIterator")


@dataclass(frozen=True)
class _Known:
    """A parameter value known at CreateRun, and the run parameter it came from (None for
    a constant of the pipeline)."""

    value: Any
    parameter: str | None


class LocalRunChecks:
    """The local executor's checks of a pipeline and a run's parameters."""

    def __init__(self, import_policy: ImportPolicy) -> None:
        self._policy = import_policy
        self._packages: dict[str, str] = {}
        """Pipeline version -> why its packages are not satisfied ("" when they are)."""

    def check(self, pipeline: Pipeline, parameters: Mapping[str, Any] | None) -> None:
        """Raises FailedPrecondition or InvalidArgument (see the module); `parameters` None
        checks the pipeline alone."""
        missing = self._packages.get(pipeline.version)
        if missing is None:
            missing = self._packages[pipeline.version] = _missing_packages(pipeline.spec)
        if missing:
            raise FailedPrecondition(
                f"{pipeline.name} cannot run on the local executor: {missing}. Install them"
                " in the service's environment (requirements.in and the lock), or run the"
                " pipeline on Kubeflow",
                reason="PACKAGES_NOT_INSTALLED",
            )
        self._check_imports(pipeline, parameters)

    def _check_imports(self, pipeline: Pipeline, parameters: Mapping[str, Any] | None) -> None:
        known = {name: _Known(value, name) for name, value in (parameters or {}).items()}
        root = pipeline.spec.get("root") or {}
        constants: list[str] = []
        violations: list[FieldViolation] = []
        for uri in _importer_uris(pipeline.spec, root.get("dag") or {}, known):
            refusal = self._policy.refusal(str(uri.value))
            if refusal is None:
                continue
            if uri.parameter is None:
                constants.append(refusal)
            else:
                violations.append(
                    FieldViolation(f"run.parameters.{uri.parameter}", f"cannot import {refusal}")
                )
        if constants:
            raise FailedPrecondition(
                f"{pipeline.name} cannot run on this server: its importer cannot import"
                f" {'; '.join(constants)}",
                reason="IMPORT_NOT_ALLOWED",
            )
        if violations:
            raise InvalidArgument(
                f"invalid parameters for {pipeline.name}: "
                + "; ".join(f"{v.field}: {v.description}" for v in violations),
                violations=violations,
                reason="IMPORT_NOT_ALLOWED",
            )


def _missing_packages(spec: Mapping[str, Any]) -> str:
    """Which Python components' packages_to_install are not installed; "" when all are."""
    executors = (spec.get("deploymentSpec") or {}).get("executors") or {}
    problems = []
    for label, executor in sorted(executors.items()):
        container = executor.get("container")
        if not container:
            continue
        python = recognise(container.get("command") or [], container.get("args") or [])
        if python is None:
            continue
        missing = unsatisfied(python.requirements)
        if missing:
            name = str(label).removeprefix("exec-")
            problems.append(f"{name} needs {', '.join(map(str, missing))}")
    if not problems:
        return ""
    return "packages_to_install not installed: " + "; ".join(problems)


def _importer_uris(
    spec: Mapping[str, Any], dag: Mapping[str, Any], scope: Mapping[str, _Known]
) -> Iterator[_Known]:
    """The URIs of the importers in `dag` and the DAGs below it that CreateRun can know:
    constants, and values passed down from the run's parameters (`scope`: the DAG's
    inputs known so far). A loop's item, or a step's output, is not known."""
    components = spec.get("components") or {}
    executors = (spec.get("deploymentSpec") or {}).get("executors") or {}
    for task in (dag.get("tasks") or {}).values():
        component = components.get((task.get("componentRef") or {}).get("name", "")) or {}
        inputs = (task.get("inputs") or {}).get("parameters") or {}
        if "dag" in component:
            known = {name: _input(source, scope) for name, source in inputs.items()}
            # A loop's body sees its items, unknown here; its other inputs pass through.
            child = {n: k for n, k in known.items() if k is not None}
            if any(key in task for key in _ITERATORS):
                child = {n: k for n, k in child.items() if not _is_item(task, n)}
            yield from _importer_uris(spec, component["dag"], child)
            continue
        executor = executors.get(component.get("executorLabel", "")) or {}
        importer = executor.get("importer")
        if importer is None:
            continue
        source = importer.get("artifactUri") or {}
        uri: _Known | None = None
        if "constant" in source:
            uri = _Known(source["constant"], None)
        elif "runtimeParameter" in source:
            uri = _input(inputs.get(source["runtimeParameter"]) or {}, scope)
        # An f-string's placeholders are resolved when the importer runs, and checked then.
        if uri is not None and isinstance(uri.value, str) and "{{$" not in uri.value:
            yield uri


def _input(source: Mapping[str, Any], scope: Mapping[str, _Known]) -> _Known | None:
    """A task input's value when CreateRun knows it."""
    if "componentInputParameter" in source and not source.get("parameterExpressionSelector"):
        return scope.get(source["componentInputParameter"])
    runtime = source.get("runtimeValue") or {}
    if "constant" in runtime:
        return _Known(runtime["constant"], None)
    return None


def _is_item(task: Mapping[str, Any], name: str) -> bool:
    iterator = task.get("parameterIterator") or task.get("artifactIterator") or {}
    return bool(iterator.get("itemInput") == name)
