"""skit_components.loader: a component's entrypoint imported as `python3 -m <name>` finds it."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from skit_components.loader import entrypoint_file, import_component


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """An empty image folder with a name no other test imports; forgotten afterwards."""
    name = f"component_{uuid.uuid4().hex[:8]}"
    path = tmp_path / name
    path.mkdir()
    yield path
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]


def test_a_module_entrypoint_is_imported_under_the_folder_name(folder: Path) -> None:
    (folder / f"{folder.name}.py").write_text("def main(argv=None):\n    return 0\n")

    module = import_component(folder)

    assert module.__name__ == folder.name
    assert module.main() == 0
    assert entrypoint_file(folder) == folder / f"{folder.name}.py"
    assert import_component(folder) is module


def test_a_package_entrypoint_imports_its_own_submodules(folder: Path) -> None:
    package = folder / folder.name
    package.mkdir()
    (package / "__init__.py").write_text("from .cli import main\n")
    (package / "__main__.py").write_text("")
    (package / "cli.py").write_text(
        "from .policy import LIMIT\n\ndef main(argv=None):\n    return LIMIT\n"
    )
    (package / "policy.py").write_text("LIMIT = 7\n")

    module = import_component(folder)

    assert module.main() == 7
    assert module.policy.LIMIT == 7
    assert sys.modules[f"{folder.name}.cli"].main is module.main
    assert entrypoint_file(folder) == package / "__init__.py"
    assert import_component(folder) is module


def test_a_failed_import_is_not_remembered(folder: Path) -> None:
    entrypoint = folder / f"{folder.name}.py"
    entrypoint.write_text("raise RuntimeError('broken')\n")
    with pytest.raises(RuntimeError, match="broken"):
        import_component(folder)
    assert folder.name not in sys.modules

    entrypoint.write_text("def main(argv=None):\n    return 0\n")
    assert import_component(folder).main() == 0


def test_a_folder_without_an_entrypoint_fails_to_import(folder: Path) -> None:
    with pytest.raises(FileNotFoundError):
        import_component(folder)
