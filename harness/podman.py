"""Podman for the container tests: its own configuration and storage, a local stand-in for the
base image, the project's image built from the Dockerfile, and containers run from it.

Storage lives in FMNIST_CONTAINER_CACHE (default ~/.cache/fashion-mnist-serving/podman), so a
second run reuses the stand-in base and the build's layers; an empty folder works too, only
slower (the stand-in is bootstrapped, every wheel downloaded).
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
import yaml

from harness import procfs
from harness.container import ROOT, compose, service_port_defaults
from harness.server import free_port

# python:3.11-slim cannot be pulled where no registry is reachable: Debian 12's Python is 3.11 too.
BASE_IMAGE = "localhost/base-py311:bookworm"
BASE_PACKAGES = "python3,python3-venv,python-is-python3,ca-certificates"
IMAGE = "localhost/fashion-mnist-serving:test"
# pip inside the build trusts what the host trusts (the host may reach PyPI through a proxy).
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def cache_dir() -> Path:
    """The folder of podman's storage and the stand-in base's root filesystem."""
    default = Path.home() / ".cache" / "fashion-mnist-serving" / "podman"
    return Path(os.environ.get("FMNIST_CONTAINER_CACHE", default))


def containers_conf(folder: Path) -> str:
    """Podman settings this machine needs."""
    # Podman asks for more open files and processes than a container may have here (setrlimit
    # fails with EPERM): ask for the hard limits instead.
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32768)
    return (
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        # Debian 12's crun 1.8.1 fails with "cgroups in hybrid mode not supported".
        'runtime = "runc"\n'
        # No journald: events and container logs go to files.
        'events_logger = "file"\n'
        f'tmp_dir = "{folder / "tmp"}"\n'
    )


class Podman:
    """The podman program with configuration and storage of its own under `folder`."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary = binary
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "containers.conf").write_text(containers_conf(folder))
        (folder / "storage.conf").write_text(
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{folder / "storage"}"\n'
            f'runroot = "{folder / "run"}"\n'
        )
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(folder / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(folder / "storage.conf"),
        }

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run `podman ARGS`; fail with its output unless it succeeds (or `check` is off)."""
        return self.run_configured([self.binary, *args], timeout, check)

    def run_configured(
        self, command: list[str], timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run a command that calls podman (podman-compose) with this configuration."""
        result = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check:
            assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}{result.stderr}"
        return result

    def has_image(self, name: str) -> bool:
        """Whether the storage holds image `name`."""
        return self("image", "exists", name, check=False).returncode == 0

    def ensure_base(self, mmdebstrap: str) -> None:
        """Import the stand-in base, bootstrapping its root filesystem when none is cached."""
        if self.has_image(BASE_IMAGE):
            return
        rootfs = self.folder / "base-py311-bookworm.tar"
        if not rootfs.exists():
            partial = self.folder / "base-py311-bookworm.partial.tar"  # the suffix picks tar
            subprocess.run(
                [
                    mmdebstrap,
                    "--mode=root",
                    "--variant=minbase",
                    f"--include={BASE_PACKAGES}",
                    "bookworm",
                    str(partial),
                    "/etc/apt/sources.list.d/debian.sources",
                ],
                check=True,
                capture_output=True,
                timeout=900,
            )
            partial.rename(rootfs)
        # An imported root filesystem has no PATH; the Dockerfile's ENV PATH extends it.
        path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        self("import", "--change", f"ENV {path}", str(rootfs), BASE_IMAGE, timeout=300)

    def build(self) -> float:
        """Build the Dockerfile on the stand-in base as IMAGE; return the seconds it took."""
        started = time.monotonic()
        self(
            "build",
            # Docker's format keeps the HEALTHCHECK, which the OCI format drops.
            "--format=docker",
            "--pull=never",
            "--network=host",
            f"--volume={CA_BUNDLE}:{CA_BUNDLE}:ro",
            f"--build-arg=BASE_IMAGE={BASE_IMAGE}",
            f"--tag={IMAGE}",
            str(ROOT),
            timeout=1800,
        )
        return time.monotonic() - started

    def inspect_image(self) -> dict[str, Any]:
        """IMAGE's configuration, as `podman image inspect` reports it."""
        return json.loads(self("image", "inspect", IMAGE).stdout)[0]

    def python(self, code: str) -> str:
        """Run `python -c CODE` in a throwaway container of IMAGE; return its output."""
        return self("run", "--rm", "--network=none", IMAGE, "python", "-c", code).stdout


