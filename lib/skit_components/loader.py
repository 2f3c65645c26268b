"""Importing a component's entrypoint module the way its image runs it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def import_component(folder: str | Path) -> ModuleType:
    """Imports `images/<name>/<name>.py` as module `<name>`, as `python3 -m <name>` run in
    the folder would find it (image folders are not packages)."""
    folder = Path(folder).resolve()
    name = folder.name
    module = sys.modules.get(name)
    if module is not None and Path(module.__file__ or "").resolve() == folder / f"{name}.py":
        return module
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no component module {name}.py in {folder}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
