"""Importing a component's entrypoint the way its image runs it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def entrypoint_file(folder: str | Path) -> Path:
    """The file `python3 -m <name>` loads first in image folder `<name>/`: the package's
    `<name>/__init__.py` when the entrypoint is a package, else the module `<name>.py`."""
    folder = Path(folder).resolve()
    package = folder / folder.name / "__init__.py"
    return package if package.is_file() else folder / f"{folder.name}.py"


def import_component(folder: str | Path) -> ModuleType:
    """Imports the entrypoint of `images/<name>/` (a module `<name>.py` or a package
    `<name>/`) as `<name>`, as `python3 -m <name>` run in the folder would find it (image
    folders themselves are not packages)."""
    folder = Path(folder).resolve()
    name = folder.name
    path = entrypoint_file(folder)
    module = sys.modules.get(name)
    if module is not None and Path(module.__file__ or "").resolve() == path:
        return module
    # A package's submodules are found through its search locations.
    locations = [str(path.parent)] if path.name == "__init__.py" else None
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=locations)
    if spec is None or spec.loader is None:
        raise ImportError(f"no component module {name}.py or package {name}/ in {folder}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        # A half-imported module must not satisfy the next import of the same name.
        del sys.modules[name]
        raise
    return module
