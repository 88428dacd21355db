"""The real image: built from the Dockerfile with podman, run as docker-compose.yml runs it.

The base is a local stand-in (harness/podman.py) because python:3.11-slim cannot be pulled here.
Without podman these tests skip with the reason; FMNIST_REQUIRE_SYSTEM_TOOLS=1 (.ci/run) turns
the skip into a failure.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from harness import SHIPPED_MODEL_DIR, container
from harness.images import catalogue_photo, encode, garment
from harness.podman import BASE_IMAGE, IMAGE, Container, Podman, api_compose_file, cache_dir
from harness.server import free_port
from service.inference.convert import ARTIFACTS
from service.inference.model import list_versions, load_version
from service.settings import DEFAULT_RUNTIME
from tests.skips import require_program
from tests.test_faults import SHUTDOWN, in_flight, read_response, start_request, wait_for
from tests.test_metrics import REQUESTS_TOTAL, scrape, total

pytestmark = [pytest.mark.container, pytest.mark.slow]

# Issue 27's targets for the image on the stand-in base: at most 350 MB over the base, ready
# within 1.5 s of the entry script's start (docs/benchmarks.md, "The image", measures both).
# The test times from the `podman run` call, podman's own work included, on a machine other
# tests load: three times the target still fails a start that converts the model again.
MAX_BYTES_OVER_BASE = 350e6
START_TARGET_S = 1.5
START_MARGIN = 3
PHOTO = encode(catalogue_photo(garment(label=2)), "JPEG", quality=95)
OTHER = encode(garment(label=8), "PNG")


@pytest.fixture(scope="module")
def podman() -> Podman:
    """Podman with the stand-in base imported and the project's image built."""
    binary = require_program("podman")
    require_program("runc")
    podman = Podman(binary, cache_dir())
    if not podman.has_image(BASE_IMAGE):
        podman.ensure_base(require_program("mmdebstrap"))
    seconds = podman.build()
    print(f"built {IMAGE} in {seconds:.0f} s")
    return podman


@pytest.fixture(scope="module")
def api(podman: Podman) -> Iterator[Container]:
    """One container of the image for the module's read-only checks."""
    server = Container(podman, "fmnist-test-api", free_port(), free_port()).start()
    yield server
    server.stop()


def predict(api: Container, **request) -> list[dict]:
    """POST /predict; return its predictions, failing on any status but 200."""
    response = requests.post(api.url + "/predict", timeout=60, **request)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def probabilities(prediction: dict) -> np.ndarray:
    """A prediction's class probabilities, in class order."""
    return np.array(list(prediction["probabilities"].values()))


def test_image_is_ready_and_serves_the_shipped_model(api):
    assert requests.get(api.url + "/readyz", timeout=5).json()["status"] == "ready"
    assert api.ready_seconds < START_TARGET_S * START_MARGIN, api.logs()
    (start_period,) = re.findall(r"--start-period=(\d+)s", container.only("HEALTHCHECK"))
    assert START_TARGET_S * START_MARGIN <= int(start_period)
    model = requests.get(api.url + "/v1/models/fashion_mnist", timeout=5).json()
    (status,) = model["model_version_status"]
    assert int(status["version"]) == list_versions(SHIPPED_MODEL_DIR)[-1]


def test_predict_answers_all_three_request_forms_alike(api):
    raw = predict(api, data=PHOTO, headers={"Content-Type": "image/jpeg"})
    files = [("image", ("photo.jpg", PHOTO, "image/jpeg")), ("image", ("o.png", OTHER))]
    multipart = predict(api, files=files)
    pixels = np.asarray(Image.open(io.BytesIO(OTHER))).tolist()
    instances = [{"b64": base64.b64encode(PHOTO).decode()}, pixels]
    as_json = predict(api, json={"instances": instances})
    assert len(raw) == 1 and len(multipart) == len(as_json) == 2
    for first in (multipart[0], as_json[0]):
        np.testing.assert_allclose(probabilities(first), probabilities(raw[0]), atol=1e-6)
    np.testing.assert_allclose(probabilities(multipart[1]), probabilities(as_json[1]), atol=1e-6)


def model_input(api: Container, upload: bytes, content_type: str) -> np.ndarray:
    """The 28x28 image the model sees for an upload, as the service's /preprocess shows it."""
    seen = requests.post(
        api.url + "/preprocess", data=upload, headers={"Content-Type": content_type}, timeout=30
    )
    assert seen.status_code == 200, seen.text
    return np.asarray(Image.open(io.BytesIO(seen.content)))


