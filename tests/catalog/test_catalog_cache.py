"""The compiled-IR cache behind a fast cold start: reused while the sources are unchanged,
recompiled when a pipeline module or a component spec changes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from skit_pipelines import catalog
from skit_pipelines.catalog import Catalog


@pytest.fixture
def sources(project: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(project, tmp_path / "project"))


def _refuse_to_compile(path: Path) -> None:
    raise AssertionError(f"compiled {path.name} though nothing changed")


def test_an_unchanged_project_is_read_back_without_compiling(sources, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    compiled = Catalog.load(sources / "pipelines", cache)
    monkeypatch.setattr(catalog, "compile_pipeline", _refuse_to_compile)

    again = Catalog.load(sources / "pipelines", cache)

    assert [p.version for p in again.list()] == [p.version for p in compiled.list()]
    assert again.get("traced").spec == compiled.get("traced").spec
    assert len(list(cache.glob("catalog-*.json"))) == 1


@pytest.mark.parametrize("changed", ["images/t_traced/component.yaml", "pipelines/traced.py"])
def test_a_changed_source_is_compiled_again(sources, tmp_path, monkeypatch, changed):
    cache = tmp_path / "cache"
    Catalog.load(sources / "pipelines", cache)
    (sources / changed).write_text((sources / changed).read_text() + "\n# changed\n")
    calls: list[str] = []
    compile_pipeline = catalog.compile_pipeline
    monkeypatch.setattr(
        catalog, "compile_pipeline", lambda path: calls.append(path.name) or compile_pipeline(path)
    )

    Catalog.load(sources / "pipelines", cache)

    assert calls == ["traced.py"]
    assert len(list(cache.glob("catalog-*.json"))) == 1


def test_an_unreadable_cache_means_compiling(sources, tmp_path):
    cache = tmp_path / "cache"
    Catalog.load(sources / "pipelines", cache)
    for entry in cache.glob("catalog-*.json"):
        entry.write_text("{not json")

    assert Catalog.load(sources / "pipelines", cache).get("traced").id == "traced"
