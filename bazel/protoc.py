"""grpcio-tools' protoc with its bundled well-known protos on the include path (for genrules)."""

from __future__ import annotations

import sys
from importlib import resources

from grpc_tools import protoc

if __name__ == "__main__":
    well_known = resources.files("grpc_tools") / "_proto"
    sys.exit(protoc.main(["grpc_tools.protoc", *sys.argv[1:], f"-I{well_known}"]))
