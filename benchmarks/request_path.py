"""What each step of one /predict request costs in-process, beside what it replaced.

One thread, no server, nothing else running: the steps' own cost, without the contention a
loaded worker adds (docs/benchmarks.md, "Profile", shows that). Each row is the best of five
repeats. Run with `make bench-path`; it writes docs/request-path.json and
docs/request-path.md.
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import secrets
import tempfile
import threading
import time
import timeit
import uuid
from collections.abc import Callable
from logging.handlers import QueueHandler, QueueListener
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="path-metrics-"))

from benchmarks.wrk import BOUNDARY, multipart_body, progress, sample_png  # noqa: E402

if TYPE_CHECKING:
    from service.observability.buffers import MetricBuffer

REPEATS = 5
ACCESS_LINE = {
    "request_id": "0" * 32,
    "remote_addr": "127.0.0.1",
    "method": "POST",
    "path": "/predict",
    "endpoint": "/predict",
    "status": 200,
    "duration_ms": 1.234,
    "request_bytes": 300,
    "response_bytes": 600,
    "images": 1,
    "error_code": None,
}


def microseconds(step: Callable[[], object], number: int) -> float:
    """Best-of-REPEATS time of one call, in microseconds."""
    return min(timeit.repeat(step, number=number, repeat=REPEATS)) / number * 1e6


def preprocessing_rows() -> list[tuple[str, float, str, float | None]]:
    """Decoding and preprocessing a 28x28 PNG, each beside the step it replaced; polarity by
    counting against np.median."""
    from PIL import ImageOps

    from service.io.images import decode_image
    from service.io.preprocessing import has_light_background, to_model_input

    png = sample_png()
    image = decode_image(png, 25_000_000, 20.0)
    gray = np.asarray(image)
    ring = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    return [
        (
            "decode_image (28x28 PNG; exif_transpose only where an orientation can be)",
            microseconds(lambda: decode_image(png, 25_000_000, 20.0), 5000),
            "exif_transpose on every image (before)",
            microseconds(
                lambda: ImageOps.exif_transpose(decode_image(png, 25_000_000, 20.0), in_place=True),
                5000,
            ),
        ),
        ("to_model_input (28x28)", microseconds(lambda: to_model_input(image), 5000), "", None),
        (
            "8-bit grayscale pixels: np.frombuffer(image.tobytes())",
            microseconds(
                lambda: np.frombuffer(image.tobytes(), np.uint8).reshape(image.height, image.width),
                20000,
            ),
            "np.asarray(image) (before)",
            microseconds(lambda: np.asarray(image, dtype=np.uint8), 20000),
        ),
        (
            "decode_image, CPU per call from 16 threads (Pillow lets go of the GIL to decode)",
            cpu_per_call(lambda: decode_image(png, 25_000_000, 20.0), 16),
            "from 1 thread",
            cpu_per_call(lambda: decode_image(png, 25_000_000, 20.0), 1),
        ),
        (
            "polarity: has_light_background",
            microseconds(lambda: has_light_background(gray), 20000),
            "np.median of the ring (before)",
            microseconds(lambda: float(np.median(ring)) >= 128, 20000),
        ),
    ]


def cpu_per_call(step: Callable[[], object], threads: int, seconds: float = 2.0) -> float:
    """CPU microseconds per call of `step` with `threads` threads calling it as fast as they can.

    With several threads, every release of the GIL inside a step (a lock wait, a system call,
    a C library that lets go of it) hands the GIL to another thread and back: what a loaded
    worker's 16 request threads pay, and a single-thread timing does not show.
    """
    stop = time.perf_counter() + seconds
    calls = [0] * threads

    def call(index: int) -> None:
        while time.perf_counter() < stop:
            step()
            calls[index] += 1

    workers = [threading.Thread(target=call, args=(index,)) for index in range(threads)]
    started = time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return (time.process_time() - started) / sum(calls) * 1e6


def multipart_rows() -> list[tuple[str, float, str, float | None]]:
    """A single-image multipart form parsed by the service's read_form (the multipart
    package's push parser), against Werkzeug's form parser, which /predict used before."""
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from service.io.uploads import read_form

    body = multipart_body(sample_png())
    environ = EnvironBuilder(
        method="POST", data=body, content_type=f"multipart/form-data; boundary={BOUNDARY}"
    ).get_environ()

    def request() -> Request:
        return Request({**environ, "wsgi.input": io.BytesIO(body)})

    return [
        (
            "a single-image multipart form parsed (read_form: the multipart package)",
            microseconds(lambda: read_form(request(), 64), 5000),
            "Werkzeug's form parser (request.files, before)",
            microseconds(lambda: request().files, 5000),
        )
    ]


def logging_rows() -> list[tuple[str, float, str, float | None]]:
    """One access-log line through the worker's AccessLogBuffer and through the queue listener
    it replaced, from 1 and from 16 threads."""
    from service.observability.buffers import AccessLogBuffer

    flags = (logging.logThreads, logging.logMultiprocessing, logging._srcfile)
    logging.logThreads, logging.logMultiprocessing, logging._srcfile = False, False, None
    null = open(os.devnull, "w")  # closed below
    logger = logging.getLogger("path.access")
    logger.propagate = False
    logger.setLevel(logging.INFO)

    def line() -> None:
        logger.info(
            orjson.dumps(ACCESS_LINE).decode()
        )  # as service/observability/instrumentation.py

    rows = []
    try:
        for threads in (1, 16):
            ours = AccessLogBuffer(logging.StreamHandler(null))
            logger.handlers = [ours]
            ours_cost = cpu_per_call(line, threads)
            ours.close()
            lines: queue.SimpleQueue = queue.SimpleQueue()
            logger.handlers = [QueueHandler(lines)]
            before = QueueListener(lines, logging.StreamHandler(null))
            before.start()
            before_cost = cpu_per_call(line, threads)
            before.stop()
            rows.append(
                (
                    f"access-log line, {threads} thread{'s' if threads > 1 else ''} "
                    "(AccessLogBuffer)",
                    ours_cost,
                    "QueueHandler and QueueListener (before)",
                    before_cost,
                )
            )
    finally:
        logging.logThreads, logging.logMultiprocessing, logging._srcfile = flags
        null.close()
    return rows


def request_metrics(metrics: ModuleType, buffer: MetricBuffer) -> None:
    """The metric updates of one single-image /predict, batch-level ones included, queued in
    the worker's MetricBuffer as the service makes them."""
    buffer.add(metrics.IN_FLIGHT, (), 1)
    buffer.observe(metrics.DECODE_LATENCY, (), 0.0001)
    buffer.observe(metrics.PREPROCESS_LATENCY, (), 0.00005)
    buffer.observe(metrics.BATCH_QUEUE_SECONDS, (), 0.002)
    buffer.observe(metrics.INFERENCE_LATENCY, (), 0.003)
    buffer.observe(metrics.BATCH_SIZE, (), 8)
    buffer.add(metrics.PREDICTIONS, ("Bag",), 1)
    buffer.observe(metrics.CONFIDENCE, (), 0.9)
    buffer.add(metrics.REQUESTS, ("/predict", "POST", "200"), 1)
    buffer.observe(metrics.REQUEST_LATENCY, ("/predict",), 0.02)
    buffer.add(metrics.IN_FLIGHT, (), -1)


