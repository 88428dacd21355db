"""Model versions: the serving policy, picking up new folders, surviving broken ones, and
changing versions under load without a failed request."""

from __future__ import annotations

import gc
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from prometheus_client import REGISTRY

from harness import ROOT
from harness.images import encode, garment
from harness.server import LiveServer
from service.errors import ModelVersionNotFound
from service.inference import runtime
from service.inference.batching import BatchingConfig
from service.inference.convert import ARTIFACTS, METADATA_KEY, SIGNATURE_ARTIFACT
from service.inference.model import list_versions, load_version
from service.inference.versions import ModelVersions, VersionPolicy
from service.observability.buffers import MetricBuffer

MODEL = "fashion_mnist"
IMAGES = np.stack([garment(label) for label in (0, 5, 9)])


@pytest.fixture(scope="session")
def trained_versions(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_data_dir: Path
) -> Path:
    """Versions 1 to 3 of the tiny model, each trained with its own seed so their answers differ."""
    from training.pipeline import run
    from training.train import TrainConfig

    output = tmp_path_factory.mktemp("versions") / MODEL
    shutil.copytree(tiny_model_dir / "1", output / "1")
    for version in (2, 3):
        config = TrainConfig(model="dfn", epochs=1, batch_size=64, seed=version)
        run(config, tiny_data_dir, output, version, None)
    return output


@pytest.fixture(scope="session")
def expected(trained_versions: Path) -> dict[int, np.ndarray]:
    """Each version's probabilities for IMAGES, computed by loading it directly."""
    return {v: load_version(trained_versions, v).predict(IMAGES) for v in (1, 2, 3)}


def add_version(source: Path, model_dir: Path, version: int, into: int | str = "") -> Path:
    """Copy a trained version folder into `model_dir` (into folder `into`, if given)."""
    return Path(shutil.copytree(source / str(version), model_dir / str(into or version)))


def add_broken(source: Path, model_dir: Path, version: int, how: str) -> None:
    """Add a version folder that cannot load: a corrupt saved_model.pb (and no LiteRT
    artifacts, which would be served without reading it), or no metadata.json."""
    folder = add_version(source, model_dir, 1, into=version)
    if how == "corrupt":
        (folder / "saved_model.pb").write_bytes(b"\x00 not a protocol buffer \xff" * 10)
        shutil.rmtree(folder / "litert")
    else:
        (folder / "metadata.json").unlink()


def versions_for(model_dir: Path, policy: str = "latest", **options) -> ModelVersions:
    """Served versions that rescan only when told to (refresh), for step-by-step tests."""
    versions = ModelVersions(model_dir, policy, **options)
    versions.refresh()
    return versions


@pytest.mark.parametrize(
    ("text", "kind", "versions"),
    [
        ("latest", "latest", set()),
        (" ALL ", "all", set()),
        ("3", "specific", {3}),
        ("1, 3,007", "specific", {1, 3, 7}),
    ],
)
def test_version_policy_reads_the_setting(text, kind, versions):
    policy = VersionPolicy.parse(text)
    assert policy.kind == kind and policy.versions == versions


@pytest.mark.parametrize("text", ["", "newest", "1,,2", "-1", "1.5", "²", "1;2"])
def test_a_bad_version_setting_fails_at_start_up(text, tmp_path):
    from service import create_app

    with pytest.raises(ValueError, match="FMNIST_MODEL_VERSIONS"):
        create_app({"model_dir": tmp_path, "model_versions": text})


def test_latest_serves_the_newest_and_picks_up_a_new_folder(trained_versions, expected, tmp_path):
    add_version(trained_versions, tmp_path, 1)
    versions = versions_for(tmp_path)
    assert versions.ready and list(versions.served) == [1]
    add_version(trained_versions, tmp_path, 2)
    versions.refresh()
    assert list(versions.served) == [2]
    model = versions.current()
    assert model.version == 2
    np.testing.assert_allclose(model.predict(IMAGES), expected[2], atol=1e-6)
    assert not np.allclose(expected[1], expected[2], atol=1e-3)  # the versions really differ
    with pytest.raises(ModelVersionNotFound):
        versions.current(1)


