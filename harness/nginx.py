"""A real nginx running the shipped front door (deploy/nginx/fashion-mnist.conf, and with a
gRPC port also fashion-mnist-grpc.conf) in front of a local server, for tests/test_front_door.py
and benchmarks/slow_clients.py.

Compose mounts those files inside the official image's http block. Here a main configuration of
the test's own stands in for the image's: it holds only what the image's holds outside those
files (the connection limit) and the paths nginx writes to, all in the test's folder. In each
shipped file only two lines change: the upstream's address and the listen line.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from harness.process import BackgroundProcess

SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "nginx" / "fashion-mnist.conf"
SHIPPED_UPSTREAM = "api:8000"  # the compose service's API port
SHIPPED_LISTEN = 8080  # the container port compose publishes
SHIPPED_GRPC_CONFIG = SHIPPED_CONFIG.with_name("fashion-mnist-grpc.conf")
SHIPPED_GRPC_UPSTREAM = "api:8001"  # the compose service's gRPC port
SHIPPED_GRPC_LISTEN = 8081  # the container port compose publishes for gRPC
DIRECTIVE = re.compile(r"^\s*([a-z_0-9]+)\s+([^;{]*?)\s*;", re.MULTILINE)

# The official image's nginx.conf around the shipped file: its worker_connections (1024), and
# this folder for the pid, the logs and the temporary files. A root test run keeps root for the
# workers, which write the temporary files into a folder only root may enter.
MAIN_CONFIG = """\
{user}pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{
    worker_connections 1024;
}}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    include {folder}/fashion-mnist.conf;
    {grpc_include}
}}
"""


def shipped_directives(block: str = "", config: Path = SHIPPED_CONFIG) -> dict[str, list[str]]:
    """Each simple directive of a shipped file (`name value;`), with every value it takes;
    only those of the first top-level `block {...}` ("upstream"; "server", its own directives
    before its location) when one is named."""
    text = config.read_text()
    if block:
        text = re.search(rf"^{block}\b[^{{]*{{([^}}]*)}}", text, re.MULTILINE)[1]
    found: dict[str, list[str]] = {}
    for name, value in DIRECTIVE.findall(text):
        found.setdefault(name, []).append(value)
    return found


def shipped(name: str, config: Path = SHIPPED_CONFIG) -> str:
    """The value of a directive a shipped file sets once."""
    (value,) = shipped_directives(config=config)[name]
    return value


def seconds(value: str) -> float:
    """An nginx time ("10s", "4s", "35") in seconds."""
    number, unit = re.fullmatch(r"(\d+)(ms|s|m)?", value).groups()
    return int(number) * {"ms": 0.001, "s": 1, None: 1, "m": 60}[unit]


def size(value: str) -> int:
    """An nginx size ("10m", "1m", "8190") in bytes."""
    number, unit = re.fullmatch(r"(\d+)([kKmM])?", value).groups()
    return int(number) * {None: 1, "k": 1024, "m": 1024**2}[unit and unit.lower()]


def local_config(upstream_port: int, port: int, grpc: bool = False) -> str:
    """A shipped file (the gRPC one with `grpc`) with its upstream at
    127.0.0.1:`upstream_port`, listening on `port`."""
    config, upstream, listen = (
        (SHIPPED_GRPC_CONFIG, SHIPPED_GRPC_UPSTREAM, f"{SHIPPED_GRPC_LISTEN} http2")
        if grpc
        else (SHIPPED_CONFIG, SHIPPED_UPSTREAM, str(SHIPPED_LISTEN))
    )
    text = config.read_text()
    local_listen = listen.replace(listen.split()[0], f"127.0.0.1:{port}")
    for old, new in (
        (f"server {upstream};", f"server 127.0.0.1:{upstream_port};"),
        (f"listen {listen};", f"listen {local_listen};"),
    ):
        assert text.count(old) == 1, f"{config} should have one {old!r}"
        text = text.replace(old, new)
    return text


class FrontDoor(BackgroundProcess):
    """An nginx process running the shipped file in front of 127.0.0.1:`upstream_port`; with
    `grpc` (the server's gRPC port, nginx's), the shipped gRPC file as well."""

    def __init__(
        self,
        binary: str,
        upstream_port: int,
        folder: Path,
        port: int,
        grpc: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(folder / "nginx.log")
        self.grpc = grpc
        self.grpc_target = f"127.0.0.1:{grpc[1]}" if grpc else None
        self.binary = binary
        self.upstream_port = upstream_port
        self.folder = folder
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.access_log = folder / "access.log"

    def start(self, timeout: float = 30) -> FrontDoor:
        """Write both files, start nginx in the foreground, and wait until it proxies /healthz."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "fashion-mnist.conf").write_text(local_config(self.upstream_port, self.port))
        include = ""
        if self.grpc:
            grpc_file = self.folder / "fashion-mnist-grpc.conf"
            grpc_file.write_text(local_config(*self.grpc, grpc=True))
            include = f"include {grpc_file};"
        user = "user root;\n" if os.geteuid() == 0 else ""
        main = self.folder / "nginx.conf"
        main.write_text(MAIN_CONFIG.format(folder=self.folder, user=user, grpc_include=include))
        self.launch(
            [self.binary, "-p", f"{self.folder}/", "-c", str(main), "-e", "stderr"]
            + ["-g", "daemon off;"]
        )
        self.wait_until_ok(self.url + "/healthz", timeout)
        return self

    def errors(self) -> str:
        """nginx's error log (client timeouts are logged at info level)."""
        path = self.folder / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def raw_exchange(port: int, request: bytes, timeout: float = 10, head_only: bool = False) -> bytes:
    """Send raw bytes to 127.0.0.1:`port` and read until the server closes, or only until the
    answer's head has come (nginx lingers on a refused request for the body it did not read)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while not (head_only and b"\r\n\r\n" in data) and (chunk := sock.recv(65536)):
            data += chunk
    return data
