"""The demo databases of the embedded default, created on the service's first start."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
from pathlib import Path

from skit_components.db import connect, sqlite_url
from skit_components.migrations import ANNOTATIONS, CALLS, METRICS, migrate

logger = logging.getLogger(__name__)

CALLS_DB = "calls.db"
METRICS_DB = "metrics.db"
ANNOTATIONS_DB = "annotations.db"
AUDIO_DIR = "audio"
"""The demo calls' audio (skit_demo.audio), which the turns' audio_url point at."""
_TEMP = re.compile(r"^(?P<name>.+\.db)\.tmp-(?P<pid>\d+)-[0-9a-f]+$")
# slu_model's registry directory and the prefix of the temporary one it builds first.
_MODELS_DIR = "models"
_MODELS_TEMPORARY = f".{_MODELS_DIR}.tmp-"


def ensure_demo_data(demo_root: Path) -> dict[str, str]:
    """Creates `demo_root/calls.db`, `metrics.db` and `annotations.db` unless they exist, and
    returns the step environment pointing at them: {"CALLS_DB_URL": ..., "METRICS_DB_URL":
    ..., "ANNOTATIONS_DB_URL": ...}, plus MODEL_REGISTRY_URL of the model registry
    `demo_root/models` with its production SLU model (see `demo.slu_model`).

    Idempotent and crash-safe: databases are generated under temporary names and linked into
    place only when complete, so an existing file is always a complete database (it only
    gets the migrations added since it was made). Concurrent callers are safe too: each
    builds its own temporary files and the first to link wins.
    """
    demo_root = demo_root.resolve()
    demo_root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_temporaries(demo_root)
    calls_path, metrics_path = demo_root / CALLS_DB, demo_root / METRICS_DB
    missing = [p for p in (calls_path, metrics_path) if not p.exists()]
    if missing:
        # Imported only here: a warm home has its databases, and the generator is slow to import.
        from skit_demo.generator import generate

        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        temporaries = {p: p.with_name(f"{p.name}.tmp-{token}") for p in (calls_path, metrics_path)}
        try:
            summary = generate(
                sqlite_url(temporaries[calls_path]), sqlite_url(temporaries[metrics_path])
            )
            for final in missing:
                temporary = temporaries[final]
                _fsync(temporary)
                # link() refuses to replace: a concurrent first start keeps its own file.
                with contextlib.suppress(FileExistsError):
                    os.link(temporary, final)
            _fsync(demo_root)
            logger.info("created demo databases in %s: %s", demo_root, summary.as_dict())
        finally:
            for temporary in temporaries.values():
                temporary.unlink(missing_ok=True)
    annotations_path = demo_root / ANNOTATIONS_DB
    if not annotations_path.exists() or not (demo_root / AUDIO_DIR).is_dir():
        # Before the annotation store, whose tasks copy the turns' audio URLs.
        from skit_demo.audio import place_demo_audio

        place_demo_audio(demo_root, calls_path)
    if not annotations_path.exists():
        _create_annotations(calls_path, annotations_path)
    for path, schema in (
        (calls_path, CALLS),
        (metrics_path, METRICS),
        (annotations_path, ANNOTATIONS),
    ):
        with connect(sqlite_url(path)) as db:
            migrate(db, schema)
    return {
        "CALLS_DB_URL": sqlite_url(calls_path),
        "METRICS_DB_URL": sqlite_url(metrics_path),
        "ANNOTATIONS_DB_URL": sqlite_url(annotations_path),
        # The registry with the production SLU model (retrain-slu, evaluate-slu).
        "MODEL_REGISTRY_URL": _model_registry(demo_root),
    }


def _model_registry(demo_root: Path) -> str:
    """slu_model.ensure_demo_models, imported only when it has work to do: on a warm home
    the registry is there and no start left a temporary one behind, and the module (which
    imports the generator) takes longer to import than the rest of the check."""
    registry = demo_root / _MODELS_DIR
    if registry.is_dir() and not any(
        path.name.startswith(_MODELS_TEMPORARY) for path in demo_root.iterdir()
    ):
        return registry.as_uri()
    from skit_demo.slu_model import ensure_demo_models

    return ensure_demo_models(demo_root)


def _create_annotations(calls_path: Path, annotations_path: Path) -> None:
    """The annotation store, made from the calls database in place (which may predate it),
    so that its tasks always name calls the steps can find; linked in as the others are."""
    from skit_demo.generator import write_annotations

    temporary = annotations_path.with_name(
        f"{annotations_path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    )
    try:
        tasks, annotations = write_annotations(sqlite_url(calls_path), sqlite_url(temporary))
        _fsync(temporary)
        with contextlib.suppress(FileExistsError):
            os.link(temporary, annotations_path)
        _fsync(annotations_path.parent)
        logger.info("created demo annotation store: %d tasks, %d annotations", tasks, annotations)
    finally:
        temporary.unlink(missing_ok=True)


def _remove_abandoned_temporaries(demo_root: Path) -> None:
    """Deletes temporary databases whose generating process is gone (it crashed)."""
    for path in demo_root.iterdir():
        match = _TEMP.match(path.name)
        if match and not _alive(int(match.group("pid"))):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
