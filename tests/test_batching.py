"""Correctness of the adaptive batcher (not timing): mapping, isolation, shutdown, overload,
requests that give up waiting."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import pytest
import requests

from service.errors import DeadlineExceeded, Overloaded
from service.inference.batching import BatchingConfig, BatchingPredictor

if TYPE_CHECKING:
    from flask import Flask


class RecordingModel:
    """A deterministic stand-in for the SavedModel: row i gets a one-hot of its mean pixel."""

    def __init__(self, delay: threading.Event | None = None) -> None:
        self.calls: list[int] = []
        self.delay = delay

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if self.delay is not None:
            self.delay.wait(5)
        if (images == 255).all(axis=(1, 2)).any():
            raise ValueError("poisoned image")
        self.calls.append(len(images))
        return images.reshape(len(images), -1)[:, :10].astype(np.float32)


def images_of(value: int, count: int = 1) -> np.ndarray:
    """`count` images filled with `value`."""
    return np.full((count, 28, 28), value, np.uint8)


def test_results_map_back_to_their_requests_under_concurrency():
    model = RecordingModel()
    batcher = BatchingPredictor(model, BatchingConfig(32, 0.005, 1000))
    requests = [images_of(v % 250, 1 + v % 3) for v in range(300)]
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(batcher.predict, requests))
    batcher.close()
    for sent, got in zip(requests, results, strict=True):
        assert got.shape == (len(sent), 10)
        assert (got == sent.reshape(len(sent), -1)[:, :10]).all()
    assert max(model.calls) > 1, "concurrent requests were never batched"
    assert max(model.calls) <= 32 and sum(model.calls) == sum(len(r) for r in requests)


def test_a_failing_item_does_not_fail_its_batch_mates():
    gate = threading.Event()
    model = RecordingModel(delay=gate)
    batcher = BatchingPredictor(model, BatchingConfig(64, 0.05, 100))
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(batcher.predict, images_of(v)) for v in (1, 255, 2, 3, 4)]
        gate.set()
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result(10)[0, 0])
            except ValueError as error:
                outcomes.append(str(error))
    batcher.close()
    assert outcomes == [1, "poisoned image", 2, 3, 4]


def test_close_drains_the_queue():
    gate = threading.Event()
    model = RecordingModel(delay=gate)
    batcher = BatchingPredictor(model, BatchingConfig(2, 0, 100))
    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(batcher.predict, images_of(v)) for v in range(10)]
        closing = pool.submit(batcher.close)
        gate.set()
        assert [f.result(10)[0, 0] for f in futures] == list(range(10))
        closing.result(10)
    with pytest.raises(Overloaded):
        batcher.predict(images_of(1))


def test_a_full_queue_answers_overloaded_at_once():
    gate = threading.Event()
    batcher = BatchingPredictor(RecordingModel(delay=gate), BatchingConfig(1, 0, 2))
    with ThreadPoolExecutor(3) as pool:
        running = pool.submit(batcher.predict, images_of(0))
        wait_until_running(batcher)
        queued = [pool.submit(batcher.predict, images_of(v)) for v in (1, 2)]
        wait_until(batcher, lambda: len(batcher._pending) == 2, "two requests queued")
        for value in range(3, 8):  # the model is held: each finds the queue full
            with pytest.raises(Overloaded) as refused:
                batcher.predict(images_of(value))
            assert refused.value.status == 503 and refused.value.headers["Retry-After"] == "1"
        gate.set()
        assert [f.result(5)[0, 0] for f in (running, *queued)] == [0, 1, 2]
    batcher.close()


def test_a_lone_request_is_not_held_back():
    model = RecordingModel()
    batcher = BatchingPredictor(model, BatchingConfig(64, 10.0, 10))
    for value in range(3):
        assert batcher.predict(images_of(value))[0, 0] == value  # would take 10 s if it waited
    batcher.close()
    assert model.calls == [1, 1, 1]


def test_a_lone_request_calls_the_model_in_its_own_thread():
    callers = []
    batcher = BatchingPredictor(
        lambda images: callers.append(threading.current_thread()) or images[:, 0, :10] * 1.0,
        BatchingConfig(64, 0.002, 10),
    )
    batcher.predict(images_of(7))
    batcher.close()
    assert callers == [threading.current_thread()]  # no hand-off to another thread


def test_each_batch_is_run_by_the_thread_of_its_oldest_request():
    gate = threading.Event()
    callers: list[tuple[str, list[int]]] = []

    def model(images: np.ndarray) -> np.ndarray:
        gate.wait(5)
        callers.append((threading.current_thread().name, [int(v) for v in images[:, 0, 0]]))
        return images[:, 0, :10] * 1.0

    batcher = BatchingPredictor(model, BatchingConfig(2, 0, 100))
    threads = [
        threading.Thread(target=batcher.predict, args=(images_of(v),), name=f"request-{v}")
        for v in range(5)
    ]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(10)
    batcher.close()
    # Whichever order the queue formed in, a batch's leader is the owner of its first image.
    assert sorted(v for _, values in callers for v in values) == list(range(5))
    assert all(name == f"request-{values[0]}" for name, values in callers)


class Interrupt(BaseException):
    """What a KeyboardInterrupt or SystemExit inside a model call looks like to the batcher."""


def test_an_interrupted_batch_leaves_no_request_waiting():
    gate = threading.Event()

    def model(images: np.ndarray) -> np.ndarray:
        gate.wait(5)
        raise Interrupt

    batcher = BatchingPredictor(model, BatchingConfig(64, 0, 100))
    outcomes: list[str] = []

    def call() -> None:
        try:
            batcher.predict(images_of(1))
        except Interrupt:
            outcomes.append("interrupted")

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert outcomes == ["interrupted"] * 4
    batcher.close(timeout=5)
    assert not batcher._busy  # the lead was released: the batcher is idle, not stuck


@pytest.mark.slow
def test_concurrent_uploads_share_model_calls_in_a_real_server(tmp_path):
    from harness import SHIPPED_MODEL_DIR
    from harness.server import LiveServer

    # The shipped CNN, whose calls last long enough for requests to meet in the queue (the
    # tiny test model's LiteRT call takes microseconds); one worker, so they all meet there.
    live_server = LiveServer(SHIPPED_MODEL_DIR, tmp_path / "gunicorn.log", FMNIST_WORKERS="1")
    live_server.start()
    try:
        concurrent_uploads_share_model_calls(live_server)
    finally:
        live_server.stop()


def concurrent_uploads_share_model_calls(live_server) -> None:
    """Post 96 uploads from 32 threads; assert some shared a call and each got its answer."""
    from harness.images import encode, garment
    from tests.test_metrics import grown, scrape, total

    pixels = [garment(label) for label in range(10)]
    uploads = [encode(pixels[i % 10]) for i in range(96)]
    before = scrape(live_server)

    def post(data: bytes) -> dict:
        response = requests.post(
            live_server.url + "/predict",
            data=data,
            headers={"Content-Type": "image/png"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0]["probabilities"]

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(post, uploads))
    after = scrape(live_server, until=grown(before, "fmnist_batch_size_images_sum", 96))
    calls = total(after, "fmnist_batch_size_images_count") - total(
        before, "fmnist_batch_size_images_count"
    )
    images = total(after, "fmnist_batch_size_images_sum") - total(
        before, "fmnist_batch_size_images_sum"
    )
    assert images == 96
    assert calls < 96, "no two concurrent requests ever shared a model call"
    for index, probabilities in enumerate(results):  # each answer belongs to its own upload
        assert probabilities == pytest.approx(results[index % 10], abs=1e-5)


def wait_until(batcher: BatchingPredictor, state: Callable[[], bool], what: str) -> None:
    """Block until `state()` holds, checked under the batcher's lock."""
    for _ in range(500):
        with batcher._lock:
            if state():
                return
        time.sleep(0.01)
    raise AssertionError(f"{what} never happened")


