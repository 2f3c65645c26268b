"""The pipeline catalog: every module in pipelines/ compiled to KFP IR once, at startup.

A pipeline module defines `pipeline`, a `@dsl.pipeline` function, and may declare `rules`
for its parameters beside it (see skit_pipelines.rules). Its version is the SHA-256 of
the canonical JSON of the compiled IR, and its parameter schema is read from the IR's root
inputDefinitions; with the rules, that is what CreateRun validates against.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skit_pipelines import rules as parameter_rules
from skit_pipelines.domain import ParameterType, Pipeline, PipelineParameter, Step
from skit_pipelines.errors import FieldViolation, InvalidArgument, NotFound
from skit_pipelines.rules import ParameterRule, shown, unknown_name_hint

logger = logging.getLogger(__name__)

_IR_TYPES = {
    "STRING": ParameterType.STRING,
    "NUMBER_INTEGER": ParameterType.INTEGER,
    "NUMBER_DOUBLE": ParameterType.DOUBLE,
    "BOOLEAN": ParameterType.BOOLEAN,
    "LIST": ParameterType.LIST,
    "STRUCT": ParameterType.STRUCT,
}
_PIPELINE_ID = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_CACHE_FORMAT = b"catalog cache 3: spec, rules and version\n"
"""Part of the cache's hash: a cache written in another layout is never read."""
_RULES_BY_TYPE: dict[ParameterType, tuple[type, ...]] = {
    ParameterType.STRING: parameter_rules.STRING_RULES,
    ParameterType.INTEGER: parameter_rules.NUMBER_RULES,
    ParameterType.DOUBLE: parameter_rules.NUMBER_RULES,
    ParameterType.LIST: parameter_rules.LIST_RULES,
}


def ir_version(spec: Mapping[str, Any]) -> str:
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def _coerce_default(kind: ParameterType, value: Any) -> Any:
    # The IR stores every number as a double (200 becomes 200.0).
    if kind is ParameterType.INTEGER and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def pipeline_from_spec(
    spec: Mapping[str, Any],
    rules: Mapping[str, ParameterRule | Sequence[ParameterRule]] | None = None,
    *,
    version: str | None = None,
) -> Pipeline:
    """The pipeline of a compiled IR, with the parameter `rules` its module declares (by
    parameter name, one rule or several). `version` is the spec's ir_version when known
    already (the catalog cache keeps it: hashing every spec again costs each start ~1 ms).

    Raises ValueError for a bad pipeline name, or rules that name no parameter, do not
    fit its type or that its default breaks: a mistake in a pipeline module fails the
    start, not the runs.
    """
    info = spec.get("pipelineInfo", {})
    pipeline_id = info.get("name", "")
    if not _PIPELINE_ID.match(pipeline_id):
        raise ValueError(f"pipeline name {pipeline_id!r} is not a valid resource id")
    declared = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    rules = parameter_rules.declared_rules(rules, f"pipeline {pipeline_id}")
    unknown = sorted(set(rules) - set(declared))
    if unknown:
        raise ValueError(f"pipeline {pipeline_id}: rules for unknown parameters {unknown}")
    parameters = []
    for name, definition in declared.items():
        kind = _IR_TYPES.get(definition.get("parameterType", ""), ParameterType.UNSPECIFIED)
        has_default = "defaultValue" in definition
        parameter = PipelineParameter(
            name=name,
            type=kind,
            required=not has_default and not definition.get("isOptional", False),
            default=_coerce_default(kind, definition["defaultValue"]) if has_default else None,
            # Docstring descriptions keep their line breaks; a parameter's doc is one line.
            description=" ".join(definition.get("description", "").split()),
            rules=tuple(rules.get(name, ())),
        )
        _check_rules_fit(pipeline_id, parameter)
        parameters.append(parameter)
    _check_defaults_meet_rules(pipeline_id, parameters)
    description = info.get("description", "")
    return Pipeline(
        id=pipeline_id,
        display_name=info.get("displayName") or pipeline_id.replace("-", " ").capitalize(),
        description=description,
        version=version or ir_version(spec),
        parameters=tuple(parameters),
        spec=spec,
    )


def _check_rules_fit(pipeline_id: str, parameter: PipelineParameter) -> None:
    fitting = _RULES_BY_TYPE.get(parameter.type, ())
    for rule in parameter.rules:
        if not isinstance(rule, fitting):
            raise ValueError(
                f"pipeline {pipeline_id}: {parameter.name} is {parameter.type.name}, which"
                f" the rule {rule!r} does not fit"
            )


