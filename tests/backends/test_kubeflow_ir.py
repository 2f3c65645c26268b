"""What the Kubeflow backend uploads loads back through kfp's own loader: the compiled IR
of every official pipeline (pipelines/*.py, compiled by catalog.compile_module), written
the way the backend writes its upload package."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp import components
from kfp.pipeline_spec import pipeline_spec_pb2

from skit_pipelines.catalog import compile_module, pipeline_from_spec

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
MODULES = sorted(p for p in PIPELINES.glob("*.py") if not p.name.startswith("_"))


def test_there_are_official_pipelines() -> None:
    assert MODULES


@pytest.mark.parametrize("path", MODULES, ids=[p.stem for p in MODULES])
def test_official_pipeline_ir_loads_with_kfp(path: Path, tmp_path: Path) -> None:
    pipeline = pipeline_from_spec(compile_module(path))
    package = tmp_path / f"{pipeline.id}.yaml"
    package.write_text(yaml.safe_dump(dict(pipeline.spec), sort_keys=False))

    loaded = components.load_component_from_file(str(package))
    assert loaded.name == pipeline.id
    # Strict protobuf parse: a field kfp's PipelineSpec does not know fails here.
    json_format.ParseDict(yaml.safe_load(package.read_text()), pipeline_spec_pb2.PipelineSpec())