def request_metrics_written(metrics: Any) -> None:
    """The same updates written one by one through prometheus_client, as requests did before
    the MetricBuffer."""
    metrics.IN_FLIGHT.inc()
    metrics.DECODE_LATENCY.observe(0.0001)
    metrics.PREPROCESS_LATENCY.observe(0.00005)
    metrics.BATCH_QUEUE_SECONDS.observe(0.002)
    metrics.INFERENCE_LATENCY.observe(0.003)
    metrics.BATCH_SIZE.observe(8)
    metrics.PREDICTIONS.labels("Bag").inc()
    metrics.CONFIDENCE.observe(0.9)
    metrics.REQUESTS.labels("/predict", "POST", "200").inc()
    metrics.REQUEST_LATENCY.labels("/predict").observe(0.02)
    metrics.IN_FLIGHT.dec()


def flushed_per_request(metrics: ModuleType, buffer: MetricBuffer, requests: int = 100) -> float:
    """CPU microseconds per request of writing out the queued updates of `requests` requests
    in one flush (about what the flushing thread meets every 0.1 s under load)."""
    costs = []
    for _ in range(REPEATS):
        for _ in range(requests):
            request_metrics(metrics, buffer)
        started = time.process_time()
        buffer.flush()
        costs.append((time.process_time() - started) / requests * 1e6)
    return min(costs)


