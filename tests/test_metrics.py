"""Prometheus metrics: updated by the code paths that produce them, exact across gunicorn
workers, clean for promtool, and scraped by a real Prometheus server."""

from __future__ import annotations

import base64
import collections
import io
import math
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest
import requests
import yaml
from flask import Flask
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from harness import ROOT
from harness.images import encode, garment
from harness.server import LiveServer
from service.observability import metrics
from service.observability.buffers import FLUSH_INTERVAL, Flusher, MetricBuffer
from service.observability.instrumentation import METHOD_LABELS
from tests.prometheus import SHIPPED_CONFIG, SHIPPED_TARGET
from tests.skips import require_program

DOCS = ROOT / "docs" / "metrics.md"
REQUESTS_TOTAL = "fmnist_http_requests_total"
P99_LATENCY = (
    "histogram_quantile(0.99, sum by (le) (rate(fmnist_http_request_duration_seconds_bucket[1m])))"
)
MONOTONIC_SUFFIXES = ("_total", "_bucket", "_count", "_sum")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def sample_of(app: Flask, name: str, /, **labels: str) -> float:
    """Read one sample of this process's registry (0 before its first observation), once the
    app's queued metric updates are written."""
    app.extensions["metric_buffer"].flush()
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def sample(app: Flask) -> Callable[..., float]:
    """sample_of the test's app."""
    return partial(sample_of, app)


def multipart(*images: bytes) -> dict:
    """A multipart form with `images` in the field "image", for the test client."""
    return {"image": [(io.BytesIO(image), f"upload{i}.png") for i, image in enumerate(images)]}


# In-process: a fresh app per test, metrics read back from prometheus_client's registry.


def test_a_prediction_updates_every_metric_on_its_path(client, sample):
    watched = {
        "requests": (REQUESTS_TOTAL, {"endpoint": "/predict", "method": "POST", "status": "200"}),
        "latency": ("fmnist_http_request_duration_seconds_count", {"endpoint": "/predict"}),
        "decode": ("fmnist_image_decode_duration_seconds_count", {}),
        "preprocess": ("fmnist_preprocess_duration_seconds_count", {}),
        "inference": ("fmnist_inference_duration_seconds_count", {}),
        "batches": ("fmnist_batch_size_images_count", {}),
        "images": ("fmnist_batch_size_images_sum", {}),
        "batches of 2 or fewer": ("fmnist_batch_size_images_bucket", {"le": "2.0"}),
        "batches of 4 or fewer": ("fmnist_batch_size_images_bucket", {"le": "4.0"}),
        "confidences": ("fmnist_prediction_confidence_ratio_count", {}),
        "errors": ("fmnist_errors_total", {"code": "unsupported_media_type"}),
    }
    class_names = client.application.extensions["versions"].model.class_names
    before = {key: sample(name, **labels) for key, (name, labels) in watched.items()}
    by_class = {name: sample("fmnist_predictions_total", class_name=name) for name in class_names}
    confidence_buckets = [
        (bound, sample("fmnist_prediction_confidence_ratio_bucket", le=str(bound)))
        for bound in metrics.CONFIDENCE_BUCKETS
    ]

    response = client.post("/predict", data=multipart(*(encode(garment(c)) for c in (1, 4, 7))))

    assert response.status_code == 200, response.json
    after = {key: sample(name, **labels) for key, (name, labels) in watched.items()}
    assert {key: after[key] - before[key] for key in watched} == {
        "requests": 1,
        "latency": 1,
        "decode": 3,
        "preprocess": 3,
        "inference": 1,
        "batches": 1,
        "images": 3,
        "batches of 2 or fewer": 0,
        "batches of 4 or fewer": 1,
        "confidences": 3,
        "errors": 0,
    }
    predictions = response.json["predictions"]
    labels = collections.Counter(p["label"] for p in predictions)
    for name in class_names:
        assert sample("fmnist_predictions_total", class_name=name) - by_class[name] == labels[name]
    for bound, count in confidence_buckets:
        observed = sample("fmnist_prediction_confidence_ratio_bucket", le=str(bound)) - count
        assert observed == sum(p["confidence"] <= bound for p in predictions), bound


