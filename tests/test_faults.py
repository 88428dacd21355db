"""Faults with a real gunicorn: killed workers, shutdown, slow and silent clients, stalled bodies
on every route that reads one, requests over time.

Each test starts its own server (bin/serve), because the faults damage it. Load comes from a
few bounded threads on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from harness.images import encode, garment
from harness.podman import Container
from harness.server import LiveServer
from harness.slow_clients import SlowClients, probe

pytestmark = pytest.mark.slow

PNG = encode(garment())


def predict_png(server: LiveServer, timeout: float = 30) -> requests.Response:
    """One raw-PNG /predict request."""
    return requests.post(
        server.url + "/predict", data=PNG, headers={"Content-Type": "image/png"}, timeout=timeout
    )


# What gunicorn's master logs when a SIGTERM starts its graceful shutdown.
SHUTDOWN = "Handling signal: term"


def wait_for(condition, timeout: float, message: str) -> None:
    """Poll `condition` until it holds, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(message)


def start_request(server: LiveServer, body: bytes, sent: int, content_type: str) -> socket.socket:
    """Open a connection and send a /predict request's headers and the first `sent` body bytes."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(head.encode() + body[:sent])
    return sock


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Read a whole Connection: close response; return its status and body."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.fixture
def make_server(tiny_model_dir: Path, tmp_path: Path) -> Iterator:
    """Start servers with extra environment; stop them all at the end."""
    servers: list[LiveServer] = []

    def start(**env: str) -> LiveServer:
        log = tmp_path / f"gunicorn-{len(servers)}.log"
        servers.append(LiveServer(tiny_model_dir, log, **env).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


class Load:
    """A few threads sending /predict in a loop until stopped; outcomes are counted."""

    def __init__(self, server: LiveServer, threads: int = 3, max_requests: int = 2000) -> None:
        self.server = server
        self.outcomes: Counter[str] = Counter()
        self.stop_event = threading.Event()
        self.budget = threading.Semaphore(max_requests)  # bounded, even if never stopped
        self.threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(60)

    def _run(self) -> None:
        """Send requests; record the status, or the error name when no answer came."""
        while not self.stop_event.is_set() and self.budget.acquire(blocking=False):
            try:
                response = predict_png(self.server, timeout=30)
                outcome = str(response.status_code)
                if response.status_code != 200:
                    outcome += ":" + response.json().get("code", "?")
            except requests.RequestException as error:
                outcome = type(error).__name__
            self.outcomes[outcome] += 1


def test_a_killed_worker_is_replaced_and_service_recovers(make_server):
    server = make_server(FMNIST_WORKERS="2")
    before = set(server.worker_pids())
    assert len(before) == 2
    with Load(server) as load:
        wait_for(lambda: load.outcomes["200"] >= 20, 60, f"no load got through: {load.outcomes}")
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: len(server.worker_pids()) == 2 and victim not in server.worker_pids(),
            60,
            "the master did not replace the killed worker",
        )
        # Ready means both workers answer /readyz; each connection lands on either one.
        wait_for(
            lambda: all(
                requests.get(server.url + "/readyz", timeout=5).status_code == 200
                for _ in range(10)
            ),
            90,
            "/readyz did not recover",
        )
        during = Counter(load.outcomes)
    after = [predict_png(server).status_code for _ in range(20)]
    assert after == [200] * 20
    # Only the killed worker's in-flight requests failed: they lost their connection, before
    # the answer (ConnectionError) or while it was being sent (ChunkedEncodingError: the
    # headers had gone out). The new worker took no request before its model was loaded
    # (gunicorn.conf.py post_worker_init).
    lost = {"ConnectionError", "ChunkedEncodingError"}
    assert set(during) <= {"200"} | lost, during
    assert sum(during[name] for name in lost) <= len(load.threads), during
    assert requests.get(server.metrics_url, timeout=5).status_code == 200
    assert server.tracebacks() == []


def test_sigterm_lets_in_flight_requests_finish(make_server):
    server = make_server(FMNIST_WORKERS="1")
    sock = start_request(server, PNG, len(PNG) // 2, "image/png")
    # The worker's thread is waiting for the rest of the body; then shutdown begins.
    wait_for(lambda: in_flight(server) >= 1, 10, "the upload never reached a thread")
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    wait_for(lambda: SHUTDOWN in server.log_text(), 10, "the master never began shutting down")
    sock.sendall(PNG[len(PNG) // 2 :])
    status, body = read_response(sock)
    assert status == 200 and b'"predictions"' in body
    assert server.process.wait(30) == 0


def test_sigterm_refuses_new_grpc_calls_while_http_drains(make_server):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = make_server(FMNIST_WORKERS="1")
    sock = start_request(server, PNG, len(PNG) // 2, "image/png")
    wait_for(lambda: in_flight(server) >= 1, 10, "the upload never reached a thread")
    with grpc.insecure_channel(server.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def refused() -> bool:
            try:
                health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            except grpc.RpcError as error:
                return error.code() == grpc.StatusCode.UNAVAILABLE
            return False

        assert not refused()
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: SHUTDOWN in server.log_text(), 10, "the master never began shutting down")
        # While gunicorn still drains the upload, the worker takes no new gRPC call.
        wait_for(refused, 10, "the worker took new gRPC calls while draining")
    sock.sendall(PNG[len(PNG) // 2 :])
    status, body = read_response(sock)
    assert status == 200 and b'"predictions"' in body
    assert server.process.wait(30) == 0


@pytest.fixture(scope="module")
def deadline_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One worker with four threads and a 5-second request time limit."""
    log = tmp_path_factory.mktemp("deadline") / "gunicorn.log"
    server = LiveServer(
        tiny_model_dir, log, FMNIST_WORKERS="1", FMNIST_THREADS="4", FMNIST_REQUEST_TIMEOUT="5"
    ).start()
    yield server
    server.stop()


