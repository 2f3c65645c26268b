"""The pipeline catalog: every module in pipelines/ compiled to KFP IR once, at startup.

A pipeline module defines `pipeline`, a `@dsl.pipeline` function. Its version is the
SHA-256 of the canonical JSON of the compiled IR, and its parameter schema is read from
the IR's root inputDefinitions, which is what CreateRun validates against.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from skit_pipelines.domain import ParameterType, Pipeline, PipelineParameter
from skit_pipelines.errors import FieldViolation, InvalidArgument, NotFound
from skit_pipelines.images import components_from

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


def ir_version(spec: Mapping[str, Any]) -> str:
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def _coerce_default(kind: ParameterType, value: Any) -> Any:
    # The IR stores every number as a double (200 becomes 200.0).
    if kind is ParameterType.INTEGER and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def pipeline_from_spec(spec: Mapping[str, Any]) -> Pipeline:
    info = spec.get("pipelineInfo", {})
    pipeline_id = info.get("name", "")
    if not _PIPELINE_ID.match(pipeline_id):
        raise ValueError(f"pipeline name {pipeline_id!r} is not a valid resource id")
    declared = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    parameters = []
    for name, definition in declared.items():
        kind = _IR_TYPES.get(definition.get("parameterType", ""), ParameterType.UNSPECIFIED)
        has_default = "defaultValue" in definition
        parameters.append(
            PipelineParameter(
                name=name,
                type=kind,
                required=not has_default and not definition.get("isOptional", False),
                default=_coerce_default(kind, definition["defaultValue"]) if has_default else None,
                # Docstring descriptions keep their line breaks; a parameter's doc is one line.
                description=" ".join(definition.get("description", "").split()),
            )
        )
    description = info.get("description", "")
    return Pipeline(
        id=pipeline_id,
        display_name=info.get("displayName") or pipeline_id.replace("-", " ").capitalize(),
        description=description,
        version=ir_version(spec),
        parameters=tuple(parameters),
        spec=spec,
    )


def compile_module(path: Path) -> dict[str, Any]:
    """Imports a pipeline module by path and compiles its `pipeline` function to IR."""
    # Slow to import, and a start with the compiled IR cached needs neither.
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
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(pipeline_func, str(package))
        spec: dict[str, Any] = yaml.safe_load(package.read_text())
        return spec


def _sources_hash(pipelines_root: Path, images_root: Path) -> str:
    """What compiling depends on: the files below the pipelines directory, the component
    specs of the images directory (where pipeline modules load them from), kfp's version."""
    digest = hashlib.sha256(b"kfp " + _kfp_version_source() + b"\n")
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


def _read_cache(path: Path) -> list[dict[str, Any]] | None:
    try:
        specs = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    logger.info("read compiled pipelines from %s", path)
    return specs if isinstance(specs, list) else None


def _write_cache(path: Path, specs: list[dict[str, Any]]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob("catalog-*.json"):
            stale.unlink(missing_ok=True)
        # Renamed into place: a process starting alongside never reads half a file.
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(specs))
        partial.replace(path)
    except OSError as exc:
        logger.warning("cannot cache compiled pipelines in %s: %s", path.parent, exc)


class Catalog:
    """The pipelines this service can run, by id."""

    def __init__(self, pipelines: Mapping[str, Pipeline]) -> None:
        self._pipelines = dict(sorted(pipelines.items()))

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
        specs = _read_cache(cached) if cached is not None else None
        if specs is None:
            with components_from(images_root):
                specs = [compile_module(path) for path in modules]
            if cached is not None:
                _write_cache(cached, specs)
        pipelines: dict[str, Pipeline] = {}
        for spec in specs:
            pipeline = pipeline_from_spec(spec)
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
            raise NotFound(
                f"pipeline pipelines/{pipeline_id} not found", reason="PIPELINE_NOT_FOUND"
            )
        return pipeline


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
    """Checks given values against the schema and fills in defaults.

    Raises InvalidArgument with one field violation per bad parameter (unknown, wrong
    type, missing), each naming `run.parameters.<name>`.
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
                    f"unknown parameter for {pipeline.name}; known: {', '.join(schema) or 'none'}",
                )
            )
            continue
        ok, normalised = _check_type(parameter.type, value)
        if not ok:
            violations.append(
                FieldViolation(
                    f"run.parameters.{name}",
                    f"must be {_TYPE_NAMES.get(parameter.type, 'valid')}, got {json.dumps(value)}",
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
    if violations:
        raise InvalidArgument(
            f"invalid parameters for {pipeline.name}: "
            + "; ".join(f"{v.field}: {v.description}" for v in violations),
            violations=violations,
            reason="INVALID_PARAMETERS",
        )
    return resolved