def wait_until_running(batcher: BatchingPredictor) -> None:
    """Block until a leader has taken its batch out of the queue (it is in the model call)."""
    wait_until(batcher, lambda: batcher._busy and not batcher._pending, "a batch starting")


def test_a_request_that_waits_past_its_timeout_leaves_the_queue_unserved():
    gate = threading.Event()
    model = RecordingModel(delay=gate)
    batcher = BatchingPredictor(model, BatchingConfig(64, 0, 10))
    with ThreadPoolExecutor(3) as pool:
        leader = pool.submit(batcher.predict, images_of(1))
        wait_until_running(batcher)
        late = pool.submit(batcher.predict, images_of(2), 0.2)
        patient = pool.submit(batcher.predict, images_of(3))
        with pytest.raises(DeadlineExceeded) as refused:
            late.result(5)
        assert refused.value.status == 503 and refused.value.headers["Retry-After"] == "1"
        gate.set()
        assert leader.result(5)[0, 0] == 1 and patient.result(5)[0, 0] == 3
    batcher.close()
    assert model.calls == [1, 1]  # the request that gave up never reached the model
    assert not batcher._busy and not batcher._pending and batcher._queued == 0


def numbered(number: int) -> np.ndarray:
    """One image carrying `number` in its first two pixels."""
    image = np.zeros((1, 28, 28), np.uint8)
    image[0, 0, :2] = divmod(number, 256)
    return image


