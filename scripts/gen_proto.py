"""Generate the worker's gRPC Python code from fireside/worker/v1/worker.proto (`make proto`).

The output is checked in; tests/test_worker_proto.py regenerates it into a temporary directory
and fails when it differs, so the .proto and the code cannot drift apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO = "fireside/worker/v1/worker.proto"
GENERATED = ("worker_pb2.py", "worker_pb2.pyi", "worker_pb2_grpc.py")


def generate(out: Path) -> list[Path]:
    """worker_pb2.py (+ .pyi) and worker_pb2_grpc.py under `out`/fireside/worker/v1/."""
    out.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{ROOT}", f"--python_out={out}", f"--pyi_out={out}"]
    args += [f"--grpc_python_out={out}", str(ROOT / PROTO)]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {PROTO}")
    return [out / "fireside/worker/v1" / name for name in GENERATED]


if __name__ == "__main__":
    for path in generate(ROOT):
        print(path.relative_to(ROOT), file=sys.stderr)