def metrics_rows() -> list[tuple[str, float, str, float | None]]:
    """A request's metric updates, queued, against the multiprocess writes they replaced."""
    from service.observability import metrics
    from service.observability.buffers import MetricBuffer

    buffer = MetricBuffer()  # flushed here only, as its thread would
    rows = [
        (
            f"a single-image /predict's metric updates queued, CPU per request from {threads} "
            f"thread{'s' if threads > 1 else ''} (MetricBuffer)",
            cpu_per_call(lambda: request_metrics(metrics, buffer), threads),
            "written one by one by prometheus_client (before; one lock per process)",
            cpu_per_call(lambda: request_metrics_written(metrics), threads),
        )
        for threads in (1, 16)
    ]
    buffer.flush()
    return [
        *rows,
        (
            "their writing, per request, in a flush of 100 requests' updates",
            flushed_per_request(metrics, buffer),
            "",
            None,
        ),
        (
            "request id: secrets.token_hex(16)",
            microseconds(lambda: secrets.token_hex(16), 20000),
            "uuid.uuid4().hex (before)",
            microseconds(lambda: uuid.uuid4().hex, 20000),
        ),
    ]


def model_rows() -> list[tuple[str, float, str, float | None]]:
    """One LiteRT call at batch 1 (the default runtime): the service's own invocation against
    SignatureRunner."""
    from service.inference.model import list_versions, load_version
    from service.inference.runtime import _Invocation
    from service.settings import DEFAULT_RUNTIME

    model_dir = ROOT / "models" / "fashion_mnist"
    model = load_version(model_dir, list_versions(model_dir)[-1], DEFAULT_RUNTIME)
    images = np.zeros((1, 28, 28), np.uint8)
    ours: _Invocation = model.runtime._new_runner()
    runner = model.runtime._new_runner().interpreter.get_signature_runner("serving_default")
    response = {"model": {"name": "fashion_mnist", "version": 1}, "predictions": []}
    from service.api.routes import _prediction
    from service.io.jsonio import dump
    from service.io.uploads import PredictOptions

    row = model.predict(images)[0]
    names = model.class_names
    answer = {**response, "predictions": [_prediction(row, names, PredictOptions())]}
    return [
        (
            f"LiteRT call, batch 1 ({DEFAULT_RUNTIME}, own invocation)",
            microseconds(lambda: ours(images), 2000),
            "SignatureRunner (before)",
            microseconds(lambda: runner(images=images), 2000),
        ),
        (
            "one prediction's answer shaped",
            microseconds(lambda: _prediction(row, names, PredictOptions()), 20000),
            "",
            None,
        ),
        (
            "the answer as JSON (orjson, service/io/jsonio.py)",
            microseconds(lambda: dump(answer), 20000),
            "json.dumps (before)",
            microseconds(lambda: json.dumps(answer), 20000),
        ),
    ]