def test_pixel_arrays_are_preprocessed_without_decoding(client, sample):
    decode = sample("fmnist_image_decode_duration_seconds_count")
    preprocess = sample("fmnist_preprocess_duration_seconds_count")
    instances = [garment(1).tolist(), garment(2).tolist()]
    instances.append({"b64": base64.b64encode(encode(garment(3))).decode()})
    response = client.post("/predict", json={"instances": instances})
    assert response.status_code == 200, response.json
    assert sample("fmnist_image_decode_duration_seconds_count") - decode == 1
    assert sample("fmnist_preprocess_duration_seconds_count") - preprocess == 3


@pytest.mark.parametrize(
    ("method", "path", "content_type", "status", "code", "endpoint", "method_label"),
    [
        ("POST", "/predict", "text/plain", 415, "unsupported_media_type", "/predict", "POST"),
        ("POST", "/predict", "image/png", 415, "not_an_image", "/predict", "POST"),
        ("GET", "/predict", None, 405, "method_not_allowed", "unmatched", "GET"),
        ("GET", "/metrics", None, 404, "not_found", "unmatched", "GET"),
        (
            "GET",
            "/v1/models/other",
            None,
            404,
            "model_not_found",
            "/v1/models/<model_name:name>",
            "GET",
        ),
        # Any token is a method to Werkzeug; the label must not take it, or series explode.
        ("BREW", "/predict", None, 405, "method_not_allowed", "unmatched", "other"),
    ],
)
def test_errors_are_counted_by_code_and_labels_stay_bounded(
    client, sample, method, path, content_type, status, code, endpoint, method_label
):
    labels = {"endpoint": endpoint, "method": method_label, "status": str(status)}
    requests_before = sample(REQUESTS_TOTAL, **labels)
    errors_before = sample("fmnist_errors_total", code=code)
    response = client.open(path, method=method, data=b"not an image", content_type=content_type)
    assert (response.status_code, response.json["code"]) == (status, code)
    assert sample(REQUESTS_TOTAL, **labels) - requests_before == 1
    assert sample("fmnist_errors_total", code=code) - errors_before == 1
    methods = {
        s.labels["method"]
        for f in REGISTRY.collect()
        if f.name == "fmnist_http_requests"
        for s in f.samples
    }
    assert methods <= METHOD_LABELS | {"other"}


def test_in_flight_counts_the_request_being_handled(app, sample):
    handling = app.extensions["instrumentation"].requests_in_process

    @app.get("/in-flight-probe")
    def in_flight_probe() -> dict[str, float]:
        return {"in_flight": sample("fmnist_http_requests_in_flight"), "handling": handling()}

    before, handled = sample("fmnist_http_requests_in_flight"), handling()
    answer = app.test_client().get("/in-flight-probe").json
    assert answer == {"in_flight": before + 1, "handling": handled + 1}
    assert sample("fmnist_http_requests_in_flight") == before and handling() == handled
    # The count the batcher stops gathering by.
    assert app.extensions["versions"].batching.requests_in_worker is handling


