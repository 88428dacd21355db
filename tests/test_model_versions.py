"""Model versions: the serving policy, picking up new folders, surviving broken ones."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from service.errors import ModelVersionNotFound
from service.model import Predictor, VersionPolicy, list_versions, load_version
from tests.conftest import LiveServer
from tests.images import garment

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
    """Add a version folder that cannot load: a corrupt saved_model.pb, or no metadata.json."""
    folder = add_version(source, model_dir, 1, into=version)
    if how == "corrupt":
        (folder / "saved_model.pb").write_bytes(b"\x00 not a protocol buffer \xff" * 10)
    else:
        (folder / "metadata.json").unlink()


def predictor_for(model_dir: Path, versions: str = "latest") -> Predictor:
    """A predictor that scans only when told to (refresh), for step-by-step tests."""
    predictor = Predictor(model_dir, versions=versions)
    predictor.refresh()
    return predictor


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
    predictor = predictor_for(tmp_path)
    assert predictor.ready and list(predictor.served) == [1]
    add_version(trained_versions, tmp_path, 2)
    predictor.refresh()
    assert list(predictor.served) == [2]
    model, probabilities = predictor.predict(IMAGES)
    assert model.version == 2
    np.testing.assert_allclose(probabilities, expected[2], atol=1e-6)
    assert not np.allclose(expected[1], expected[2], atol=1e-3)  # the versions really differ
    with pytest.raises(ModelVersionNotFound):
        predictor.predict(IMAGES, version=1)


@pytest.mark.parametrize("how", ["corrupt", "no_metadata"])
def test_a_broken_new_version_never_replaces_the_served_one(
    trained_versions, expected, tmp_path, caplog, how
):
    add_version(trained_versions, tmp_path, 1)
    add_version(trained_versions, tmp_path, 2)
    predictor = predictor_for(tmp_path)
    add_broken(trained_versions, tmp_path, 3, how)
    with caplog.at_level(logging.ERROR, logger="service.model"):
        predictor.refresh()
        predictor.refresh()  # unchanged since it failed: not tried again
    assert [r.message for r in caplog.records] == [
        f"model version 3 in {tmp_path / '3'} failed to load"
    ]
    assert list(predictor.served) == [2] and predictor.ready
    assert list(predictor.failures) == [3]
    np.testing.assert_allclose(predictor.predict(IMAGES)[1], expected[2], atol=1e-6)
    shutil.rmtree(tmp_path / "3")
    add_version(trained_versions, tmp_path, 3)  # a fixed folder is tried again
    predictor.refresh()
    assert list(predictor.served) == [3] and not predictor.failures


def test_latest_starts_on_the_newest_version_that_loads(trained_versions, tmp_path):
    add_version(trained_versions, tmp_path, 1)
    add_broken(trained_versions, tmp_path, 2, "corrupt")
    predictor = predictor_for(tmp_path)
    assert predictor.ready and list(predictor.served) == [1]


def test_all_and_a_list_choose_the_served_versions(trained_versions, expected, tmp_path):
    for version in (1, 2, 3):
        add_version(trained_versions, tmp_path, version)
    everything = predictor_for(tmp_path, "all")
    assert sorted(everything.served) == [1, 2, 3] and everything.current().version == 3
    for version in (1, 2, 3):
        model, probabilities = everything.predict(IMAGES, version)
        assert model.version == version
        np.testing.assert_allclose(probabilities, expected[version], atol=1e-6)
    listed = predictor_for(tmp_path, "1,2,9")
    assert sorted(listed.served) == [1, 2] and listed.current().version == 2
    with pytest.raises(ModelVersionNotFound, match="served versions: 1, 2"):
        listed.current(3)


def test_version_folders_are_integers_leading_zeros_allowed(trained_versions, tmp_path):
    add_version(trained_versions, tmp_path, 1, into="0007")  # TF Serving's own examples pad
    for other in ("²", "1a", ".tmp-8-x"):  # a digit that int() refuses, a name, a staging folder
        add_version(trained_versions, tmp_path, 1, into=other)
    assert list_versions(tmp_path) == [7]
    predictor = predictor_for(tmp_path)
    assert predictor.current(7).path == tmp_path / "0007"


def test_removed_versions_are_retired_but_never_the_last(trained_versions, tmp_path):
    add_version(trained_versions, tmp_path, 1)
    add_version(trained_versions, tmp_path, 2)
    predictor = predictor_for(tmp_path, "all")
    shutil.rmtree(tmp_path / "2")
    predictor.refresh()
    assert list(predictor.served) == [1]
    shutil.rmtree(tmp_path / "1")
    predictor.refresh()
    assert list(predictor.served) == [1]  # nothing left to swap in: keep serving


def test_readiness_waits_for_a_version_to_appear(trained_versions, tmp_path):
    predictor = predictor_for(tmp_path)
    assert not predictor.ready and "no model version" in (predictor.error or "")
    add_broken(trained_versions, tmp_path, 1, "no_metadata")
    predictor.refresh()
    assert not predictor.ready and "version 1: FileNotFoundError" in (predictor.error or "")
    add_version(trained_versions, tmp_path, 2)
    predictor.refresh()
    assert predictor.ready and predictor.error is None


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