def _check_defaults_meet_rules(pipeline_id: str, parameters: Sequence[PipelineParameter]) -> None:
    defaults = {p.name: p.default for p in parameters if p.default is not None}
    dates = {
        p.name for p in parameters if any(isinstance(r, parameter_rules.Date) for r in p.rules)
    }
    for parameter in parameters:
        for rule in parameter.rules:
            if isinstance(rule, parameter_rules.Date) and rule.not_before not in ("", *dates):
                raise ValueError(
                    f"pipeline {pipeline_id}: {parameter.name}'s rule compares it with"
                    f" {rule.not_before!r}, which is no date parameter"
                )
            if parameter.name not in defaults:
                continue
            problems = rule.problems(defaults[parameter.name], defaults)
            if problems:
                raise ValueError(
                    f"pipeline {pipeline_id}: the default of {parameter.name}"
                    f"{problems[0].where}, {shown(defaults[parameter.name])}, breaks its rule:"
                    f" {problems[0].description}"
                )


@dataclass(frozen=True)
class CompiledPipeline:
    """What a pipeline module gives the catalog: its IR, its parameter rules and the IR's
    version (ir_version)."""

    spec: dict[str, Any]
    rules: dict[str, tuple[ParameterRule, ...]]
    version: str

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "rules": {name: [r.to_json() for r in rules] for name, rules in self.rules.items()},
            "version": self.version,
        }

    @classmethod
    def from_json(cls, data: Any) -> CompiledPipeline:
        """What to_json wrote; ValueError (or KeyError, TypeError) when it is not that."""
        rules = {
            str(name): tuple(parameter_rules.rule_from_json(r) for r in items)
            for name, items in data["rules"].items()
        }
        if not isinstance(data["spec"], dict):
            raise ValueError("spec is not an object")
        if not isinstance(data["version"], str):
            raise ValueError("version is not a string")
        return cls(data["spec"], rules, data["version"])


