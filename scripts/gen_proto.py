"""Regenerate actrhost/proto/*_pb2.py (and the examples' *_pb2.py) from the .proto files
beside them.

Usage: python scripts/gen_proto.py [OUT_DIR]

Needs grpcio-tools (the `dev` extra). Without OUT_DIR the files are written in place;
tests/test_proto.py calls this with a temporary OUT_DIR to check the committed files are
not stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIRS = [ROOT / "actrhost" / "proto", ROOT / "examples" / "greeter"]


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on every .proto file; return the generated files."""
    from grpc_tools import protoc  # imported here: only this script needs grpcio-tools

    # Paths relative to the repository root, so that one .proto importing another
    # ("actrhost/proto/actr.proto") generates "from actrhost.proto import actr_pb2".
    protos = sorted(p.relative_to(ROOT) for d in PROTO_DIRS for p in d.glob("*.proto"))
    args = ["protoc", f"-I{ROOT}", f"--python_out={out_dir}"] + [str(p) for p in protos]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {[p.name for p in protos]}")
    return sorted(out_dir / p.with_name(f"{p.stem}_pb2.py") for p in protos)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    for path in generate(target):
        print(path)