@pytest.mark.parametrize("how", ["corrupt", "no_metadata"])
def test_a_broken_new_version_never_replaces_the_served_one(
    trained_versions, expected, tmp_path, caplog, how
):
    add_version(trained_versions, tmp_path, 1)
    add_version(trained_versions, tmp_path, 2)
    versions = versions_for(tmp_path)
    add_broken(trained_versions, tmp_path, 3, how)
    with caplog.at_level(logging.ERROR, logger="service.inference.versions"):
        versions.refresh()
        versions.refresh()  # unchanged since it failed: not tried again
    assert [r.message for r in caplog.records] == [
        f"model version 3 in {tmp_path / '3'} failed to load"
    ]
    assert list(versions.served) == [2] and versions.ready
    assert list(versions.failures) == [3]
    np.testing.assert_allclose(versions.current().predict(IMAGES), expected[2], atol=1e-6)
    shutil.rmtree(tmp_path / "3")
    add_version(trained_versions, tmp_path, 3)  # a fixed folder is tried again
    versions.refresh()
    assert list(versions.served) == [3] and not versions.failures


def test_latest_starts_on_the_newest_version_that_loads(trained_versions, tmp_path):
    add_version(trained_versions, tmp_path, 1)
    add_broken(trained_versions, tmp_path, 2, "corrupt")
    versions = versions_for(tmp_path)
    assert versions.ready and list(versions.served) == [1]


def test_all_and_a_list_choose_the_served_versions(trained_versions, expected, tmp_path):
    for version in (1, 2, 3):
        add_version(trained_versions, tmp_path, version)
    everything = versions_for(tmp_path, "all")
    assert sorted(everything.served) == [1, 2, 3] and everything.current().version == 3
    for version in (1, 2, 3):
        model = everything.current(version)
        assert model.version == version
        np.testing.assert_allclose(model.predict(IMAGES), expected[version], atol=1e-6)
    listed = versions_for(tmp_path, "1,2,9")
    assert sorted(listed.served) == [1, 2] and listed.current().version == 2
    with pytest.raises(ModelVersionNotFound, match="served versions: 1, 2"):
        listed.current(3)


def test_version_folders_are_integers_leading_zeros_allowed(trained_versions, tmp_path):
    add_version(trained_versions, tmp_path, 1, into="0007")  # TF Serving's own examples pad
    for other in ("²", "1a", ".tmp-8-x"):  # a digit that int() refuses, a name, a staging folder
        add_version(trained_versions, tmp_path, 1, into=other)
    assert list_versions(tmp_path) == [7]
    versions = versions_for(tmp_path)
    assert versions.current(7).path == tmp_path / "0007"


def test_removed_versions_are_retired_but_never_the_last(trained_versions, tmp_path):
    add_version(trained_versions, tmp_path, 1)
    add_version(trained_versions, tmp_path, 2)
    versions = versions_for(tmp_path, "all")
    shutil.rmtree(tmp_path / "2")
    versions.refresh()
    assert list(versions.served) == [1]
    shutil.rmtree(tmp_path / "1")
    versions.refresh()
    assert list(versions.served) == [1]  # nothing left to swap in: keep serving


def test_readiness_waits_for_a_version_to_appear(trained_versions, tmp_path):
    versions = versions_for(tmp_path)
    assert not versions.ready and "no model version" in (versions.error or "")
    add_broken(trained_versions, tmp_path, 1, "no_metadata")
    versions.refresh()
    assert not versions.ready and "version 1: FileNotFoundError" in (versions.error or "")
    add_version(trained_versions, tmp_path, 2)
    versions.refresh()
    assert versions.ready and versions.error is None


@pytest.fixture
def versions_server(trained_versions: Path, tmp_path: Path) -> Iterator[LiveServer]:
    """gunicorn serving versions 1 and 2 of a folder it rescans every 0.3 s."""
    model_dir = tmp_path / MODEL
    for version in (1, 2):
        add_version(trained_versions, model_dir, version)
    server = LiveServer(
        model_dir,
        tmp_path / "gunicorn.log",
        FMNIST_WORKERS="1",  # one worker: what it serves is what every request sees
        FMNIST_MODEL_VERSIONS="1,2,3,4",
        FMNIST_MODEL_POLL_SECONDS="0.3",
    )
    server.start()
    yield server
    server.stop()