def test_every_request_form_answers_the_hosts_litert_probabilities(api):
    # The image and the tests install the same LiteRT and load the same exported artifact of
    # the shipped version: the same numbers, all three forms of /predict alike.
    pixels = np.stack([model_input(api, PHOTO, "image/jpeg"), model_input(api, OTHER, "image/png")])
    shipped = load_version(SHIPPED_MODEL_DIR, list_versions(SHIPPED_MODEL_DIR)[-1], DEFAULT_RUNTIME)
    host = shipped.predict(pixels)
    files = [("image", ("photo.jpg", PHOTO, "image/jpeg")), ("image", ("o.png", OTHER))]
    instances = [
        {"b64": base64.b64encode(PHOTO).decode()},
        {"b64": base64.b64encode(OTHER).decode()},
    ]
    forms = {
        "raw": predict(api, data=PHOTO, headers={"Content-Type": "image/jpeg"}),
        "multipart": predict(api, files=files),
        "json": predict(api, json={"instances": instances}),
    }
    assert [len(served) for served in forms.values()] == [1, 2, 2]
    for form, served in forms.items():
        for prediction, expected in zip(served, host, strict=False):
            np.testing.assert_allclose(probabilities(prediction), expected, atol=1e-6, err_msg=form)


def test_grpc_in_the_image_answers_the_hosts_litert_probabilities(api):
    # The image's workers serve the Open Inference Protocol over gRPC too (no TensorFlow for its
    # generated messages): health, then infer with raw contents, as NVIDIA's client sends it.
    import grpc
    import tritonclient.grpc as grpcclient
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = f"127.0.0.1:{api.grpc_port}"
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    pixels = model_input(api, OTHER, "image/png")[np.newaxis]
    shipped = load_version(SHIPPED_MODEL_DIR, list_versions(SHIPPED_MODEL_DIR)[-1], DEFAULT_RUNTIME)
    client = grpcclient.InferenceServerClient(target)
    tensor = grpcclient.InferInput("images", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels)
    result = client.infer("fashion_mnist", [tensor])
    np.testing.assert_allclose(result.as_numpy("probabilities"), shipped.predict(pixels), atol=1e-6)


def test_the_image_has_no_tensorflow(podman):
    result = podman("run", "--rm", "--network=none", IMAGE, "python", "-c", "import tensorflow",
                    check=False)  # fmt: skip
    assert result.returncode != 0
    assert "No module named 'tensorflow'" in result.stderr, result.stderr


def test_metrics_are_on_their_own_port_only(api):
    predict(api, data=OTHER, headers={"Content-Type": "image/png"})
    # Read until the worker has written its metric updates (every FLUSH_INTERVAL, or later).
    counted = scrape(api, until=lambda samples: total(samples, REQUESTS_TOTAL) >= 1)
    assert total(counted, REQUESTS_TOTAL, endpoint="/predict") >= 1
    assert requests.get(api.url + "/metrics", timeout=10).status_code == 404


