"""The committed generated code matches protos/, and the protos pass buf lint."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

# protos/protogen.py is a development script, not part of any installed package.
_SPEC = importlib.util.spec_from_file_location(
    "protogen", Path(__file__).resolve().parents[1] / "protos" / "protogen.py"
)
assert _SPEC is not None and _SPEC.loader is not None
protogen = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(protogen)

COMMITTED = protogen.OUTPUT_ROOT


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    fresh = protogen.generate(tmp_path)
    assert fresh, "nothing generated"
    stale = [
        path.name
        for path in fresh
        if path.read_bytes() != (COMMITTED / path.relative_to(tmp_path)).read_bytes()
    ]
    assert not stale, f"generated code is stale, run `make proto`: {stale}"


def test_buf_lint_passes(buf: Path) -> None:
    result = subprocess.run(
        [str(buf), "lint"], cwd=protogen.PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
