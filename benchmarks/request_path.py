"""What each step of one /predict request costs in-process, beside what it replaced.

One thread, no server, nothing else running: the steps' own cost, without the contention a
loaded worker adds (docs/benchmarks.md, "Profile", shows that). Each row is the best of five
repeats. Run with `make bench-path`; it writes docs/request-path.json and
docs/request-path.md.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import queue
import secrets
import sys
import tempfile
import threading
import time
import timeit
import uuid
from collections.abc import Callable
from logging.handlers import QueueHandler
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="path-metrics-"))

from benchmarks.load import BOUNDARY, multipart_body, progress, sample_png  # noqa: E402

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
    """Decoding and preprocessing a 28x28 PNG; polarity by counting against np.median."""
    from service.preprocessing import decode_image, has_light_background, to_model_input

    png = sample_png()
    image = decode_image(png, 25_000_000, 20.0)
    gray = np.asarray(image)
    ring = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    return [
        (
            "decode_image (28x28 PNG)",
            microseconds(lambda: decode_image(png, 25_000_000, 20.0), 5000),
            "",
            None,
        ),
        ("to_model_input (28x28)", microseconds(lambda: to_model_input(image), 5000), "", None),
        (
            "polarity: has_light_background",
            microseconds(lambda: has_light_background(gray), 20000),
            "np.median of the ring (before)",
            microseconds(lambda: float(np.median(ring)) >= 128, 20000),
        ),
    ]


def gunicorn_conf():  # noqa: ANN201 - the module
    """service/gunicorn.conf.py as a module (it is a file gunicorn reads, not a package)."""
    spec = importlib.util.spec_from_file_location(
        "gunicorn_conf", ROOT / "service" / "gunicorn.conf.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def logging_rows() -> list[tuple[str, float, str, float | None]]:
    """One access-log line, through the worker's queue handler and the stock one."""

    def logger_with(handler: logging.Handler) -> Callable[[], None]:
        logger = logging.getLogger(f"path.{type(handler).__name__}")
        logger.propagate, logger.handlers = False, [handler]
        logger.setLevel(logging.INFO)
        lines = handler.queue  # type: ignore[attr-defined]

        def line() -> None:
            logger.info(json.dumps(ACCESS_LINE))
            lines.get_nowait()

        return line

    stock = logger_with(QueueHandler(queue.SimpleQueue()))
    stock_cost = microseconds(stock, 20000)
    flags = (logging.logThreads, logging.logMultiprocessing, logging._srcfile)
    logging.logThreads, logging.logMultiprocessing, logging._srcfile = False, False, None
    try:
        handler = gunicorn_conf().AccessQueueHandler(queue.SimpleQueue())
        ours = microseconds(logger_with(handler), 20000)
    finally:
        logging.logThreads, logging.logMultiprocessing, logging._srcfile = flags
    return [
        ("access-log line (the worker's queue handler)", ours, "stock QueueHandler", stock_cost)
    ]


def metrics_rows() -> list[tuple[str, float, str, float | None]]:
    """The multiprocess metric operations a request makes, one of each."""
    from service import metrics

    counter = metrics.REQUESTS.labels("/predict", "POST", "200")
    return [
        (
            "counter inc, labels looked up",
            microseconds(lambda: metrics.REQUESTS.labels("/predict", "POST", "200").inc(), 20000),
            "",
            None,
        ),
        ("counter inc, bound child", microseconds(counter.inc, 20000), "", None),
        (
            "histogram observe",
            microseconds(lambda: metrics.DECODE_LATENCY.observe(0.001), 20000),
            "",
            None,
        ),
        ("gauge inc (livesum)", microseconds(metrics.IN_FLIGHT.inc, 20000), "", None),
        (
            "request id: secrets.token_hex(16)",
            microseconds(lambda: secrets.token_hex(16), 20000),
            "uuid.uuid4().hex (before)",
            microseconds(lambda: uuid.uuid4().hex, 20000),
        ),
    ]


def model_rows() -> list[tuple[str, float, str, float | None]]:
    """One LiteRT call at batch 1: the service's own invocation against SignatureRunner."""
    from service.model import list_versions, load_version
    from service.runtime import _Invocation

    model_dir = ROOT / "models" / "fashion_mnist"
    model = load_version(model_dir, list_versions(model_dir)[-1], "litert")
    images = np.zeros((1, 28, 28), np.uint8)
    ours: _Invocation = model.runtime._new_runner()
    runner = model.runtime._new_runner().interpreter.get_signature_runner("serving_default")
    response = {"model": {"name": "fashion_mnist", "version": 1}, "predictions": []}
    from service.inputs import PredictOptions
    from service.routes import _prediction

    row = model.predict(images)[0]
    names = model.class_names
    return [
        (
            "LiteRT call, batch 1 (own invocation)",
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
            "the answer as JSON (json.dumps)",
            microseconds(
                lambda: json.dumps(
                    {**response, "predictions": [_prediction(row, names, PredictOptions())]}
                ),
                20000,
            ),
            "",
            None,
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
    """A whole multipart /predict through Flask's test client, against the floor app's."""
    from benchmarks import floor_app
    from service import create_app

    logging.getLogger("service.access").disabled = True
    app = create_app({"model_dir": ROOT / "models" / "fashion_mnist"})
    assert app.extensions["versions"].wait_ready(120), app.extensions["versions"].error
    body, kind = multipart_body(sample_png()), f"multipart/form-data; boundary={BOUNDARY}"
    service, floor = app.test_client(), floor_app.create_app().test_client()
    try:
        return [
            (
                "whole /predict request (Flask test client)",
                microseconds(lambda: service.post("/predict", data=body, content_type=kind), 500),
                "the floor app's request",
                microseconds(lambda: floor.post("/predict", data=body, content_type=kind), 500),
            )
        ]
    finally:
        app.extensions["versions"].stop()


def markdown(rows: list[list]) -> str:
    """docs/request-path.md."""
    lines = [
        "# The request path, step by step",
        "",
        "Measured by `make bench-path` (`benchmarks/request_path.py`): each step of one "
        "single-image multipart `/predict` in-process, one thread, best of five repeats. "
        "A loaded worker pays more for each (threads share its GIL and two cores): see the "
        "Profile section of [benchmarks.md](benchmarks.md).",
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