def compile_pipeline(path: Path) -> CompiledPipeline:
    """Imports a pipeline module by path, compiles its `pipeline` function to IR and reads
    its `rules`."""
    # Slow to import, and a start with the compiled IR cached needs none of them.
    import tempfile

    import yaml
    from kfp import compiler

    module_spec = importlib.util.spec_from_file_location(f"skit_pipeline_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    pipeline_func = getattr(module, "pipeline", None)
    if pipeline_func is None:
        raise ValueError(f"{path} defines no `pipeline`")
    rules = parameter_rules.declared_rules(getattr(module, "rules", None), str(path))
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(pipeline_func, str(package))
        spec: dict[str, Any] = yaml.safe_load(package.read_text())
    return CompiledPipeline(spec, rules, ir_version(spec))


def compile_module(path: Path) -> dict[str, Any]:
    """Imports a pipeline module by path and compiles its `pipeline` function to IR."""
    return compile_pipeline(path).spec


def _sources_hash(pipelines_root: Path, images_root: Path) -> str:
    """What compiling depends on: the files below the pipelines directory, the component
    specs of the images directory (where pipeline modules load them from), kfp's version
    and the cache's layout."""
    digest = hashlib.sha256(b"kfp " + _kfp_version_source() + b"\n" + _CACHE_FORMAT)
    for label, root, files in (
        ("pipelines", pipelines_root, pipelines_root.rglob("*")),
        ("images", images_root, images_root.glob("*/component.yaml")),
    ):
        for path in sorted(p for p in files if p.is_file() and "__pycache__" not in p.parts):
            digest.update(f"{label}/{path.relative_to(root)}\n".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:32]


def _kfp_version_source() -> bytes:
    """kfp's version module, found without importing kfp or importlib.metadata: either
    takes longer than the rest of a start that reads the cache."""
    spec = importlib.util.find_spec("kfp")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("kfp is not installed", name="kfp")
    return (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_bytes()


def _read_cache(path: Path) -> list[CompiledPipeline] | None:
    try:
        entries = json.loads(path.read_text())
        compiled = [CompiledPipeline.from_json(entry) for entry in entries]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    logger.info("read compiled pipelines from %s", path)
    return compiled


def _write_cache(path: Path, compiled: list[CompiledPipeline]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob("catalog-*.json"):
            stale.unlink(missing_ok=True)
        # Renamed into place: a process starting alongside never reads half a file.
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps([c.to_json() for c in compiled]))
        partial.replace(path)
    except OSError as exc:
        logger.warning("cannot cache compiled pipelines in %s: %s", path.parent, exc)


class Catalog:
    """The pipelines this service can run, by id."""

    def __init__(self, pipelines: Mapping[str, Pipeline]) -> None:
        self._pipelines = dict(sorted(pipelines.items()))
        self._step_orders: dict[str, StepOrder] = {}

    @classmethod
    def load(
        cls,
        pipelines_root: Path,
        cache_dir: Path | None = None,
        *,
        images_root: Path | None = None,
    ) -> Catalog:
        """Compiles every *.py module of `pipelines_root` (not those starting with "_"),
        whose components come from `images_root` (default: images/ beside it, as in a
        checkout).

        With `cache_dir`, the compiled IR is kept there under a hash of everything that
        goes into it (see `_sources_hash`): a start with nothing changed reads it back
        instead of importing kfp and compiling, which takes seconds.
        """
        images_root = images_root or pipelines_root.parent / "images"
        modules = [p for p in sorted(pipelines_root.glob("*.py")) if not p.name.startswith("_")]
        cached = None
        if cache_dir is not None:
            cached = cache_dir / f"catalog-{_sources_hash(pipelines_root, images_root)}.json"
        compiled = _read_cache(cached) if cached is not None else None
        if compiled is None:
            # Imported here: only compiling reads the images' component specs.
            from skit_pipelines.images import components_from

            with components_from(images_root):
                compiled = [compile_pipeline(path) for path in modules]
            if cached is not None:
                _write_cache(cached, compiled)
        pipelines: dict[str, Pipeline] = {}
        for entry in compiled:
            pipeline = pipeline_from_spec(entry.spec, entry.rules, version=entry.version)
            if pipeline.id in pipelines:
                raise ValueError(f"two pipelines are named {pipeline.id!r}")
            pipelines[pipeline.id] = pipeline
            logger.info("loaded pipeline %s %s", pipeline.id, pipeline.version[:19])
        return cls(pipelines)

    def list(self) -> list[Pipeline]:
        return list(self._pipelines.values())

    def get(self, pipeline_id: str) -> Pipeline:
        pipeline = self._pipelines.get(pipeline_id)
        if pipeline is None:
            hint = unknown_name_hint(pipeline_id, list(self._pipelines))
            raise NotFound(
                f"pipeline pipelines/{pipeline_id} not found; {hint}",
                reason="PIPELINE_NOT_FOUND",
            )
        return pipeline

    def step_order(self, pipeline_id: str, version: str) -> StepOrder | None:
        """How the steps of a run of this pipeline version are ordered; None when the
        catalog no longer has that version."""
        pipeline = self._pipelines.get(pipeline_id)
        if pipeline is None or pipeline.version != version:
            return None
        order = self._step_orders.get(pipeline_id)
        if order is None:
            order = self._step_orders[pipeline_id] = StepOrder(pipeline.spec)
        return order


def _check_type(kind: ParameterType, value: Any) -> tuple[bool, Any]:
    """Whether value fits kind, and the value normalised (integral doubles become ints)."""
    if kind is ParameterType.STRING:
        return isinstance(value, str), value
    if kind is ParameterType.BOOLEAN:
        return isinstance(value, bool), value
    if isinstance(value, bool):
        return False, value
    if kind is ParameterType.INTEGER:
        if isinstance(value, int):
            return True, value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return True, int(value)
        return False, value
    if kind is ParameterType.DOUBLE:
        ok = isinstance(value, int | float) and math.isfinite(value)
        return ok, float(value) if ok else value
    if kind is ParameterType.LIST:
        return isinstance(value, list), value
    if kind is ParameterType.STRUCT:
        return isinstance(value, dict), value
    return True, value


_TYPE_NAMES = {
    ParameterType.STRING: "a string",
    ParameterType.INTEGER: "an integer",
    ParameterType.DOUBLE: "a number",
    ParameterType.BOOLEAN: "a boolean",
    ParameterType.LIST: "a list",
    ParameterType.STRUCT: "an object",
}


def resolve_parameters(pipeline: Pipeline, given: Mapping[str, Any]) -> dict[str, Any]:
    """Checks given values against the schema and its rules, and fills in defaults.

    Raises InvalidArgument with one field violation per problem (an unknown parameter, a
    wrong type, a missing value, a broken rule), each naming `run.parameters.<name>`
    (`run.parameters.<name>[<i>]` for an item of a list).
    """
    schema = {p.name: p for p in pipeline.parameters}
    violations: list[FieldViolation] = []
    resolved: dict[str, Any] = {}
    for name, value in given.items():
        parameter = schema.get(name)
        if parameter is None:
            violations.append(
                FieldViolation(
                    f"run.parameters.{name}",
                    f"unknown parameter for {pipeline.name};"
                    f" {unknown_name_hint(name, list(schema))}",
                )
            )
            continue
        ok, normalised = _check_type(parameter.type, value)
        if not ok:
            violations.append(
                FieldViolation(
                    f"run.parameters.{name}",
                    f"must be {_TYPE_NAMES.get(parameter.type, 'valid')}, got {shown(value)}",
                )
            )
            continue
        resolved[name] = normalised
    for parameter in pipeline.parameters:
        if parameter.name in resolved or parameter.name in given:
            continue
        if parameter.required:
            violations.append(
                FieldViolation(f"run.parameters.{parameter.name}", "required parameter is missing")
            )
        elif parameter.default is not None:
            resolved[parameter.name] = parameter.default
    for parameter in pipeline.parameters:
        if parameter.name not in resolved:
            continue
        for rule in parameter.rules:
            violations.extend(
                FieldViolation(
                    f"run.parameters.{parameter.name}{problem.where}", problem.description
                )
                for problem in rule.problems(resolved[parameter.name], resolved)
            )
    if violations:
        raise InvalidArgument(
            f"invalid parameters for {pipeline.name}: "
            + "; ".join(f"{v.field}: {v.description}" for v in violations),
            violations=violations,
            reason="INVALID_PARAMETERS",
        )
    return resolved


_UNPLACED = 1 << 30
"""The level of a step the pipeline's DAGs do not place: after every other step."""
_ITERATION = re.compile(r"(?P<task>.*)\[(?P<index>\d+)\]")
_NO_ITERATION = -1
_NOT_STARTED = math.inf


@dataclass(frozen=True)
class _Task:
    level: int
    """The longest chain of tasks it waits for in its DAG (0: it waits for none)."""
    component: str
    """The component it runs, where a sub-DAG's tasks are looked up."""


class StepOrder:
    """The order of a run's steps: as they execute, by the DAG (a step comes after the
    steps it waits for, level by level, a sub-DAG's or loop iteration's steps in the place
    of the task that holds them), then by start time, then by name.

    Step names are task paths as the executor writes them: "fetch-calls",
    "condition-1/train", "for-loop-2[3]/square".
    """

    def __init__(self, spec: Mapping[str, Any]) -> None:
        components = spec.get("components", {})
        self._dags: dict[str, dict[str, _Task]] = {"": _levels(spec.get("root", {}))}
        for name, component in components.items():
            if "dag" in component:
                self._dags[name] = _levels(component)
        self._places: dict[str, tuple[tuple[int, int], ...]] = {}

    def place(self, step_name: str) -> tuple[tuple[int, int], ...]:
        """The step's place in the DAGs: (level, loop iteration) for each part of its path."""
        place = self._places.get(step_name)
        if place is None:
            place = self._places[step_name] = self._locate(step_name)
        return place

    def _locate(self, step_name: str) -> tuple[tuple[int, int], ...]:
        dag: dict[str, _Task] | None = self._dags[""]
        place: list[tuple[int, int]] = []
        for part in step_name.split("/"):
            iteration = _ITERATION.fullmatch(part)
            name = iteration["task"] if iteration else part
            task = dag.get(name) if dag is not None else None
            if task is None:
                place.append((_UNPLACED, _NO_ITERATION))
                break
            place.append((task.level, int(iteration["index"]) if iteration else _NO_ITERATION))
            dag = self._dags.get(task.component)
        return tuple(place)

    def key(self, step: Step) -> tuple[tuple[tuple[int, int], ...], float, str]:
        """What the steps are sorted by."""
        started = step.start_time.timestamp() if step.start_time else _NOT_STARTED
        return (self.place(step.name), started, step.name)


def _levels(component: Mapping[str, Any]) -> dict[str, _Task]:
    """Each task of a DAG component by its display name (as steps are named), with its
    level: 1 + the highest level of the tasks it depends on."""
    tasks: Mapping[str, Any] = component.get("dag", {}).get("tasks", {})
    levels: dict[str, int] = {}

    def level(key: str, seen: frozenset[str]) -> int:
        if key in levels:
            return levels[key]
        waits = [d for d in upstream_tasks(tasks.get(key, {})) if d in tasks and d not in seen]
        levels[key] = 1 + max((level(d, seen | {key}) for d in waits), default=-1)
        return levels[key]

    return {
        (task.get("taskInfo", {}).get("name") or key): _Task(
            level(key, frozenset()), task.get("componentRef", {}).get("name", "")
        )
        for key, task in tasks.items()
    }


def upstream_tasks(task: Mapping[str, Any]) -> set[str]:
    """The tasks `task` waits for: its dependentTasks and the producers of its inputs
    (the executor's `_ir.upstream`, on the IR as JSON)."""
    waits = set(task.get("dependentTasks", []))
    inputs = task.get("inputs", {})
    for source in inputs.get("parameters", {}).values():
        for kind in ("taskOutputParameter", "taskFinalStatus"):
            if kind in source:
                waits.add(source[kind].get("producerTask", ""))
    for source in inputs.get("artifacts", {}).values():
        if "taskOutputArtifact" in source:
            waits.add(source["taskOutputArtifact"].get("producerTask", ""))
    return waits