def v2_infer(server: LiveServer, version: str = "") -> tuple[str, np.ndarray]:
    """Infer IMAGES through KServe v2 JSON; return the version that answered and the output."""
    path = f"/versions/{version}" if version else ""
    response = requests.post(
        f"{server.url}/v2/models/{MODEL}{path}/infer",
        json={
            "inputs": [
                {
                    "name": "images",
                    "shape": [3, 28, 28],
                    "datatype": "UINT8",
                    "data": IMAGES.tolist(),
                }
            ]
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return body["model_version"], np.asarray(body["outputs"][0]["data"]).reshape(3, 10)


def wait_for_status(server: LiveServer, version: str, state: str, timeout: float = 60) -> dict:
    """Poll the TF Serving status until `version` shows `state`; return its entry."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = requests.get(f"{server.url}/v1/models/{MODEL}", timeout=5).json()
        for entry in body["model_version_status"]:
            if entry["version"] == version and entry["state"] == state:
                return entry
        time.sleep(0.2)
    raise AssertionError(f"version {version} never reached {state}:\n{server.logs()}")


@pytest.mark.slow
def test_live_versions_routes_pickup_and_a_broken_folder(
    versions_server, trained_versions, expected
):
    server = versions_server
    model_dir = Path(server.env["FMNIST_MODEL_DIR"])
    wait_for_status(server, "1", "AVAILABLE")  # ready came with the default, 2; 1 loads next
    for version in ("1", "2"):
        answered, probabilities = v2_infer(server, version)
        assert answered == version
        np.testing.assert_allclose(probabilities, expected[int(version)], atol=1e-6)
        tf_serving = requests.post(
            f"{server.url}/v1/models/{MODEL}/versions/{version}:predict",
            json={"instances": IMAGES.tolist()},
            timeout=30,
        ).json()["predictions"]
        np.testing.assert_allclose(tf_serving, expected[int(version)], atol=1e-6)
    assert v2_infer(server)[0] == "2"

    add_version(trained_versions, model_dir, 3)  # copied in place, file by file
    wait_for_status(server, "3", "AVAILABLE")
    answered, probabilities = v2_infer(server)
    assert answered == "3"
    np.testing.assert_allclose(probabilities, expected[3], atol=1e-6)
    assert requests.get(f"{server.url}/readyz", timeout=5).json()["version"] == 3

    add_broken(trained_versions, model_dir, 4, "corrupt")
    failed = wait_for_status(server, "4", "END")
    assert failed["status"]["error_code"] == "UNKNOWN" and failed["status"]["error_message"]
    assert v2_infer(server)[0] == "3" and v2_infer(server, "1")[0] == "1"
    assert requests.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200
    missing = requests.post(
        f"{server.url}/v1/models/{MODEL}/versions/4:predict",
        json={"instances": IMAGES.tolist()},
        timeout=30,
    )
    assert missing.status_code == 404 and missing.json()["code"] == "model_version_not_found"
    assert "model version 4" in server.logs() and server.process.poll() is None


def test_a_retired_version_answers_the_requests_holding_it_then_is_unloaded(
    trained_versions, expected, tmp_path, caplog
):
    add_version(trained_versions, tmp_path, 1)
    versions = versions_for(tmp_path, batching=BatchingConfig(64, 0, 16))
    held = versions.current()  # a request that found version 1 just before the swap
    add_version(trained_versions, tmp_path, 2)
    with caplog.at_level(logging.INFO, logger="service.inference.versions"):
        versions.refresh()
        assert versions.current().version == 2
        # Its queue still serves it (closing it first answered such requests 503 overloaded).
        np.testing.assert_allclose(held.batcher.predict(IMAGES), expected[1], atol=1e-6)
        assert "model version 1 unloaded" not in caplog.messages
        unloaded = weakref.ref(held)
        del held  # the last request lets go
        gc.collect()
    assert unloaded() is None and "model version 1 unloaded" in caplog.messages


def add_atomically(source: Path, model_dir: Path, version: int) -> None:
    """Write a version as python -m training does: a temporary folder, then one rename."""
    staging = add_version(source, model_dir, version, into=f".tmp-{version}")
    staging.rename(model_dir / str(version))


class Clients:
    """Threads posting /predict and v2 infer in a loop; each answer's status and version."""

    def __init__(self, server: LiveServer, threads: int) -> None:
        self.server = server
        self.answers: Counter[tuple[int, str]] = Counter()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def _run(self, number: int) -> None:
        png = encode(garment(number % 10))
        with requests.Session() as session:
            for _ in range(5000):  # bounded even if never stopped
                if self.stop.is_set():
                    return
                try:
                    self.answers[self._ask(session, png, v2=number % 2 == 0)] += 1
                except requests.RequestException as error:  # counted: it must not happen
                    self.answers[(0, type(error).__name__)] += 1

    def _ask(self, session: requests.Session, png: bytes, v2: bool) -> tuple[int, str]:
        """One /predict or v2 infer request: its status and the version that answered."""
        if v2:
            response = session.post(
                f"{self.server.url}/v2/models/{MODEL}/infer",
                json={"inputs": [V2_INPUT]},
                timeout=30,
            )
            return response.status_code, str(response.json().get("model_version"))
        response = session.post(
            self.server.url + "/predict",
            data=png,
            headers={"Content-Type": "image/png"},
            timeout=30,
        )
        return response.status_code, str(response.json().get("model", {}).get("version"))

    def wait_for_version(self, version: int, timeout: float = 90) -> None:
        """Wait until some answer came from `version`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(v == str(version) for _, v in list(self.answers)):
                return
            time.sleep(0.1)
        raise AssertionError(f"version {version} never answered: {self.answers}")


V2_INPUT = {"name": "images", "shape": [3, 28, 28], "datatype": "UINT8", "data": IMAGES.tolist()}


@pytest.mark.slow
def test_versions_added_and_removed_under_load_drop_no_request(trained_versions, tmp_path):
    model_dir = tmp_path / MODEL
    add_version(trained_versions, model_dir, 1)
    server = LiveServer(
        model_dir,
        tmp_path / "gunicorn.log",
        FMNIST_WORKERS="1",
        FMNIST_THREADS="16",
        FMNIST_MODEL_POLL_SECONDS="0.2",
    ).start()
    try:
        with Clients(server, threads=16) as clients:
            clients.wait_for_version(1)
            for version in (2, 3):
                add_atomically(trained_versions, model_dir, version)
                clients.wait_for_version(version)
            shutil.rmtree(model_dir / "3")  # the newest goes: latest falls back to 2
            before = clients.answers[(200, "2")]
            deadline = time.monotonic() + 60
            while clients.answers[(200, "2")] < before + 50 and time.monotonic() < deadline:
                time.sleep(0.1)
        answers = clients.answers
    finally:
        server.stop()
    assert {status for status, _ in answers} == {200}, answers
    assert {version for _, version in answers} == {"1", "2", "3"}, answers
    assert answers[(200, "2")] >= before + 50, answers
    log = server.log_path.read_text()
    assert "model version 1 unloaded" in log and "model version 3 unloaded" in log
    print(f"answers during the changes: {dict(answers)}")


# --- Serving artifacts: the exported LiteRT files, checked, and refused when missing ---

DEFAULT_ARTIFACT = ARTIFACTS["litert-int8"]  # the default runtime's


def load_failures(reason: str) -> float:
    """fmnist_model_load_failures_total{reason} in this process's registry."""
    value = REGISTRY.get_sample_value("fmnist_model_load_failures_total", {"reason": reason})
    return value or 0.0


def test_a_version_serves_its_exported_artifacts_without_converting(
    trained_versions, expected, tmp_path, monkeypatch
):
    folder = add_version(trained_versions, tmp_path, 1)
    listed = json.loads((folder / "metadata.json").read_text())[METADATA_KEY]
    assert set(listed) == {*ARTIFACTS.values(), SIGNATURE_ARTIFACT}

    def no_conversion(*args: object) -> Path:
        raise AssertionError("converted a version that carries its artifacts")

    monkeypatch.setattr(runtime, "converted", no_conversion)
    reference = load_version(tmp_path, 1, "savedmodel").predict(IMAGES)
    for kind, atol in (("litert", 1e-5), ("litert-int8", 0.05)):  # docs/runtimes.md
        model = load_version(tmp_path, 1, kind)
        assert model.signature_def == load_version(tmp_path, 1, "savedmodel").signature_def
        np.testing.assert_allclose(model.predict(IMAGES), reference, atol=atol)
    # The default runtime's artifact is what every other test of the version ran.
    np.testing.assert_allclose(load_version(tmp_path, 1).predict(IMAGES), expected[1], atol=1e-6)


def test_an_altered_artifact_is_refused_counted_and_the_served_version_answers(
    trained_versions, expected, tmp_path, caplog
):
    add_version(trained_versions, tmp_path, 1)
    versions = versions_for(tmp_path, "all", metric_buffer=(buffer := MetricBuffer()))
    folder = add_version(trained_versions, tmp_path, 1, into=2)
    altered = bytearray((folder / DEFAULT_ARTIFACT).read_bytes())
    altered[len(altered) // 2] ^= 0xFF
    (folder / DEFAULT_ARTIFACT).write_bytes(bytes(altered))
    before = load_failures("checksum")
    with caplog.at_level(logging.ERROR, logger="service.inference.versions"):
        versions.refresh()
    buffer.flush()
    assert list(versions.served) == [1] and list(versions.failures) == [2]
    assert "ArtifactChecksumError" in versions.failures[2].message
    assert [r.exc_info for r in caplog.records] == [None]  # one line, no traceback
    assert DEFAULT_ARTIFACT in caplog.records[0].getMessage()
    assert load_failures("checksum") == before + 1
    np.testing.assert_allclose(versions.current(1).predict(IMAGES), expected[1], atol=1e-6)


# A process without TensorFlow, as in the image: the import is blocked before anything runs.
WITHOUT_TENSORFLOW = """
import json, logging, sys
sys.modules["tensorflow"] = None
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
from pathlib import Path
from prometheus_client import REGISTRY
from service.inference.versions import ModelVersions
from service.observability.buffers import MetricBuffer
buffer = MetricBuffer()
versions = ModelVersions(Path(sys.argv[1]), "all", metric_buffer=buffer)
versions.refresh()
buffer.flush()
failures = REGISTRY.get_sample_value(
    "fmnist_model_load_failures_total", {"reason": "missing_artifact"}
)
print(json.dumps({"served": sorted(versions.served), "failures": failures}))
"""


def test_without_tensorflow_a_version_lacking_its_artifact_is_refused_in_one_line(
    trained_versions, tmp_path
):
    add_version(trained_versions, tmp_path, 1)
    shutil.rmtree(add_version(trained_versions, tmp_path, 1, into=2) / "litert")
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"served": [1], "failures": 1.0}
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert errors == [
        f"ERROR model version 2 is not served: {tmp_path / '2'} has no {DEFAULT_ARTIFACT} and "
        "TensorFlow is not installed to convert the SavedModel; add it with `python -m "
        f"training --from-version {tmp_path / '2'} --serving-artifacts` where TensorFlow is "
        "installed"
    ]
    assert "Traceback" not in result.stderr


def test_with_tensorflow_a_version_lacking_its_artifacts_is_converted(trained_versions, tmp_path):
    # Development: a SavedModel folder without artifacts (a version exported before them).
    shutil.rmtree(add_version(trained_versions, tmp_path, 1) / "litert")
    reference = load_version(tmp_path, 1, "savedmodel").predict(IMAGES)
    np.testing.assert_allclose(
        load_version(tmp_path, 1, "litert").predict(IMAGES), reference, atol=1e-5
    )