def test_timeouts_racing_the_hand_off_never_strand_the_lead_or_half_serve_a_request():
    seen: list[int] = []

    def model(images: np.ndarray) -> np.ndarray:
        time.sleep(0.001)
        seen.extend(int(a) * 256 + int(b) for a, b in images[:, 0, :2])
        return images[:, 0, :10] * 1.0

    batcher = BatchingPredictor(model, BatchingConfig(4, 0, 1000))

    def call(number: int) -> int | None:
        try:
            row = batcher.predict(numbered(number), 0.0005 * (number % 5))  # 0 s included
        except DeadlineExceeded:
            return None
        return int(row[0, 0]) * 256 + int(row[0, 1])

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(call, range(600), timeout=60))  # a stranded lead would hang
    gave_up = {n for n, answer in enumerate(answers) if answer is None}
    assert all(answer in (None, n) for n, answer in enumerate(answers))
    assert gave_up and len(gave_up) < 600  # both outcomes happened
    assert sorted(seen) == sorted(set(range(600)) - gave_up)  # served once, and only if answered
    assert not batcher._busy and not batcher._pending and batcher._queued == 0


FULL_BATCH = 64 * 28 * 28
V2_BINARY_HEADER = json.dumps(
    {
        "inputs": [
            {
                "name": "images",
                "datatype": "UINT8",
                "shape": [64, 28, 28],
                "parameters": {"binary_data_size": FULL_BATCH},
            }
        ]
    }
).encode()


def infer_full_batch(url: str) -> tuple[int, str, str | None, str]:
    """One 64-image v2 request (binary data: next to nothing to parse); status, code,
    Retry-After and error message."""
    response = requests.post(
        url + "/v2/models/fashion_mnist/infer",
        data=V2_BINARY_HEADER + bytes(FULL_BATCH),
        headers={"Inference-Header-Content-Length": str(len(V2_BINARY_HEADER))},
        timeout=60,
    )
    if response.status_code == 200:
        return 200, "", None, ""
    answer = response.json()
    return (
        response.status_code,
        answer["code"],
        response.headers.get("Retry-After"),
        answer["error"],
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "refusal"),
    [
        # A queue of one request: while one runs and one waits, the others find it full.
        ({"FMNIST_THREADS": "8", "FMNIST_BATCH_QUEUE_SIZE": "1"}, "overloaded"),
    ],
    ids=["full_queue"],
)
def test_a_loaded_worker_refuses_what_it_cannot_serve_in_a_real_server(tmp_path, env, refusal):
    from harness import SHIPPED_MODEL_DIR
    from harness.server import LiveServer

    # One worker and full 64-image requests, which never share a call, so they queue.
    server = LiveServer(
        SHIPPED_MODEL_DIR, tmp_path / "gunicorn.log", FMNIST_WORKERS="1", **env
    ).start()
    try:
        threads = int(env["FMNIST_THREADS"])
        with ThreadPoolExecutor(threads) as pool:
            outcomes = list(pool.map(infer_full_batch, [server.url] * threads * 20))
        statuses = Counter(outcome[:3] for outcome in outcomes)
        assert statuses[(503, refusal, "1")] > 0, statuses
        allowed = {(200, "", None), (503, refusal, "1")}
        assert statuses[(200, "", None)] > 0, statuses
        assert set(statuses) <= allowed, statuses
        assert infer_full_batch(server.url)[0] in (200, 503)  # still answering
    finally:
        server.stop()


