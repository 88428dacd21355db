"""Correctness of the adaptive batcher (not timing): mapping, isolation, shutdown, overload,
requests that give up waiting."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from service.errors import DeadlineExceeded, Overloaded
from service.inference.batching import BatchingConfig, BatchingPredictor


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
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(batcher.predict, images_of(v)) for v in range(8)]
        refused = 0
        for future in futures[::-1]:
            try:
                future.result(0.5)
            except Overloaded as error:
                refused += 1
                assert error.status == 503 and error.headers["Retry-After"] == "1"
            except TimeoutError:
                pass
        gate.set()
    batcher.close()
    assert refused >= 4


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
    from tests.test_metrics import scrape, total

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
    after = scrape(live_server)
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
        # The default queue, one place per thread, and a 100 ms limit: 16 full batches of about
        # 10 ms each cannot all be served in time, and those still queued give up.
        ({"FMNIST_THREADS": "16", "FMNIST_REQUEST_TIMEOUT": "0.1"}, "deadline_exceeded"),
    ],
    ids=["full_queue", "deadline_in_queue"],
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
        if refusal == "deadline_exceeded":
            allowed.add((408, "request_timeout", None))  # a body that took the whole limit
            # some gave up in the queue, not only before it
            assert any("waited" in outcome[3] for outcome in outcomes), statuses
        else:
            assert statuses[(200, "", None)] > 0, statuses
        assert set(statuses) <= allowed, statuses
        assert infer_full_batch(server.url)[0] in (200, 503)  # still answering
    finally:
        server.stop()


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
    time.sleep(0.2)
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
    gate.set()
    assert [f.result(5)[0, 0] for f in (first, *pair)] == [1, 2, 3]


def test_a_gathering_leader_runs_once_its_batch_is_full_and_counts_no_request_that_left():
    gate = threading.Event()
    model = RecordingModel(delay=gate)
    batcher = BatchingPredictor(model, BatchingConfig(3, 0.5, 10))
    with ThreadPoolExecutor(4) as pool:
        put_under_load(batcher, pool, gate)
        # A full batch ends the gathering wait at once, long before max_wait.
        started = time.perf_counter()
        full = [pool.submit(batcher.predict, images_of(n)) for n in (4, 5, 6)]
        assert [f.result(5)[0, 0] for f in full] == [4, 5, 6]
        assert time.perf_counter() - started < 0.4
        # A request that gave up while the leader gathered no longer counts toward a full
        # batch: the leader waits out max_wait for the one that came after it.
        started = time.perf_counter()
        lone = pool.submit(batcher.predict, images_of(7))
        wait_until(batcher, lambda: batcher._busy and len(batcher._pending) == 1, "gathering")
        with pytest.raises(DeadlineExceeded):
            batcher.predict(images_of(8), 0.1)
        late = pool.submit(batcher.predict, images_of(9))
        assert lone.result(5)[0, 0] == 7 and late.result(5)[0, 0] == 9
        assert time.perf_counter() - started >= 0.4
    batcher.close()
    assert model.calls == [1, 2, 3, 2]
    assert not batcher._busy and not batcher._pending and batcher._queued == 0


def test_a_gathering_leader_runs_once_every_request_of_the_worker_is_queued():
    gate = threading.Event()
    model = RecordingModel(delay=gate)
    handling = [3]  # requests the worker holds, as instrumentation.HANDLING counts them
    batcher = BatchingPredictor(model, BatchingConfig(64, 2.0, 10, lambda: handling[0]))
    with ThreadPoolExecutor(4) as pool:
        put_under_load(batcher, pool, gate)
        # Far from a full batch, but the worker holds no other request: no 2 s wait.
        started = time.perf_counter()
        trio = [pool.submit(batcher.predict, images_of(n)) for n in (4, 5, 6)]
        assert [f.result(5)[0, 0] for f in trio] == [4, 5, 6]
        assert time.perf_counter() - started < 1.0
        # One more request held elsewhere in the worker (it will never queue): the leader
        # waits out max_wait for it.
        handling[0] = 4
        started = time.perf_counter()
        trio = [pool.submit(batcher.predict, images_of(n)) for n in (7, 8, 9)]
        assert [f.result(5)[0, 0] for f in trio] == [7, 8, 9]
        assert time.perf_counter() - started >= 1.9
    batcher.close()
    assert model.calls == [1, 2, 3, 3]
