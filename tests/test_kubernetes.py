"""deploy/k8s/: the core objects against Kubernetes's schemas, the custom resources' required
fields, and that probes, ports, image and security agree with the Dockerfile and the service,
and the Ingress's limits with the compose front door's (deploy/nginx/fashion-mnist.conf)."""

from __future__ import annotations

import re
import time
import tomllib
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate
import pytest
import requests
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness import ROOT, container
from harness.nginx import seconds, shipped, shipped_directives, size

K8S_DIR = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.37.0"
CORE_KINDS = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress"}
IMAGE_NAME = "fashion-mnist-serving"


def manifests() -> list[dict[str, Any]]:
    """Every object under deploy/k8s/, kustomizations left out."""
    return [
        doc
        for path in sorted(K8S_DIR.rglob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
    ]


def one(kind: str) -> dict[str, Any]:
    """The one object of `kind`."""
    (found,) = [doc for doc in manifests() if doc["kind"] == kind]
    return found


def api_container() -> dict[str, Any]:
    """The Deployment's container."""
    (found,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    return found


def predictor_container() -> dict[str, Any]:
    """The InferenceService's predictor container."""
    (found,) = one("InferenceService")["spec"]["predictor"]["containers"]
    return found


def image_tag() -> str:
    """The image tag every manifest uses: the project's version."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@pytest.mark.parametrize("kind", sorted(CORE_KINDS))
def test_core_object_validates_against_current_kubernetes(kind):
    version = kubernetes_validate.validate(one(kind), KUBERNETES_VERSION, strict=True)
    assert version == KUBERNETES_VERSION.rsplit(".", 1)[0]


def test_schema_validation_rejects_a_broken_object():
    # The schemas really bind: a port given as text is refused.
    broken = one("Service")
    broken["spec"]["ports"][0]["port"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_inference_service_pod_spec_validates_as_a_core_pod():
    # KServe inlines a core PodSpec in the predictor; check that part with the core schema.
    predictor = one("InferenceService")["spec"]["predictor"]
    pod_spec = {k: predictor[k] for k in ("containers", "volumes", "securityContext")}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": pod_spec}
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("folder", [K8S_DIR, K8S_DIR / "kserve"])
def test_kustomization_lists_every_manifest_and_tags_the_image(folder):
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    files = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert kustomization["images"] == [{"name": IMAGE_NAME, "newTag": image_tag()}]


def test_deployment_and_inference_service_run_the_composed_image():
    image = f"{IMAGE_NAME}:{image_tag()}"
    assert container.compose()["services"]["api"]["image"] == image
    assert api_container()["image"] == image
    assert predictor_container()["image"] == image


def test_container_ports_are_the_dockerfiles_and_the_services_defaults():
    defaults = container.service_port_defaults()
    ports = {p["name"]: p["containerPort"] for p in api_container()["ports"]}
    assert ports == {
        "http": defaults["api"],
        "grpc": defaults["grpc"],
        "metrics": defaults["metrics"],
    }
    assert set(ports.values()) == container.exposed_ports()


def test_service_routes_every_port_to_the_pods():
    service = one("Service")
    pod_labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container_ports = {p["name"]: p["containerPort"] for p in api_container()["ports"]}
    routed = {p["targetPort"]: p["port"] for p in service["spec"]["ports"]}
    assert routed == container_ports
    # Gateways and meshes speak HTTP/2 to the gRPC port, HTTP/1.1 to the others.
    protocols = {p["name"]: p.get("appProtocol") for p in service["spec"]["ports"]}
    assert protocols == {"http": None, "grpc": "grpc", "metrics": None}


def test_probes_are_the_images_healthcheck_and_the_grpc_health_service(live_server):
    probes = {kind: api_container()[kind] for kind in ("readinessProbe", "startupProbe")}
    assert probes["readinessProbe"]["httpGet"]["path"] == container.healthcheck_path() == "/readyz"
    assert probes["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert {probe["httpGet"]["port"] for probe in probes.values()} == {"http"}
    for probe in probes.values():
        assert answers_200(live_server.url + probe["httpGet"]["path"]), probe
    # Liveness asks the standard health service on the gRPC port (no service name: the server's).
    liveness = api_container()["livenessProbe"]
    assert liveness["grpc"] == {"port": container.service_port_defaults()["grpc"]}
    assert grpc_serving(f"127.0.0.1:{live_server.grpc_port}")


def grpc_serving(target: str) -> bool:
    """Whether grpc.health.v1's Check of the whole server (service "") answers SERVING, as the
    kubelet's gRPC probe asks it."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def answers_200(url: str, timeout: float = 60) -> bool:
    """Whether `url` answers 200 within `timeout`: each worker turns ready on its own."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if requests.get(url, timeout=5).status_code == 200:
            return True
        time.sleep(0.5)
    return False


def test_predictor_speaks_v2_on_the_api_port_with_the_same_probes():
    predictor = predictor_container()
    defaults = container.service_port_defaults()
    assert predictor["name"] == "kserve-container"
    assert {"name": "PROTOCOL", "value": "v2"} in predictor["env"]
    assert [p["containerPort"] for p in predictor["ports"]] == [defaults["api"]]
    assert predictor["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": defaults["api"]}
    assert predictor["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": defaults["api"]}
    annotations = one("InferenceService")["spec"]["predictor"]["annotations"]
    assert annotations["prometheus.kserve.io/port"] == str(defaults["metrics"])
    assert annotations["prometheus.kserve.io/path"] == "/metrics"


def test_predictor_documents_grpc_v2_on_the_grpc_port():
    # Knative routes one port: gRPC is the documented alternative, in the manifest's comment.
    text = (K8S_DIR / "kserve" / "inferenceservice.yaml").read_text()
    block = "\n".join(re.findall(r"^\s*#   (.*)$", text, re.MULTILINE))
    predictor = yaml.safe_load(block)["predictor"]
    assert predictor["protocolVersion"] == "grpc-v2"
    (box,) = predictor["containers"]
    assert box["name"] == predictor_container()["name"]
    assert box["ports"] == [
        {
            "name": "h2c",
            "containerPort": container.service_port_defaults()["grpc"],
            "protocol": "TCP",
        }
    ]


def test_inference_service_required_fields():
    isvc = one("InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["metadata"]["name"]
    predictor = isvc["spec"]["predictor"]
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]


def test_service_monitor_scrapes_the_metrics_port_of_the_service():
    monitor = one("ServiceMonitor")
    service = one("Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert port["port"] == container.service_port_defaults()["metrics"]
    assert endpoint["path"] == "/metrics"


def test_autoscaler_and_disruption_budget_target_the_deployment():
    deployment = one("Deployment")
    hpa = one("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    pdb = one("PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pdb["minAvailable"] < hpa["minReplicas"], "a drain must be able to evict a pod"


@pytest.mark.parametrize("kind", ["Deployment", "InferenceService"])
def test_pods_run_as_the_images_user_on_a_read_only_root(kind):
    obj = one(kind)
    pod = obj["spec"]["template"]["spec"] if kind == "Deployment" else obj["spec"]["predictor"]
    (box,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == container.image_user()
    assert box["securityContext"]["readOnlyRootFilesystem"] is True
    assert box["securityContext"]["allowPrivilegeEscalation"] is False
    assert box["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert box["resources"]["requests"] and box["resources"]["limits"]
    (mount,) = box["volumeMounts"]
    (volume,) = pod["volumes"]
    assert mount["name"] == volume["name"] and "emptyDir" in volume
    assert Path(container.image_env()["PROMETHEUS_MULTIPROC_DIR"]).is_relative_to(
        mount["mountPath"]
    )


INGRESS_NGINX = "nginx.ingress.kubernetes.io/"


def test_ingress_routes_the_services_api_port_only():
    ingress = one("Ingress")["spec"]
    service = one("Service")
    assert ingress["ingressClassName"] == "nginx"
    (rule,) = ingress["rules"]
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    backend = path["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == backend["port"]["name"]]
    assert port["port"] == container.service_port_defaults()["api"]


def test_ingress_annotations_are_the_front_doors_limits():
    annotations = {
        name.removeprefix(INGRESS_NGINX): value
        for name, value in one("Ingress")["metadata"]["annotations"].items()
    }
    assert size(annotations["proxy-body-size"]) == size(shipped("client_max_body_size"))
    assert annotations["client-body-buffer-size"] == shipped("client_body_buffer_size")
    for name in ("proxy-request-buffering", "proxy-buffering", "proxy-http-version"):
        assert annotations[name] == shipped(name.replace("-", "_")), name
    for name in ("proxy-connect-timeout", "proxy-send-timeout", "proxy-read-timeout"):
        assert int(annotations[name]) == seconds(shipped(name.replace("-", "_"))), name


def test_ingress_note_gives_the_controller_wide_values_of_the_front_door():
    # What no annotation sets is listed in the Ingress's comment, for the controller's ConfigMap.
    text = (K8S_DIR / "ingress.yaml").read_text()
    noted = dict(re.findall(r'^#\s+([a-z-]+): "([^"]*)"$', text, re.MULTILINE))
    server = shipped_directives("server")
    (upstream_idle,) = shipped_directives("upstream")["keepalive_timeout"]
    assert noted == {
        "client-header-timeout": str(int(seconds(shipped("client_header_timeout")))),
        "client-body-timeout": str(int(seconds(shipped("client_body_timeout")))),
        "keep-alive": str(int(seconds(server["keepalive_timeout"][0]))),
        "large-client-header-buffers": shipped("large_client_header_buffers"),
        "upstream-keepalive-timeout": str(int(seconds(upstream_idle))),
    }