def wake_rows() -> list[tuple[str, float, str, float | None]]:
    """Waking a thread that waits on a lock (how the batcher hands back each answer)."""
    count = 200
    waiting = [threading.Lock() for _ in range(count)]
    for lock in waiting:
        lock.acquire()
    threads = [threading.Thread(target=lock.acquire) for lock in waiting]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # every thread is now blocked on its lock
    started = time.perf_counter()
    for lock in waiting:
        lock.release()
    woken = (time.perf_counter() - started) / count * 1e6
    for thread in threads:
        thread.join()
    idle = threading.Lock()

    def uncontended() -> None:
        idle.acquire()
        idle.release()

    return [
        (
            "release a lock a thread waits on (wakes it)",
            woken,
            "acquire and release, no waiter",
            microseconds(uncontended, 20000),
        ),
    ]


def request_rows() -> list[tuple[str, float, str, float | None]]:
    """A whole multipart /predict through Flask's test client, against the floor app's: from
    one thread, from 16, and from 16 kept on one core (the GIL then never moves between
    cores, so each thread finds the caches as the last one left them)."""
    from benchmarks import floor_app
    from service import create_app

    logging.getLogger("service.access").disabled = True
    app = create_app({"model_dir": ROOT / "models" / "fashion_mnist"})
    assert app.extensions["versions"].wait_ready(120), app.extensions["versions"].error
    body, kind = multipart_body(sample_png()), f"multipart/form-data; boundary={BOUNDARY}"
    service, floor = app.test_client(), floor_app.create_app().test_client()

    def predict() -> object:
        return service.post("/predict", data=body, content_type=kind)

    def upload() -> object:
        return floor.post("/predict", data=body, content_type=kind)

    try:
        rows = [
            (
                "whole /predict request (Flask test client)",
                microseconds(predict, 500),
                "the floor app's request",
                microseconds(upload, 500),
            ),
            (
                "whole /predict request, CPU per request from 16 threads",
                cpu_per_call(predict, 16),
                "the floor app's, 16 threads",
                cpu_per_call(upload, 16),
            ),
        ]
        cores = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(cores)})  # threads started from here inherit it
        try:
            rows.append(
                (
                    "whole /predict request, CPU per request from 16 threads on one core",
                    cpu_per_call(predict, 16),
                    "the floor app's, 16 threads on one core",
                    cpu_per_call(upload, 16),
                )
            )
        finally:
            os.sched_setaffinity(0, cores)
        return rows
    finally:
        app.extensions["versions"].stop()


def markdown(rows: list[list]) -> str:
    """docs/request-path.md."""
    lines = [
        "# The request path, step by step",
        "",
        "Measured by `make bench-path` (`benchmarks/request_path.py`): each step of one "
        "single-image multipart `/predict` in-process, one thread, best of five repeats; rows "
        "that say so are CPU microseconds per call with 1 or 16 threads calling at once, as "
        "a loaded worker's request threads do (a step that lets go of the GIL hands it to "
        "another thread and back, which one thread alone never pays). See also the Profile "
        "section of [benchmarks.md](benchmarks.md).",
        "",
        "| step | us | compared with | us |",
        "| --- | ---: | --- | ---: |",
    ]
    for name, cost, other, other_cost in rows:
        before = "" if other_cost is None else f"{other_cost:.2f}"
        lines.append(f"| {name} | {cost:.2f} | {other} | {before} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Measure every step and write the report."""
    rows = []
    for phase, measure in (
        ("multipart forms", multipart_rows),
        ("preprocessing", preprocessing_rows),
        ("access log", logging_rows),
        ("metrics", metrics_rows),
        ("model call and answer", model_rows),
        ("thread wake-ups", wake_rows),
        ("whole request", request_rows),
    ):
        progress(f"request path: {phase}")
        rows += measure()
    output = ROOT / "docs"
    (output / "request-path.json").write_text(json.dumps(rows, indent=2) + "\n")
    (output / "request-path.md").write_text(markdown(rows))
    progress(f"wrote {output / 'request-path.md'}")


if __name__ == "__main__":
    main()