def infer_in_process(app: Flask) -> tuple[int, str, str | None, str]:
    """infer_full_batch through Flask's test client."""
    response = app.test_client().post(
        "/v2/models/fashion_mnist/infer",
        data=V2_BINARY_HEADER + bytes(FULL_BATCH),
        headers={"Inference-Header-Content-Length": str(len(V2_BINARY_HEADER))},
    )
    if response.status_code == 200:
        return 200, "", None, ""
    answer = response.get_json()
    return (
        response.status_code,
        answer["code"],
        response.headers.get("Retry-After"),
        answer["error"],
    )


@pytest.mark.parametrize(
    ("config", "refusal", "words"),
    [
        # A queue of one request: while one runs and one waits, the next finds it full.
        ({"batch_queue_size": 1}, "overloaded", "Too many requests are waiting"),
        # A request queued behind a model call that outlasts its time limit gives up there.
        ({"request_timeout": 0.2}, "deadline_exceeded", "waited 0.2s for the model"),
    ],
    ids=["full_queue", "deadline_in_queue"],
)
def test_a_worker_whose_model_is_busy_refuses_what_it_cannot_serve(
    tiny_model_dir, monkeypatch, config, refusal, words
):
    from service import create_app
    from service.io import deadline

    # The requests' clock stands still: however slowly one reaches the queue, it arrives
    # with its whole time limit left, and spends it there.
    monkeypatch.setattr(deadline, "time", SimpleNamespace(monotonic=lambda: 0.0))
    app = create_app({"model_dir": tiny_model_dir, **config})
    versions = app.extensions["versions"]
    try:
        assert versions.wait_ready(60), versions.error
        batcher = versions.current().batcher
        # The model call is held until the test lets it go.
        entered, gate = threading.Event(), threading.Event()
        runtime = type(versions.current().runtime)
        call = runtime.__call__

        def held(self, images: np.ndarray) -> np.ndarray:
            entered.set()
            gate.wait(30)
            return call(self, images)

        monkeypatch.setattr(runtime, "__call__", held)
        with ThreadPoolExecutor(2) as pool:
            served = [pool.submit(infer_in_process, app)]
            assert entered.wait(30), "the first request never reached the model"
            if refusal == "overloaded":
                served.append(pool.submit(infer_in_process, app))
                wait_until(batcher, lambda: len(batcher._pending) == 1, "a request queued")
            refused = infer_in_process(app)
            gate.set()
            assert [f.result(30)[0] for f in served] == [200] * len(served)
        assert refused[:3] == (503, refusal, "1") and words in refused[3], refused
        assert infer_in_process(app)[0] == 200  # still answering
    finally:
        versions.stop()
        if "metric_buffer" in app.extensions:
            app.extensions["metric_buffer"].close()


def test_an_interrupted_retry_one_by_one_leaves_no_request_unanswered():
    gate = threading.Event()

    def model(images: np.ndarray) -> np.ndarray:
        gate.wait(5)
        if len(images) > 1:
            raise ValueError("a batch fails: retried one by one")
        raise Interrupt  # and the retry is interrupted

    batcher = BatchingPredictor(model, BatchingConfig(64, 0, 100))
    outcomes: list[str] = []

    def call() -> None:
        try:
            batcher.predict(images_of(1))
            outcomes.append("answered")
        except Interrupt:
            outcomes.append("interrupted")

    first = threading.Thread(target=call)
    first.start()
    wait_until_running(batcher)  # the others queue behind it and form a batch of three
    threads = [first] + [threading.Thread(target=call) for _ in range(3)]
    for thread in threads[1:]:
        thread.start()
    wait_until(batcher, lambda: len(batcher._pending) == 3, "three requests queued")
    gate.set()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert outcomes == ["interrupted"] * 4  # none woke unfinished to return nothing
    batcher.close(timeout=5)
    assert not batcher._busy and not batcher._pending and batcher._queued == 0