def test_the_buffer_writes_what_observing_and_counting_one_by_one_would():
    registry = CollectorRegistry()
    bounds = (0.1, 0.5, 1.0, 2.5)
    direct = Histogram("direct", "observed one by one", ["k"], buckets=bounds, registry=registry)
    buffered = Histogram("buffered", "through the buffer", ["k"], buckets=bounds, registry=registry)
    counter = Counter("counted", "through the buffer", ["k"], registry=registry)
    gauge = Gauge("level", "through the buffer", registry=registry)
    values = [0.0, 0.1, 0.1000001, 0.5, 0.7, 1.0, 2.5, 2.6, 1e9, -3.0] * 3
    buffer = MetricBuffer()
    for index, value in enumerate(values):
        label = ("even", "odd")[index % 2]
        direct.labels(label).observe(value)
        buffer.observe(buffered, (label,), value)
        buffer.add(counter, (label,), 2)
        buffer.add(gauge, (), -1 if index % 3 == 0 else 1)
    assert registry.get_sample_value("counted_total", {"k": "odd"}) is None  # not yet written

    buffer.flush()

    def histogram(name: str) -> dict[tuple, float]:
        (family,) = (f for f in registry.collect() if f.name == name)
        return {
            (s.name.removeprefix(name), frozenset(s.labels.items())): s.value
            for s in family.samples
            if not s.name.endswith("_created")
        }

    assert histogram("buffered") == histogram("direct")
    assert len(histogram("direct")) == 2 * (len(bounds) + 1 + 2)  # buckets, +Inf, count, sum
    assert registry.get_sample_value("counted_total", {"k": "odd"}) == len(values)
    assert registry.get_sample_value("level") == len(values) - 2 * (len(values) // 3)


def test_the_flushing_thread_goes_on_after_a_failed_write_and_flushes_at_close(caplog):
    calls = []

    def flush() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise OSError("no space left on device")

    flusher = Flusher(flush, "test updates", interval=0.01)
    flusher.start()
    deadline = time.monotonic() + 5
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(calls) >= 2  # flushed again after the failure
    assert "writing the queued test updates failed" in caplog.text
    flusher.close()
    assert "flush test updates" not in {thread.name for thread in threading.enumerate()}
    flushed = len(calls)
    flusher.close()  # again, as logging.shutdown may after worker_exit: one flush, no thread
    assert len(calls) == flushed + 1


def test_each_app_has_its_own_buffer_and_count_of_requests(app, tiny_model_dir):
    from service import create_app

    other = create_app({"model_dir": tiny_model_dir})
    apps = (("app", app), ("other", other))
    queued: dict[str, list] = {"app": [], "other": []}
    for name, each in apps:
        buffer = each.extensions["metric_buffer"]
        buffer.queue_increment = buffer.queue_observation = queued[name].append
    counts = {name: a.extensions["instrumentation"].requests_in_process for name, a in apps}

    @app.get("/count-probe")
    def count_probe() -> dict[str, int]:
        return {name: count() for name, count in counts.items()}

    try:
        assert app.test_client().get("/count-probe").json == {"app": 1, "other": 0}
        assert queued["app"] and not queued["other"]
    finally:
        other.extensions["versions"].stop()
        other.extensions["metric_buffer"].close()


def test_a_model_load_sets_the_load_time_and_the_model_info(tiny_model_dir):
    from service import create_app

    app = create_app({"model_dir": tiny_model_dir, "model_name": "garments"})
    predictor = app.extensions["versions"]
    assert predictor.wait_ready(60), predictor.error
    assert sample_of(app, "fmnist_model_info", name="garments", version="1") == 1
    assert sample_of(app, "fmnist_model_load_duration_seconds") == predictor.model.load_seconds > 0


@pytest.mark.integration  # runs bin/serve
def test_bin_serve_empties_the_metrics_directory_of_metric_files_only(tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_12345.db").write_bytes(b"left by an earlier run")
    (metrics_dir / "notes.txt").write_text("the operator's, not ours")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PYTHON": "true"}
    subprocess.run([str(ROOT / "bin" / "serve")], env=env, check=True, timeout=30)  # no gunicorn
    assert [path.name for path in metrics_dir.iterdir()] == ["notes.txt"]


# Over HTTP: a real gunicorn with two workers; the master serves the merged metrics.


def read_metrics(server) -> Samples:
    """Read the server's metrics port into {(sample name, labels): value}."""
    response = requests.get(server.metrics_url, timeout=10)
    assert response.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def scrape(server, until: Callable[[Samples], bool] | None = None, timeout: float = 30) -> Samples:
    """Read the server's metrics once every worker has written the updates of the requests
    answered so far: each writes them every FLUSH_INTERVAL, later on a busy machine.

    With `until`, read until it holds (or `timeout` passes); without, until no request is in
    flight and the request counts stay the same over several writes.
    """
    stop = time.monotonic() + timeout
    last = None
    while True:
        samples = read_metrics(server)
        if until is not None:
            if until(samples) or time.monotonic() > stop:
                return samples
        else:
            counted = (
                total(samples, REQUESTS_TOTAL),
                total(samples, "fmnist_http_requests_in_flight"),
            )
            if counted == last and counted[1] == 0 or time.monotonic() > stop:
                return samples
            last = counted
        time.sleep(3 * FLUSH_INTERVAL)


def grown(before: Samples, name: str, by: float) -> Callable[[Samples], bool]:
    """Whether the samples named `name` have grown by at least `by` since `before`, and no
    request is in flight."""
    return lambda samples: (
        total(samples, name) - total(before, name) >= by
        and total(samples, "fmnist_http_requests_in_flight") == 0
    )


def total(samples: Samples, name: str, /, **labels: str) -> float:
    """Sum the samples named `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def send_traffic(url: str, count: int) -> collections.Counter:
    """Send `count` requests, 8 at a time on new connections; tally (endpoint, method, status)."""
    png = encode(garment(2))

    def one(index: int) -> tuple[str, str, str]:
        if index % 3 == 0:
            response = requests.get(url + "/healthz", timeout=30)
            return "/healthz", "GET", str(response.status_code)
        content_type = "image/png" if index % 3 == 1 else "text/plain"
        response = requests.post(
            url + "/predict", data=png, headers={"Content-Type": content_type}, timeout=30
        )
        return "/predict", "POST", str(response.status_code)

    with ThreadPoolExecutor(8) as pool:
        return collections.Counter(pool.map(one, range(count)))


def assert_counted_exactly(before: Samples, after: Samples, sent: collections.Counter) -> None:
    """Each (endpoint, method, status) grew by what was sent, and the total by the sum."""
    for (endpoint, method, status), count in sent.items():
        labels = {"endpoint": endpoint, "method": method, "status": status}
        grew = total(after, REQUESTS_TOTAL, **labels) - total(before, REQUESTS_TOTAL, **labels)
        assert grew == count, (labels, grew, count)
    grew = total(after, REQUESTS_TOTAL) - total(before, REQUESTS_TOTAL)
    assert grew == sum(sent.values())


def assert_never_decreased(before: Samples, after: Samples) -> None:
    """Every counter and histogram sample of the service is still there, and no smaller."""
    for key, value in before.items():
        if key[0].startswith("fmnist_") and key[0].endswith(MONOTONIC_SUFFIXES):
            assert after.get(key, -1) >= value, (key, value, after.get(key))


def wait_for_replacement(
    server: LiveServer, dead: int, workers: int, timeout: float = 60
) -> set[int]:
    """Wait until the master again has `workers` children, none of them `dead`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = set(server.worker_pids())
        if len(pids) == workers and dead not in pids:
            return pids
        time.sleep(0.1)
    raise AssertionError(f"worker {dead} not replaced in {timeout}s: {server.worker_pids()}")


@pytest.mark.slow
def test_metrics_have_their_own_port_and_the_public_port_has_none(live_server):
    assert requests.get(live_server.url + "/metrics", timeout=5).json()["code"] == "not_found"
    response = requests.get(live_server.metrics_url, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")


@pytest.mark.slow
def test_n_requests_grow_the_scraped_counter_by_exactly_n(live_server):
    before = scrape(live_server)
    sent = send_traffic(live_server.url, 60)
    after = scrape(live_server, until=grown(before, REQUESTS_TOTAL, 60))
    assert sum(sent.values()) == 60 and ("/predict", "POST", "415") in sent
    assert_counted_exactly(before, after, sent)
    workers = set(live_server.worker_pids())
    counted = {pid for pid in workers if (live_server.metrics_dir / f"counter_{pid}.db").exists()}
    assert len(workers) == 2 and counted == workers, "both workers' counts are in the total"
    assert total(after, "fmnist_http_requests_in_flight") == 0


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_no_counter_goes_backwards(fresh_live_server):
    server = fresh_live_server
    send_traffic(server.url, 30)
    before = scrape(server)
    workers = set(server.worker_pids())
    assert len(workers) == 2
    # Kill a worker that counted requests, so its share must survive it.
    victim = next(pid for pid in workers if (server.metrics_dir / f"counter_{pid}.db").exists())
    os.kill(victim, signal.SIGKILL)

    replaced = wait_for_replacement(server, victim, workers=2)
    assert replaced - workers, "the master started a new worker"
    # child_exit marked it dead: its live gauges (in flight, model) no longer count.
    assert not list(server.metrics_dir.glob(f"gauge_live*_{victim}.db"))
    after_kill = scrape(server)
    assert_never_decreased(before, after_kill)
    assert total(after_kill, REQUESTS_TOTAL) == total(before, REQUESTS_TOTAL)
    assert (
        after_kill[("process_start_time_seconds", frozenset())]
        == before[("process_start_time_seconds", frozenset())]
    )

    sent = send_traffic(server.url, 30)
    after = scrape(server, until=grown(after_kill, REQUESTS_TOTAL, 30))
    assert_never_decreased(after_kill, after)
    assert_counted_exactly(after_kill, after, sent)
    assert total(after, "fmnist_http_requests_in_flight") == 0
    assert total(after, "fmnist_model_info", name="fashion_mnist", version="1") == 1
    assert server.tracebacks() == []


@pytest.mark.slow
def test_promtool_finds_nothing_wrong_with_the_scraped_metrics(live_server):
    promtool = require_program("promtool")
    send_traffic(live_server.url, 12)  # so every labelled series exists
    text = requests.get(live_server.metrics_url, timeout=10).text
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert {
        "fmnist_http_requests": "counter",
        "fmnist_http_request_duration_seconds": "histogram",
        "fmnist_http_requests_in_flight": "gauge",
        "fmnist_errors": "counter",
        "fmnist_image_decode_duration_seconds": "histogram",
        "fmnist_preprocess_duration_seconds": "histogram",
        "fmnist_inference_duration_seconds": "histogram",
        "fmnist_batch_size_images": "histogram",
        "fmnist_predictions": "counter",
        "fmnist_prediction_confidence_ratio": "histogram",
        "fmnist_model_load_duration_seconds": "gauge",
        "fmnist_model_info": "gauge",
        "process_start_time_seconds": "gauge",
    }.items() <= families.items()
    # Every gauge is merged across workers: none is split into per-process series.
    assert "pid=" not in text
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert (check.returncode, check.stdout, check.stderr) == (0, "", "")


@pytest.mark.integration  # runs promtool
def test_the_shipped_prometheus_config_is_valid_and_scrapes_the_api_service():
    promtool = require_program("promtool")
    check = subprocess.run(
        [promtool, "check", "config", str(SHIPPED_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    config = yaml.safe_load(SHIPPED_CONFIG.read_text())
    targets = [
        t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    ]
    assert targets == [SHIPPED_TARGET]


def query_under_traffic(prometheus, url: str, expr: str, timeout: float = 60) -> list[float]:
    """Keep requests coming until `expr` returns finite values; return them.

    rate() needs two scrapes between which the counters grew.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        send_traffic(url, 9)
        values = [float(s["value"][1]) for s in prometheus.query(expr)]
        if values and all(math.isfinite(value) for value in values):
            return values
        time.sleep(0.5)
    raise AssertionError(f"{expr} returned no value in {timeout}s:\n{prometheus.logs()}")


@pytest.mark.slow
def test_a_real_prometheus_scrapes_the_service(prometheus, live_server):
    up = prometheus.wait_for('up{job="fashion-mnist"} == 1')
    assert [float(s["value"][1]) for s in up] == [1.0]
    p99 = query_under_traffic(prometheus, live_server.url, P99_LATENCY)
    assert len(p99) == 1 and 0 < p99[0] <= 60
    counted = prometheus.query(f'{REQUESTS_TOTAL}{{endpoint="/predict",status="200"}}')
    assert counted and sum(float(s["value"][1]) for s in counted) > 0
    assert float(prometheus.wait_for("fmnist_model_info")[0]["value"][1]) == 1


def test_the_docs_describe_every_metric_with_its_type():
    declared = {
        family.name + ("_total" if family.type == "counter" else ""): family.type
        for family in REGISTRY.collect()
        if family.name.startswith("fmnist_")
    }
    rows = re.findall(r"^\| `(fmnist_\w+)` \| (\w+)", DOCS.read_text(), re.MULTILINE)
    assert dict(rows) == declared


@pytest.mark.slow
def test_the_documented_promql_returns_data(prometheus, live_server):
    queries = re.findall(r"```promql\n(.+?)```", DOCS.read_text(), re.DOTALL)
    assert len(queries) >= 3
    for query in queries:
        assert query_under_traffic(prometheus, live_server.url, query), query
