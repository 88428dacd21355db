"""The container files (Dockerfile, docker-compose.yml, the requirements locks) and the service's
port defaults, read for the deployment tests."""

from __future__ import annotations

import json
import os
import re
import runpy
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import yaml
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"


@cache
def dockerfile_instructions() -> list[dict[str, Any]]:
    """Every instruction of the Dockerfile, comments left out, in order."""
    parser = DockerfileParser(str(DOCKERFILE))
    return [i for i in parser.structure if i["instruction"] != "COMMENT"]


def runtime_stage() -> list[dict[str, Any]]:
    """The instructions of the last stage: what the shipped image is made of."""
    instructions = dockerfile_instructions()
    last_from = max(n for n, i in enumerate(instructions) if i["instruction"] == "FROM")
    return instructions[last_from:]


def instruction_values(name: str, stage: list[dict[str, Any]] | None = None) -> list[str]:
    """The values of every `name` instruction (in the runtime stage unless told)."""
    stage = runtime_stage() if stage is None else stage
    return [i["value"] for i in stage if i["instruction"] == name]


def only(name: str) -> str:
    """The value of the runtime stage's one `name` instruction."""
    values = instruction_values(name)
    assert len(values) == 1, f"expected one {name} in the runtime stage, found {values}"
    return values[0]


def exposed_ports() -> set[int]:
    """The ports the image EXPOSEs."""
    values = instruction_values("EXPOSE")
    return {int(port.split("/")[0]) for value in values for port in value.split()}


def healthcheck_command() -> list[str]:
    """The HEALTHCHECK's command, in exec form."""
    value = only("HEALTHCHECK")
    options, command = value.split("CMD", 1)
    return json.loads(command)


def healthcheck_path() -> str:
    """The URL path the HEALTHCHECK requests."""
    paths = re.findall(r"'(/[\w/]+)'", " ".join(healthcheck_command()))
    assert len(paths) == 1, paths
    return paths[0]


def image_user() -> str:
    """The user the image runs as: USER's user part."""
    return only("USER").split(":")[0]


def image_env() -> dict[str, str]:
    """The environment the runtime stage sets."""
    return DockerfileParser(str(DOCKERFILE)).envs


@cache
def compose() -> dict[str, Any]:
    """docker-compose.yml, parsed."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@cache
def service_port_defaults() -> dict[str, int]:
    """The API and metrics ports gunicorn.conf.py binds by default, and the default gRPC port
    every worker serves."""
    with mock.patch.dict(os.environ):
        for name in ("HOST", "PORT", "FMNIST_METRICS_PORT"):
            os.environ.pop(name, None)
        conf = runpy.run_path(str(ROOT / "service" / "gunicorn.conf.py"), run_name="gunicorn_conf")
    (bind,) = conf["bind"]
    return {
        "api": int(bind.rsplit(":", 1)[1]),
        "grpc": Settings().grpc_port,
        "metrics": conf["METRICS_PORT"],
    }


def builder_stages() -> list[dict[str, Any]]:
    """The instructions before the runtime stage: what builds the venv."""
    return dockerfile_instructions()[: -len(runtime_stage())]


def base_image_default() -> str:
    """The default of the BASE_IMAGE build argument, which the first FROM uses."""
    instructions = dockerfile_instructions()
    first_from = next(n for n, i in enumerate(instructions) if i["instruction"] == "FROM")
    arguments = dict(
        i["value"].split("=", 1) for i in instructions[:first_from] if i["instruction"] == "ARG"
    )
    return arguments["BASE_IMAGE"]


def uninstalled_in_builder() -> set[str]:
    """The packages the builder uninstalls from the venv after installing the lock."""
    runs = " ".join(instruction_values("RUN", builder_stages()))
    (names,) = re.findall(r"pip uninstall --yes ([\w .-]+?)\s*(?:&&|$)", runs)
    return {canonicalize_name(name) for name in names.split()}


def locked(path: Path) -> list[tuple[Requirement, list[str]]]:
    """A lock file's pins, each with its hashes."""
    entries = []
    for line in path.read_text().replace("\\\n", " ").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            spec, *hashes = line.split("--hash=")
            entries.append((Requirement(spec), [h.strip() for h in hashes]))
    return entries


def locked_versions(path: Path, environment: dict[str, str]) -> dict[str, str]:
    """The lock's version of every package it installs in `environment` (marker variables)."""
    versions = {}
    for requirement, _ in locked(path):
        if requirement.marker is None or requirement.marker.evaluate(environment):
            (specifier,) = requirement.specifier
            versions[canonicalize_name(requirement.name)] = specifier.version
    return versions