def put_under_load(
    batcher: BatchingPredictor, pool: ThreadPoolExecutor, gate: threading.Event
) -> None:
    """Serve requests 1, then 2 and 3 in one batch (the model held at `gate` meanwhile): a
    batch of two requests puts the batcher under load, so that its next leader gathers."""
    first = pool.submit(batcher.predict, images_of(1))
    wait_until_running(batcher)
    pair = [pool.submit(batcher.predict, images_of(n)) for n in (2, 3)]
    wait_until(batcher, lambda: len(batcher._pending) == 2, "two requests queued")
    gate.set()
    assert [f.result(5)[0, 0] for f in (first, *pair)] == [1, 2, 3]


# A gathering wait no test outlasts: a leader that waited it out would fail the test's
# timeouts, and one that must wait is ended by close(), not by the clock.
LONG_WAIT = 60.0


class CountedWakeUps(threading.Condition):
    """The batcher's condition for arrivals, counting the wake-ups that cut a gathering
    leader's wait short (close() wakes it with notify_all, not counted)."""

    def __init__(self, lock: threading.Lock) -> None:
        super().__init__(lock)
        self.count = 0

    def notify(self, n: int = 1) -> None:
        self.count += 1
        super().notify(n)


def count_wake_ups(batcher: BatchingPredictor) -> CountedWakeUps:
    """Count the wake-ups of `batcher`'s gathering leaders from now on."""
    wake_ups = CountedWakeUps(batcher._lock)
    batcher._arrived = wake_ups
    return wake_ups


def test_a_gathering_leader_runs_once_its_batch_is_full_and_counts_no_request_that_left():
    gate = threading.Event()
    model = RecordingModel(delay=gate)
    batcher = BatchingPredictor(model, BatchingConfig(3, LONG_WAIT, 10))
    wake_ups = count_wake_ups(batcher)
    with ThreadPoolExecutor(4) as pool:
        put_under_load(batcher, pool, gate)
        # A full batch ends the gathering wait at once, long before max_wait.
        full = [pool.submit(batcher.predict, images_of(n)) for n in (4, 5, 6)]
        assert [f.result(10)[0, 0] for f in full] == [4, 5, 6]
        # A request that gave up while the leader gathered no longer counts toward a full
        # batch: the one that came after it does not wake the leader, which waits on.
        lone = pool.submit(batcher.predict, images_of(7))
        wait_until(batcher, lambda: batcher._busy and len(batcher._pending) == 1, "gathering")
        woken = wake_ups.count
        with pytest.raises(DeadlineExceeded):
            batcher.predict(images_of(8), 0.1)
        late = pool.submit(batcher.predict, images_of(9))
        wait_until(batcher, lambda: len(batcher._pending) == 2, "the late request queued")
        assert batcher._queued == 2 and wake_ups.count == woken
        assert not lone.done() and not late.done()
        batcher.close()  # the leader runs what it gathered
        assert lone.result(5)[0, 0] == 7 and late.result(5)[0, 0] == 9
    assert model.calls == [1, 2, 3, 2]
    assert not batcher._busy and not batcher._pending and batcher._queued == 0


def test_a_gathering_leader_runs_once_every_request_of_the_worker_is_queued():
    gate = threading.Event()
    model = RecordingModel(delay=gate)
    handling = [3]  # requests the worker holds, as Instrumentation.requests_in_process counts
    batcher = BatchingPredictor(model, BatchingConfig(64, LONG_WAIT, 10, lambda: handling[0]))
    wake_ups = count_wake_ups(batcher)
    with ThreadPoolExecutor(4) as pool:
        put_under_load(batcher, pool, gate)
        # Far from a full batch, but the worker holds no other request: no wait for max_wait.
        trio = [pool.submit(batcher.predict, images_of(n)) for n in (4, 5, 6)]
        assert [f.result(10)[0, 0] for f in trio] == [4, 5, 6]
        # One more request held elsewhere in the worker (it will never queue): the leader
        # waits on for it, woken by none of the three.
        handling[0] = 4
        woken = wake_ups.count
        trio = [pool.submit(batcher.predict, images_of(n)) for n in (7, 8, 9)]
        wait_until(batcher, lambda: len(batcher._pending) == 3, "three requests queued")
        assert wake_ups.count == woken and not any(f.done() for f in trio)
        batcher.close()  # the leader runs what it gathered
        assert [f.result(5)[0, 0] for f in trio] == [7, 8, 9]
    assert model.calls == [1, 2, 3, 3]