def send_slowly(sock: socket.socket, data: bytes, seconds: float) -> None:
    """Send `data` byte by byte, spread over `seconds`."""
    for byte in data:
        sock.sendall(bytes([byte]))
        time.sleep(seconds / len(data))


def in_flight(server: LiveServer | Container) -> float:
    """The requests the server's (or container's) workers are handling now, as its metrics say."""
    text = requests.get(server.metrics_url, timeout=10).text
    lines = [
        line for line in text.splitlines() if line.startswith("fmnist_http_requests_in_flight ")
    ]
    return float(lines[0].split()[1]) if lines else 0.0


def test_slow_clients_do_not_block_other_clients(deadline_server):
    server = deadline_server
    half = len(PNG) // 2
    slow = [start_request(server, PNG, 0, "image/png") for _ in range(3)]  # 3 of 4 threads
    senders = [threading.Thread(target=send_slowly, args=(s, PNG[:half], 0.5)) for s in slow]
    for sender in senders:
        sender.start()
    # Each slow upload holds a thread, waiting for the rest of its body, until told to go on.
    wait_for(lambda: in_flight(server) >= 3, 10, "the slow uploads never reached a thread")
    for sender in senders:
        sender.join()
    # Answered while the slow uploads hold three threads: they send nothing more until then.
    assert [predict_png(server, timeout=10).status_code for _ in range(5)] == [200] * 5
    for sock in slow:
        sock.sendall(PNG[half:])
    for sock in slow:
        status, body = read_response(sock)
        assert status == 200, body


