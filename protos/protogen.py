"""Generates the Python gRPC code for protos/ into client/ (committed, checked by a test)."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = PROJECT_ROOT / "protos"
THIRD_PARTY_PROTO_ROOT = PROJECT_ROOT / "third_party" / "protos"
GENERATED_PACKAGE = Path("skit") / "pipelines" / "v1"
# The generated stubs ship in the skit-pipelines-client distribution, beside the client.
OUTPUT_ROOT = PROJECT_ROOT / "client"
_WELL_KNOWN_PROTOS = Path(grpc_tools.__file__).parent / "_proto"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / GENERATED_PACKAGE).glob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Writes *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every API proto under out_dir.

    `skit` also gets a py.typed marker, so type checkers of the client's users read the .pyi.
    """
    target = out_dir / GENERATED_PACKAGE
    target.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{THIRD_PARTY_PROTO_ROOT}",
        f"-I{_WELL_KNOWN_PROTOS}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(path.relative_to(PROTO_ROOT)) for path in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    for package_dir in (out_dir / "skit", out_dir / "skit" / "pipelines", target):
        (package_dir / "__init__.py").touch()
    (out_dir / "skit" / "py.typed").touch()
    return sorted(p for p in target.iterdir() if p.is_file())


if __name__ == "__main__":
    written = generate(Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT_ROOT)
    print("\n".join(str(p) for p in written))