def compose_run_options() -> list[str]:
    """`podman run` options for what docker-compose.yml sets on the api service."""
    api = compose()["services"]["api"]
    options = []  # no --user: compose sets none, so the image's USER runs the service
    if api.get("read_only"):
        # Podman would add tmpfs mounts of its own to a read-only container; compose's are given.
        options += ["--read-only", "--read-only-tmpfs=false"]
    options += [f"--tmpfs={tmpfs}" for tmpfs in api.get("tmpfs", [])]
    options += [f"--cap-drop={cap}" for cap in api.get("cap_drop", [])]
    options += [f"--security-opt={opt.replace(':true', '')}" for opt in api.get("security_opt", [])]
    options += [f"--env={name}={value}" for name, value in api.get("environment", {}).items()]
    return options


def api_compose_file(folder: Path, host_port: int) -> Path:
    """docker-compose.yml's api service alone, on IMAGE, its API port published on `host_port`."""
    api = dict(compose()["services"]["api"])
    # The test built IMAGE on the stand-in base; compose would build on the unpullable default.
    del api["build"]
    api["image"] = IMAGE
    # Compose publishes the API only through nginx; alone, the service's API port is published
    # for the test to reach, on a free host port (another server may hold the host's 8000).
    assert "ports" not in api, "the api service publishes nothing; nginx is the front door"
    api["ports"] = [f"{host_port}:{service_port_defaults()['api']}"]
    path = folder / "docker-compose.yml"
    path.write_text(yaml.safe_dump({"services": {"api": api}}))
    return path


class Container:
    """A container of IMAGE run as compose runs the api service, on the host's network."""

    def __init__(self, podman: Podman, name: str, port: int, metrics_port: int) -> None:
        self.podman = podman
        self.name = name
        self.port = port
        self.metrics_port = metrics_port
        # The host's network: a gRPC port of its own too, not the image's 8001, which another
        # server (make serve, a second container of the same user) may hold or share.
        self.grpc_port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    def start(self, *options: str, timeout: float = 120) -> Container:
        """Start the container (with more `podman run` options, such as a volume) and wait
        until /readyz answers 200; ready_seconds counts from the `podman run` call."""
        self.podman("rm", "--force", "--ignore", self.name)
        launched = time.monotonic()
        self.podman(
            "run",
            "--detach",
            f"--name={self.name}",
            # The host's network: free ports on localhost, no port publishing to set up.
            "--network=host",
            *compose_run_options(),
            f"--env=PORT={self.port}",
            f"--env=FMNIST_METRICS_PORT={self.metrics_port}",
            f"--env=FMNIST_GRPC_PORT={self.grpc_port}",
            "--env=HOST=127.0.0.1",
            "--env=FMNIST_METRICS_HOST=127.0.0.1",
            *options,
            IMAGE,
        )
        return self.wait_ready(timeout, launched)

    def wait_ready(self, timeout: float = 120, since: float | None = None) -> Container:
        """Poll /readyz until it answers 200, or fail with the container's log; ready_seconds
        counts from `since` (a time.monotonic() reading), or from now."""
        started = time.monotonic() if since is None else since
        while time.monotonic() < started + timeout:
            assert self.state()["Running"], self.logs()
            try:
                if requests.get(self.url + "/readyz", timeout=2).status_code == 200:
                    self.ready_seconds = time.monotonic() - started
                    self.ready_at = time.time()
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)  # a start takes about a second: poll finely enough to time it
        raise AssertionError(f"container not ready in {timeout}s:\n{self.logs()}")

    def process_started_at(self) -> float:
        """When the container's first process started (podman's State.StartedAt), in Unix
        seconds: the entry script's start, without podman's own work before it."""
        # RFC 3339 with nanoseconds ("2026-12-03T14:30:00.123456789Z"), more than Python parses.
        stamp = re.fullmatch(r"([^.]+)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", self.state()["StartedAt"])
        assert stamp, self.state()["StartedAt"]
        whole, fraction, offset = stamp.groups()
        moment = datetime.fromisoformat(whole + offset.replace("Z", "+00:00"))
        return moment.timestamp() + float(f"0.{fraction or 0}")

    def pids(self) -> list[int]:
        """The host's process ids of the gunicorn master (the container's PID 1) and its
        workers: podman runs as root here, so the host sees them."""
        master = self.state()["Pid"]
        return [master, *procfs.children(master)]

    def inspect(self) -> dict[str, Any]:
        """The container's configuration and state, as `podman inspect` reports them."""
        return json.loads(self.podman("inspect", self.name).stdout)[0]

    def state(self) -> dict[str, Any]:
        """The container's state (Running, ExitCode, ...)."""
        return self.inspect()["State"]

    def exec(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run `command` inside the running container, as its user."""
        return self.podman("exec", self.name, *command, check=check)

    def logs(self) -> str:
        """The container's output so far (its last 5,000 characters)."""
        result = self.podman("logs", self.name, check=False)
        return (result.stdout + result.stderr)[-5000:]

    def stop(self) -> None:
        """Remove the container, stopping it first if it still runs."""
        self.podman("rm", "--force", "--ignore", "--time=35", self.name, timeout=60)
