"""The main of every image's :smoke_test: its smoke run (smoke.yaml) without a container.

As `skit-release build --smoke` runs the built image, but the entrypoint (`python -m
<name>`, every image's ENTRYPOINT) runs on this interpreter in the image folder of the
runfiles tree, with the fixture in a temporary directory standing in for /smoke. argv:
the image folder, relative to the workspace root.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import declared_imports

# The entrypoint's process, too, imports only what the test target declares.
_CHILD = (
    "import declared_imports, runpy; declared_imports.keep_declared_only(); "
    "runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
)


def main(argv: list[str]) -> int:
    declared_imports.keep_declared_only()
    # Imported after the line above, so that an undeclared skit_release would fail here.
    from skit_release.git import ReleaseError
    from skit_release.smoke import load_smoke, make_fixture, run_locally, smoke_failure

    folder = Path(argv[0]).absolute()
    command = (sys.executable, "-c", _CHILD.format(module=folder.name))
    try:
        spec = load_smoke(folder)
        with tempfile.TemporaryDirectory(dir=os.environ.get("TEST_TMPDIR")) as tmp:
            fixture = Path(tmp) / "smoke"
            make_fixture(folder, spec, fixture)
            result = run_locally(folder, spec, fixture, command)
    except ReleaseError as error:
        sys.stderr.write(f"error: {error}\n")
        return 1
    failure = smoke_failure(spec, result)
    if failure is not None:
        sys.stderr.write(f"smoke run of images/{folder.name} failed {failure}\n")
        return 1
    outputs = ", ".join(f"{name} {size} B" for name, size in result.outputs.items())
    sys.stdout.write(f"smoke run of images/{folder.name}: {outputs}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
