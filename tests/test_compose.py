"""docker-compose.yml and what it mounts (nginx's front door, Prometheus's configuration,
Grafana's provisioning), checked where no Docker engine runs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from harness import ROOT, container, nginx
from service.settings import Settings
from tests.grafana import GRAFANA_DIR, load_dashboard, panels
from tests.skips import require_program

PINNED_IMAGE = re.compile(r"^[\w./-]+:(?P<tag>[\w.-]+)@sha256:[0-9a-f]{64}$")
EXACT_NGINX = re.compile(r"^nginx:\d+\.\d+\.\d+(-alpine)?(@sha256:[0-9a-f]{64})?$")


def services() -> dict:
    """The compose services by name."""
    return container.compose()["services"]


def mounts(service: str) -> dict[str, str]:
    """A service's bind mounts: container path to host path (relative to the repository)."""
    result = {}
    for volume in services()[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            result[target] = source[2:]
    return result


def test_the_stack_is_the_api_behind_nginx_prometheus_and_grafana():
    assert set(services()) == {"api", "nginx", "prometheus", "grafana"}


def test_api_is_built_from_the_dockerfile_and_publishes_nothing():
    api = services()["api"]
    ports = container.service_port_defaults()
    assert api["build"] == "."
    # Clients reach it through nginx, Prometheus scrapes it: all inside the compose network.
    assert "ports" not in api
    assert set(map(str, api["expose"])) == {str(port) for port in ports.values()}


def test_nginx_is_the_official_image_at_an_exact_release():
    image = services()["nginx"]["image"]
    assert EXACT_NGINX.match(image), f"{image}: nginx:MAJOR.MINOR.PATCH[-alpine], no moving tag"


def test_nginx_publishes_the_api_on_its_ports_and_proxies_the_api_service():
    ports = container.service_port_defaults()
    published = [port for service in services().values() for port in service.get("ports", [])]
    (api_port,) = [port for port in published if port.split(":")[0] == str(ports["api"])]
    (grpc_port,) = [port for port in published if port.split(":")[0] == str(ports["grpc"])]
    assert services()["nginx"]["ports"] == [api_port, grpc_port]
    assert api_port == f"{ports['api']}:{nginx.SHIPPED_LISTEN}"
    assert grpc_port == f"{ports['grpc']}:{nginx.SHIPPED_GRPC_LISTEN}"
    assert nginx.SHIPPED_UPSTREAM == f"api:{ports['api']}"
    assert nginx.SHIPPED_GRPC_UPSTREAM == f"api:{ports['grpc']}"
    assert services()["nginx"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_nginx_mounts_both_front_door_configurations_read_only():
    assert all(volume.endswith(":ro") for volume in services()["nginx"]["volumes"])
    # Inside the image's http block, the REST file in place of its default server.
    assert mounts("nginx") == {
        "/etc/nginx/conf.d/default.conf": nginx.SHIPPED_CONFIG.relative_to(ROOT).as_posix(),
        "/etc/nginx/conf.d/grpc.conf": nginx.SHIPPED_GRPC_CONFIG.relative_to(ROOT).as_posix(),
    }
    assert services()["nginx"]["read_only"] is True


# The gRPC front door's client limits are the REST one's, and its upstream timeouts its proxy's.
SAME_LIMITS = (
    "server_tokens",
    "client_header_timeout",
    "client_body_timeout",
    "send_timeout",
    "keepalive_timeout",
    "client_body_buffer_size",
    "large_client_header_buffers",
)


def test_grpc_front_door_has_the_rest_front_doors_limits():
    rest = nginx.shipped_directives("server")
    grpc = nginx.shipped_directives("server", nginx.SHIPPED_GRPC_CONFIG)
    for name in SAME_LIMITS:
        assert grpc[name] == rest[name], name
    for name in ("connect_timeout", "send_timeout", "read_timeout"):
        assert nginx.shipped(f"grpc_{name}", nginx.SHIPPED_GRPC_CONFIG) == nginx.shipped(
            f"proxy_{name}"
        ), name
    # A message over FMNIST_MAX_BODY_BYTES reaches the service, which refuses it with its own
    # status and code; nginx's cap stops only what goes on past it.
    body_cap = nginx.size(nginx.shipped("client_max_body_size", nginx.SHIPPED_GRPC_CONFIG))
    assert Settings().max_body_bytes < body_cap <= Settings().max_body_bytes + 2**20
    headers = nginx.shipped_directives(config=nginx.SHIPPED_GRPC_CONFIG)["grpc_set_header"]
    assert dict(value.split(None, 1) for value in headers) == {
        "X-Request-ID": "$fmnist_request_id",
        "X-Forwarded-For": "$remote_addr",
    }


def test_api_healthcheck_is_the_images_healthcheck():
    # Compose applies the image's HEALTHCHECK when the service sets none: one definition.
    assert "healthcheck" not in services()["api"]
    assert container.healthcheck_path() == "/readyz"


def test_api_is_hardened_and_bounded():
    api = services()["api"]
    assert api["restart"] in {"unless-stopped", "always", "on-failure"}
    assert api["read_only"] is True
    assert [t.split(":")[0] for t in api["tmpfs"]] == ["/tmp"]
    assert Path(container.image_env()["PROMETHEUS_MULTIPROC_DIR"]).is_relative_to("/tmp")
    limits = api["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) > 0
    assert re.fullmatch(r"\d+[mg]", limits["memory"])
    assert api["cap_drop"] == ["ALL"]


@pytest.mark.parametrize("name", ["api", "nginx", "prometheus", "grafana"])
def test_every_service_has_a_healthcheck_and_a_restart_policy(name):
    service = services()[name]
    healthcheck = service.get("healthcheck", {"test": ["CMD", *container.healthcheck_command()]})
    assert healthcheck["test"][0] in {"CMD", "CMD-SHELL"}
    assert service["restart"] != "no"


@pytest.mark.parametrize("name", ["prometheus", "grafana"])
def test_third_party_images_are_pinned_by_tag_and_digest(name):
    image = services()[name]["image"]
    match = PINNED_IMAGE.match(image)
    assert match, f"{image} needs a tag and a digest"
    assert match["tag"] != "latest"


def test_prometheus_mounts_the_projects_configuration():
    config = mounts("prometheus")["/etc/prometheus/prometheus.yml"]
    assert config == container.PROMETHEUS_CONFIG.relative_to(ROOT).as_posix()
    command = services()["prometheus"]["command"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in command


def prometheus_config() -> dict:
    """deploy/prometheus/prometheus.yml, or skip while the metrics branch has not landed."""
    if not container.PROMETHEUS_CONFIG.exists():
        pytest.skip(
            "deploy/prometheus/prometheus.yml is written on the metrics branch; "
            "this check runs once the lead merges it"
        )
    return yaml.safe_load(container.PROMETHEUS_CONFIG.read_text())


def test_prometheus_scrapes_the_api_service_on_its_metrics_port():
    targets = [
        target
        for job in prometheus_config()["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    assert f"api:{container.service_port_defaults()['metrics']}" in targets


@pytest.mark.integration  # runs promtool
def test_promtool_accepts_the_prometheus_configuration():
    prometheus_config()
    result = subprocess.run(
        [require_program("promtool"), "check", "config", str(container.PROMETHEUS_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_datasource_is_the_compose_prometheus():
    assert mounts("grafana")["/etc/grafana/provisioning"] == "deploy/grafana/provisioning"
    files = sorted((GRAFANA_DIR / "provisioning" / "datasources").glob("*.yml"))
    (datasource,) = [d for f in files for d in yaml.safe_load(f.read_text())["datasources"]]
    port = services()["prometheus"]["ports"][0].split(":")[-1]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == f"http://prometheus:{port}"
    assert datasource["isDefault"] is True
    uids = {panel["datasource"]["uid"] for panel in panels(load_dashboard())}
    assert uids == {datasource["uid"]}


def test_grafana_loads_the_dashboard_from_where_compose_mounts_it():
    files = sorted((GRAFANA_DIR / "provisioning" / "dashboards").glob("*.yml"))
    (provider,) = [p for f in files for p in yaml.safe_load(f.read_text())["providers"]]
    host_dir = mounts("grafana")[provider["options"]["path"]]
    assert (ROOT / host_dir / "fashion-mnist.json").is_file()
    home = services()["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent == Path(provider["options"]["path"])
