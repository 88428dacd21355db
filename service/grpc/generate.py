"""Write service/grpc/generated/ from the .proto sources in service/grpc/protos/ (`make protos`).

protoc's modules import each other by their .proto paths (`from tensorflow.core.framework
import tensor_pb2`) and register their descriptors in protobuf's default pool. Two rewrites
keep them apart from the real packages of those names, without changing a message or service
name (gRPC matches on those and on the wire format, never on Python modules):

- imports gain the `service.grpc.generated.` prefix: a worker never imports `tensorflow`;
- descriptors go into a pool of their own (`POOL`, in the package's __init__): a process that
  also loads tensorflow_serving's or tritonclient's generated modules, as the tests do, defines
  the same message names in the default pool, where a second definition is refused.

Needs grpcio-tools (requirements-dev.txt); tests/test_grpc_protos.py checks that the committed
modules are what this writes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
PROTOS = HERE / "protos"
GENERATED = HERE / "generated"
PACKAGE = "service.grpc.generated"
# The files that declare services: only they get *_pb2_grpc modules.
SERVICES = ("grpc_predict_v2.proto", "tensorflow_serving/apis/prediction_service.proto")
HEADER = '"""Written by service/grpc/generate.py (make protos) from protos/: do not edit."""\n'
POOL_MODULE = (
    HEADER
    + """
from google.protobuf import any_pb2, descriptor_pool, wrappers_pb2

# The generated messages' own pool; it holds the well-known types they import.
POOL = descriptor_pool.DescriptorPool()
for _imported in (any_pb2, wrappers_pb2):
    POOL.AddSerializedFile(_imported.DESCRIPTOR.serialized_pb)
"""
)


def proto_files() -> list[str]:
    """The .proto sources, as paths relative to PROTOS (their import names), sorted."""
    return sorted(path.relative_to(PROTOS).as_posix() for path in PROTOS.rglob("*.proto"))


def generate(target: Path = GENERATED) -> None:
    """Replace `target` with the modules generated from PROTOS, rewritten for PACKAGE."""
    from grpc_tools import protoc  # dev only: the service imports the generated modules

    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    # protoc runs in a process of its own: in one that has loaded grpc's and protobuf's C
    # extensions (a test process) grpc_tools' compiler can crash the interpreter.
    compiler = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOS}", f"-I{include}"]
    files = proto_files()
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        for args in (
            [f"--python_out={out}", f"--pyi_out={out}", *files],
            [f"--grpc_python_out={out}", *SERVICES],
        ):
            result = subprocess.run([*compiler, *args], capture_output=True, text=True)
            if result.returncode != 0:
                sys.exit(f"protoc failed on {PROTOS}: {result.stderr.strip()}")
        modules = {name[: -len(".proto")].replace("/", ".") + "_pb2" for name in files}
        if target.exists():
            shutil.rmtree(target)
        for path in sorted(out.rglob("*.py*")):
            written = target / path.relative_to(out)
            written.parent.mkdir(parents=True, exist_ok=True)
            written.write_text(HEADER + rewrite(path.read_text(), modules))
        (target / "__init__.py").write_text(POOL_MODULE)
        for folder in sorted(p for p in target.rglob("*") if p.is_dir()):
            (folder / "__init__.py").write_text(HEADER)


def rewrite(source: str, modules: set[str]) -> str:
    """Prefix the imports and names of generated modules; register in POOL, not the default."""

    def absolute(module: str) -> str:
        return f"{PACKAGE}.{module}" if module in modules else module

    def from_import(match: re.Match[str]) -> str:
        parent, name = match["parent"], match["name"]
        full = f"{parent}.{name}" if parent else name
        if full not in modules:
            return match[0]
        package, _, leaf = absolute(full).rpartition(".")
        return f"from {package} import {leaf}"

    source = re.sub(
        r"^from (?P<parent>[\w.]+) import (?P<name>\w+_pb2)", from_import, source, flags=re.M
    )
    source = re.sub(
        r"^import (?P<name>\w+_pb2)(?= as )",
        lambda m: f"from {PACKAGE} import {m['name']}" if m["name"] in modules else m[0],
        source,
        flags=re.M,
    )
    source = re.sub(r"'([\w.]+_pb2)'", lambda m: f"'{absolute(m[1])}'", source)
    default = "_descriptor_pool.Default().AddSerializedFile("
    if default in source:
        source = source.replace(default, "POOL.AddSerializedFile(")
        source = source.replace(
            "from google.protobuf import descriptor_pool as _descriptor_pool\n",
            f"from {PACKAGE} import POOL\n",
        )
    return source


if __name__ == "__main__":
    generate()
