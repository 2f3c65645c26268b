"""Every module in pipelines/ compiles to KFP IR with typed, defaulted, documented
parameters, built from image folders whose versions match the image tags."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from kfp import compiler

from skit_pipelines.images import resolve_image

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"
IMAGES = ROOT / "images"
MODULES = sorted(p for p in PIPELINES.glob("*.py") if p.name != "__init__.py")
PARAMETER_TYPES = {"STRING", "NUMBER_INTEGER", "NUMBER_DOUBLE", "BOOLEAN", "LIST", "STRUCT"}


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"skit_pipeline_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=MODULES, ids=[p.stem for p in MODULES])
def ir(request: pytest.FixtureRequest, tmp_path: Path) -> dict:
    module = load(request.param)
    assert hasattr(module, "pipeline"), f"{request.param.name} defines no `pipeline`"
    out = tmp_path / f"{request.param.stem}.yaml"
    compiler.Compiler().compile(module.pipeline, str(out))
    spec = yaml.safe_load(out.read_text())
    spec["_module"] = request.param.stem
    return spec


def test_the_official_pipelines_are_here():
    names = {p.stem for p in MODULES}
    assert {"random_sample_calls", "invalidate_llm_situations"} <= names


def test_pipeline_is_named_after_its_module_and_described(ir):
    assert ir["pipelineInfo"]["name"] == ir["_module"].replace("_", "-")
    assert ir["pipelineInfo"].get("description", "").strip()


def test_parameters_are_typed_defaulted_and_documented(ir):
    parameters = ir["root"]["inputDefinitions"]["parameters"]
    assert parameters
    for name, parameter in parameters.items():
        assert parameter["parameterType"] in PARAMETER_TYPES, name
        # Defaults must run on the demo data, so every parameter has one.
        assert parameter.get("isOptional") and "defaultValue" in parameter, name
        description = parameter.get("description", "")
        assert description.strip(), f"{name} has no Args: entry"
        # A cut-off multi-line Args entry would not end its sentence.
        assert description.rstrip().endswith("."), f"{name}: {description!r}"


def test_pipeline_returns_its_main_output(ir):
    outputs = ir["root"].get("outputDefinitions", {})
    assert outputs.get("artifacts") or outputs.get("parameters")


def test_images_exist_with_matching_versions(ir):
    for label, executor in ir["deploymentSpec"]["executors"].items():
        image = executor["container"]["image"]
        folder = resolve_image(image, IMAGES)
        assert image == folder.image, f"{label}: {image}, but {folder.path}/VERSION differs"


def test_steps_touching_external_databases_are_not_cached(ir):
    executors = ir["deploymentSpec"]["executors"]
    components = ir["components"]
    for name, task in ir["root"]["dag"]["tasks"].items():
        label = components[task["componentRef"]["name"]]["executorLabel"]
        folder = resolve_image(executors[label]["container"]["image"], IMAGES)
        if folder.declared_env:
            assert not task.get("cachingOptions", {}).get("enableCache"), name