def test_silent_connections_hold_no_thread(deadline_server):
    # Three times as many connections as the worker has threads, none sending a byte. gthread's
    # own worker class gave each a thread for 5 s (its first-bytes wait), so the probes queued
    # behind them waited 5 s and more; service/worker.py parks them in the poller instead.
    count = 12
    with SlowClients(deadline_server.port, "silent", count) as silent:
        time.sleep(0.5)  # every silent connection is accepted
        probes = [probe(deadline_server.url, timeout=20) for _ in range(3)]
        assert [p.status for p in probes] == [200] * 3, probes
        # Answered while every silent connection is still held: not queued behind them.
        assert not silent.cuts, (silent.cuts, probes)
        # Closed after `keepalive` (5 s) of silence, as gthread closes the connections it defers.
        wait_for(lambda: len(silent.cuts) == count, 15, f"not all cut: {silent.cuts}")
    assert all(4.5 < seconds < 10 for seconds in silent.cut_seconds()), silent.cut_seconds()


def test_a_stalled_upload_gets_a_408_at_the_deadline(deadline_server):
    sock = start_request(deadline_server, PNG, 10, "image/png")
    started = time.monotonic()
    status, body = read_response(sock)  # the client sends nothing more
    assert status == 408 and b'"request_timeout"' in body
    assert 4.5 < time.monotonic() - started < 15
    assert predict_png(deadline_server).status_code == 200


# Every route that reads a body, with a Content-Type it accepts.
POST_ROUTES = {
    "/predict": "image/png",
    "/preprocess": "image/png",
    "/v1/models/fashion_mnist:predict": "application/json",
    "/v2/models/fashion_mnist/infer": "application/json",
}


@pytest.fixture(scope="module")
def stall_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One worker with eight threads and a 3-second request time limit."""
    log = tmp_path_factory.mktemp("stall") / "gunicorn.log"
    server = LiveServer(
        tiny_model_dir, log, FMNIST_WORKERS="1", FMNIST_THREADS="8", FMNIST_REQUEST_TIMEOUT="3"
    ).start()
    yield server
    server.stop()


def stall(server: LiveServer, path: str, content_type: str) -> socket.socket:
    """Send a request's headers, announcing 1000 bytes of body, then one byte, then nothing."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        "Content-Length: 1000\r\nConnection: close\r\n\r\n{"
    )
    sock.sendall(head.encode())
    return sock


def test_stalled_bodies_are_cut_at_the_deadline_on_every_post_route(stall_server):
    server = stall_server
    started = time.monotonic()
    stalled = {path: stall(server, path, kind) for path, kind in POST_ROUTES.items()}
    time.sleep(0.5)  # every stalled request now holds a thread, waiting for its body
    answered = [predict_png(server, timeout=10).status_code for _ in range(5)]
    for path, sock in stalled.items():
        status, body = read_response(sock)
        waited = time.monotonic() - started
        answer = json.loads(body)
        assert status == 408 and answer["code"] == "request_timeout", (path, body)
        # Each route's own error form: {"error", "code"} under /v1 and /v2, a problem elsewhere.
        assert ("error" in answer) == path.startswith(("/v1/", "/v2/")), (path, answer)
        assert 2.5 < waited < 10, (path, waited)
    assert answered == [200] * 5  # the server went on answering others meanwhile
    assert predict_png(server).status_code == 200
    assert server.tracebacks() == []


def test_many_stalled_protocol_bodies_are_all_cut(stall_server):
    # The case: stalled /v2 and /v1 bodies by the dozen, more than the threads.
    paths = [path for path in POST_ROUTES if path.startswith("/v")] * 12
    started = time.monotonic()
    stalled = [stall(stall_server, path, "application/json") for path in paths]
    # Read all at once: gunicorn's main loop lingers up to 2 s on each closing connection
    # until its client closes too (util.close_graceful), so one reader taking them in turn
    # would measure its own slowness.
    with ThreadPoolExecutor(len(stalled)) as pool:
        statuses = Counter(status for status, _ in pool.map(read_response, stalled))
    # 24 requests on 8 threads: three rounds of the 3-second limit, not an endless hold.
    assert statuses == {408: len(paths)}, statuses
    assert time.monotonic() - started < 20
    assert predict_png(stall_server).status_code == 200