def test_the_images_healthcheck_is_kept_and_passes(api, podman):
    healthcheck = podman.inspect_image()["Healthcheck"]
    assert healthcheck["Test"] == ["CMD", *container.healthcheck_command()]
    options = container.only("HEALTHCHECK").split("CMD", 1)[0]
    for option, key in [
        ("interval", "Interval"),
        ("timeout", "Timeout"),
        ("start-period", "StartPeriod"),
    ]:
        (seconds,) = re.findall(rf"--{option}=(\d+)s", options)
        assert healthcheck[key] == int(seconds) * 10**9, option
    result = podman("healthcheck", "run", api.name, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_root_filesystem_is_read_only_and_tmp_is_writable(api):
    for path in ("/app/service/written", "/opt/venv/written", "/written"):
        result = api.exec("python", "-c", f"open('{path}', 'w')", check=False)
        assert result.returncode != 0 and "Read-only file system" in result.stderr, path
    assert api.exec("python", "-c", "open('/tmp/written', 'w')").returncode == 0


def assert_unprivileged(server: Container) -> None:
    """Every process in the container: the service user, no capabilities, no new privileges."""
    code = (
        "import json, pathlib; print(json.dumps({p.name: [(p / 'status').read_text(),"
        " (p / 'cmdline').read_text()] for p in pathlib.Path('/proc').glob('[0-9]*')}))"
    )
    processes = json.loads(server.exec("python", "-c", code).stdout)
    gunicorn = [pid for pid, (_, cmdline) in processes.items() if "gunicorn" in cmdline]
    assert "1" in gunicorn, "bin/serve execs gunicorn, which gets the container's signals"
    assert len(gunicorn) >= 3, "the master and two workers"
    uid, gid = container.only("USER").split(":")
    for pid, (status, _) in processes.items():
        fields = dict(line.split(":\t", 1) for line in status.splitlines())
        assert fields["Uid"].split() == [uid] * 4, pid
        assert fields["Gid"].split() == [gid] * 4, pid
        assert int(fields["CapEff"], 16) == 0 and int(fields["CapPrm"], 16) == 0, pid
        assert fields["NoNewPrivs"].strip() == "1", pid


def test_every_process_runs_as_the_service_user_without_capabilities(api):
    assert_unprivileged(api)


def test_installed_packages_are_the_runtime_lock_without_the_build_tools(podman):
    code = (
        "import importlib.metadata as m, json, platform, sys;"
        "print(json.dumps([{d.metadata['Name']: d.version for d in m.distributions()},"
        " {'sys_platform': sys.platform, 'platform_machine': platform.machine(),"
        " 'python_full_version': platform.python_version(),"
        " 'python_version': '.'.join(platform.python_version_tuple()[:2]),"
        " 'platform_system': platform.system(), 'os_name': 'posix',"
        " 'implementation_name': sys.implementation.name,"
        " 'platform_python_implementation': platform.python_implementation()}]))"
    )
    installed, environment = json.loads(podman.python(code))
    installed = {container.canonicalize_name(name): v for name, v in installed.items()}
    locked = container.locked_versions(container.RUNTIME_LOCK, environment)
    removed = container.uninstalled_in_builder()
    assert removed == {"pip", "setuptools"}, "the installers venv puts in, and nothing else"
    assert installed == {name: v for name, v in locked.items() if name not in removed}


def test_the_image_holds_no_pip_and_no_caches(podman):
    code = (
        "import importlib.util, pathlib;"
        "print(importlib.util.find_spec('pip') is None,"
        " any(pathlib.Path('/opt/venv/bin').glob('pip*')),"
        " [str(p) for p in pathlib.Path('/').glob('*/.cache')] + "
        " [str(p) for p in pathlib.Path('/root').glob('.cache')])"
    )
    no_pip, pip_scripts, caches = podman.python(code).split(" ", 2)
    assert no_pip == "True" and pip_scripts == "False"
    assert caches.strip() == "[]"
    size = podman.inspect_image()["Size"]
    base = json.loads(podman("image", "inspect", BASE_IMAGE).stdout)[0]["Size"]
    assert size - base <= MAX_BYTES_OVER_BASE, f"{size / 1e6:.0f} MB on a {base / 1e6:.0f} MB base"


@pytest.fixture
def version_without_its_artifact() -> Iterator[Path]:
    """The version after the shipped one: a copy of it without the LiteRT artifact of the
    runtime the image serves, in a folder the image's user can read."""
    folder = Path(tempfile.mkdtemp(prefix="fmnist-unconverted-"))
    folder.chmod(0o755)
    shipped = list_versions(SHIPPED_MODEL_DIR)[-1]
    copy = folder / str(shipped + 1)
    shutil.copytree(SHIPPED_MODEL_DIR / str(shipped), copy)
    (copy / ARTIFACTS[DEFAULT_RUNTIME]).unlink()
    yield copy
    shutil.rmtree(folder)


def test_a_version_without_its_litert_artifact_is_refused_and_the_served_one_answers(
    podman, version_without_its_artifact
):
    shipped = str(list_versions(SHIPPED_MODEL_DIR)[-1])
    unconverted = version_without_its_artifact.name
    server = Container(podman, "fmnist-test-refusal", free_port(), free_port())
    server.start(
        f"--volume={version_without_its_artifact}:/app/models/fashion_mnist/{unconverted}:ro",
        "--env=FMNIST_MODEL_VERSIONS=all",  # both are candidates
    )
    try:
        workers = int(container.compose()["services"]["api"]["environment"]["FMNIST_WORKERS"])
        # Each worker refuses it once, without TensorFlow to convert it, and counts that.
        failures = "fmnist_model_load_failures_total"
        counted = scrape(server, until=lambda s: total(s, failures) >= workers)
        assert total(counted, failures, reason="missing_artifact") == workers
        assert total(counted, failures) == workers
        artifact = ARTIFACTS[DEFAULT_RUNTIME]
        refusals = [
            line
            for line in server.logs().splitlines()
            if f"version {unconverted} is not served" in line
        ]
        assert len(refusals) == workers, server.logs()
        for line in refusals:
            assert artifact in line and "python -m training --from-version" in line, line
            assert "--serving-artifacts" in line, line
        assert "Traceback" not in server.logs()
        status = requests.get(server.url + "/v1/models/fashion_mnist", timeout=10).json()
        states = {s["version"]: s for s in status["model_version_status"]}
        assert states.keys() == {shipped, unconverted}
        assert states[shipped]["state"] == "AVAILABLE"
        assert states[unconverted]["state"] == "END"
        assert artifact in states[unconverted]["status"]["error_message"]
        assert predict(server, data=OTHER, headers={"Content-Type": "image/png"})
    finally:
        server.stop()


def test_sigterm_lets_an_in_flight_request_finish_and_exits_0(podman):
    server = Container(podman, "fmnist-test-sigterm", free_port(), free_port()).start()
    try:
        sock = start_request(server, OTHER, len(OTHER) // 2, "image/png")
        # A worker's thread is waiting for the rest of the body; then shutdown begins.
        wait_for(lambda: in_flight(server) >= 1, 30, "the upload never reached a thread")
        podman("kill", "--signal=TERM", server.name)
        wait_for(lambda: SHUTDOWN in server.logs(), 30, "the master never began shutting down")
        sock.sendall(OTHER[len(OTHER) // 2 :])
        status, body = read_response(sock)
        assert status == 200 and b'"predictions"' in body
        podman("wait", server.name, timeout=40)
        state = server.state()
        assert not state["Running"] and state["ExitCode"] == 0, server.logs()
    finally:
        server.stop()


def test_podman_compose_brings_up_the_api_service(podman, tmp_path):
    project = "fmnist-test"
    command = [require_program("podman-compose"), f"--project-name={project}"]
    command += [f"--file={api_compose_file(tmp_path, free_port())}"]
    podman.run_configured([*command, "up", "--detach", "api"])
    try:
        server = Container(podman, f"{project}_api_1", 0, 0)
        config = server.inspect()
        ports = container.service_port_defaults()
        published = config["NetworkSettings"]["Ports"]
        assert not published.get(f"{ports['metrics']}/tcp"), "metrics stay inside the network"
        (api_port,) = published[f"{ports['api']}/tcp"]
        server.url = f"http://127.0.0.1:{api_port['HostPort']}"
        server.wait_ready()
        predict(server, data=PHOTO, headers={"Content-Type": "image/jpeg"})
        # Prometheus's view: another container on the compose network scrapes api:9100.
        scrape = (
            "import urllib.request;"
            f" urllib.request.urlopen('http://api:{ports['metrics']}/metrics', timeout=10)"
        )
        podman("run", "--rm", f"--network={project}_default", IMAGE, "python", "-c", scrape)
        assert podman("healthcheck", "run", server.name, check=False).returncode == 0
        assert config["HostConfig"]["ReadonlyRootfs"] is True
        limits = container.compose()["services"]["api"]["deploy"]["resources"]["limits"]
        assert config["HostConfig"]["NanoCpus"] == float(limits["cpus"]) * 10**9
        amount, unit = limits["memory"][:-1], limits["memory"][-1]
        assert config["HostConfig"]["Memory"] == int(amount) * {"m": 2**20, "g": 2**30}[unit]
        assert_unprivileged(server)
        # podman-compose 1.0.3 ignores stop_grace_period: stop with compose's own grace period.
        grace = container.compose()["services"]["api"]["stop_grace_period"].rstrip("s")
        podman("stop", f"--time={grace}", server.name, timeout=60)
        assert server.state()["ExitCode"] == 0, server.logs()
    finally:
        podman.run_configured([*command, "down"], check=False)
        podman("network", "rm", "--force", f"{project}_default", check=False)
