"""The front door: Debian's nginx running deploy/nginx/fashion-mnist.conf and
fashion-mnist-grpc.conf, the files compose mounts, in front of a real gunicorn
(harness/nginx.py changes only their upstream and listen lines).

Silent connections, header tricklers and stalled bodies by the dozen cost a probe request nothing
through it, and nginx cuts each within the shipped timeouts; requests pass with their id, the
body limit is the service's and the header limits are gunicorn's or tighter. One gRPC channel's
calls reach every worker through it, and a message over the service's limit gets the service's
own refusal.
"""

from __future__ import annotations

import runpy
import time
from collections.abc import Iterator

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness import ROOT
from harness.nginx import FrontDoor, raw_exchange, seconds, shipped, shipped_directives, size
from harness.procfs import client_sockets
from harness.server import LiveServer, free_port
from harness.slow_clients import PROBE_PNG, SlowClients, probe_meanwhile
from service.settings import Settings
from tests.skips import require_program

pytestmark = pytest.mark.slow

PROBES = 5
MARGIN = 3.0  # seconds past a timeout within which nginx must have cut a connection
GUNICORN_LINE_LIMIT = 8190  # gunicorn.conf.py's limit_request_line and limit_request_field_size


@pytest.fixture(scope="module")
def front_door(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """nginx with the shipped configuration in front of the session's gunicorn."""
    folder = tmp_path_factory.mktemp("nginx")
    grpc_ports = (live_server.grpc_port, free_port())
    door = FrontDoor(require_program("nginx"), live_server.port, folder, free_port(), grpc_ports)
    door.start()
    yield door
    door.stop()


def assert_probes_unhurt(door: FrontDoor) -> None:
    """Probe /predict through nginx, a new connection each: all answered, each under 1 s."""
    probes = probe_meanwhile(door.url, PROBES, spacing=0.3, timeout=15)
    assert [p.status for p in probes] == [200] * PROBES, probes
    assert max(p.seconds for p in probes) < 1.0, probes


def assert_cut_at(attack: SlowClients, timeout: float) -> None:
    """Every slow connection cut by nginx at `timeout`, give or take the margin."""
    deadline = attack.started + timeout + MARGIN
    while len(attack.cuts) < attack.count and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(attack.cuts) == attack.count, f"{len(attack.cuts)} of {attack.count} cut"
    cut = attack.cut_seconds()
    assert timeout - 0.5 < cut[0] and cut[-1] < timeout + MARGIN, (cut[0], cut[-1])


def test_the_shipped_limits_are_the_services():
    settings = Settings()
    assert size(shipped("client_max_body_size")) == settings.max_body_bytes
    # nginx waits a little longer than the service's deadline, so the service's 408 or 503
    # answers a slow request, not nginx's 504.
    read = seconds(shipped("proxy_read_timeout"))
    assert settings.request_timeout < read <= settings.request_timeout + 10
    # An idle upstream connection is dropped by nginx before gunicorn closes it.
    gunicorn = runpy.run_path(str(ROOT / "service" / "gunicorn.conf.py"), run_name="conf")
    (upstream_idle,) = shipped_directives("upstream")["keepalive_timeout"]
    assert seconds(upstream_idle) < gunicorn["keepalive"]
    assert shipped("proxy_request_buffering") == "on"
    headers = dict(value.split(None, 1) for value in shipped_directives()["proxy_set_header"])
    assert headers["X-Request-ID"] == "$fmnist_request_id"
    assert headers["X-Forwarded-For"] == "$remote_addr"
    assert headers["Connection"] == '""' and shipped("proxy_http_version") == "1.1"


def test_silent_connections_cost_a_probe_nothing_and_are_closed(front_door):
    with SlowClients(front_door.port, "silent", 200) as silent:
        assert_probes_unhurt(front_door)
        assert_cut_at(silent, seconds(shipped("client_header_timeout")))


def test_header_tricklers_are_cut_at_the_header_timeout(front_door):
    # A byte every 2 s: a timeout between reads would never fire; the header's total one does.
    with SlowClients(front_door.port, "trickle", 64, interval=2.0) as tricklers:
        assert_probes_unhurt(front_door)
        assert_cut_at(tricklers, seconds(shipped("client_header_timeout")))


def test_stalled_bodies_are_cut_and_never_reach_gunicorn(front_door, live_server):
    logged_before = predict_lines(live_server, 0)
    with SlowClients(front_door.port, "stall", 80) as stalled:
        assert_probes_unhurt(front_door)
        assert_cut_at(stalled, seconds(shipped("client_body_timeout")))
    assert predict_lines(live_server, PROBES + logged_before) == PROBES + logged_before


def predict_lines(server: LiveServer, expected: int) -> int:
    """How many /predict requests gunicorn logged, once `expected` are (its access log is
    written every 0.1 s) or 5 s have passed."""
    deadline = time.monotonic() + 5
    while True:
        logged = server.log_path.read_text(errors="replace").count('"path":"/predict"')
        if logged >= expected or time.monotonic() > deadline:
            time.sleep(0.3)  # and nothing more arrives
            return server.log_path.read_text(errors="replace").count('"path":"/predict"')
        time.sleep(0.1)


def test_requests_pass_with_their_id_over_kept_alive_upstream_connections(front_door, live_server):
    answer = requests.get(front_door.url + "/healthz", headers={"X-Request-ID": "abc-1"}, timeout=5)
    assert answer.status_code == 200 and answer.headers["X-Request-ID"] == "abc-1"
    made = requests.get(front_door.url + "/healthz", timeout=5).headers["X-Request-ID"]
    assert len(made) == 32 and int(made, 16) >= 0  # nginx's $request_id, logged by the service
    for _ in range(20):  # each on a new client connection, closed after its answer
        response = requests.post(
            front_door.url + "/predict",
            data=PROBE_PNG,
            headers={"Content-Type": "image/png", "Connection": "close"},
            timeout=10,
        )
        assert response.status_code == 200
    # nginx keeps its connections to gunicorn open between requests: a few, not one per request.
    held = sum(client_sockets(pid) for pid in live_server.worker_pids())
    assert 1 <= held <= 4, held


def test_a_body_over_the_services_limit_is_refused_before_it_is_read(front_door):
    limit = Settings().max_body_bytes
    head = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        f"Content-Length: {limit + 1}\r\nConnection: close\r\n\r\n"
    )
    answer = raw_exchange(front_door.port, head.encode(), head_only=True)  # and no body sent
    assert answer.startswith(b"HTTP/1.1 413 ") and b"Server: nginx" in answer, answer[:300]
    # A body at the limit goes through to the service, which answers it (problem JSON).
    response = requests.post(
        front_door.url + "/predict",
        data=b"x" * limit,
        headers={"Content-Type": "image/png"},
        timeout=30,
    )
    assert response.headers["Content-Type"] == "application/problem+json", response.text[:300]


# The longest request line and header field (with its name) gunicorn takes, and nginx: its
# buffers of 8190 bytes hold them with their CRLF.
@pytest.mark.parametrize(
    ("where", "gunicorn_longest", "nginx_longest"),
    [("request line", 8190, 8188), ("header field", 8188, 8188)],
)
def test_header_limits_are_no_larger_than_gunicorns(
    front_door, live_server, where, gunicorn_longest, nginx_longest
):
    def request(length: int) -> bytes:
        if where == "request line":
            path = "/" + "a" * (length - len("GET / HTTP/1.1"))
            return f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        field = "X-Long: " + "b" * (length - len("X-Long: "))
        return f"GET /healthz HTTP/1.1\r\nHost: x\r\n{field}\r\nConnection: close\r\n\r\n".encode()

    def answered_by_app(answer: bytes) -> bool:
        return answer.split(b" ", 2)[1] in {b"200", b"404"}

    assert nginx_longest <= gunicorn_longest
    assert answered_by_app(raw_exchange(live_server.port, request(gunicorn_longest)))
    assert not answered_by_app(raw_exchange(live_server.port, request(gunicorn_longest + 1)))
    assert answered_by_app(raw_exchange(front_door.port, request(nginx_longest)))
    refused = raw_exchange(front_door.port, request(nginx_longest + 1))
    assert refused.split(b" ", 2)[1] in {b"400", b"414"}, refused[:200]
    assert b"<center>nginx</center>" in refused, "nginx refuses it itself"


MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


HEALTH_CHECK = "/grpc.health.v1.Health/Check"


def checks_per_worker(server: LiveServer, calls: int, before: list[float]) -> list[float]:
    """How many health checks each worker answered since `before`, once all `calls` are
    counted (each worker's metric buffer writes its file within FLUSH_INTERVAL)."""
    deadline = time.monotonic() + 10
    while True:
        now = server.counted_per_worker("fmnist_grpc_requests_total", method=HEALTH_CHECK)
        answered = [a - b for a, b in zip(now, before, strict=True)]
        if sum(answered) >= calls or time.monotonic() > deadline:
            return answered
        time.sleep(0.05)


def check_at_once(target: str, calls: int) -> None:
    """Send `calls` health checks at once on one channel; all must answer SERVING."""
    with grpc.insecure_channel(target) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        futures = [check.future(health_pb2.HealthCheckRequest(), timeout=10) for _ in range(calls)]
        answers = [future.result().status for future in futures]
    assert answers == [health_pb2.HealthCheckResponse.SERVING] * calls


def test_one_grpc_channels_calls_reach_every_worker_through_nginx(front_door, live_server):
    # Counted from the calls each worker answered, not from the connections it holds after:
    # which of nginx's upstream connections stay idle in its cache is nginx's choice.
    def count() -> list[float]:
        return live_server.counted_per_worker("fmnist_grpc_requests_total", method=HEALTH_CHECK)

    # Directly, a channel is one connection, accepted by one worker: all its calls go there.
    before = count()
    check_at_once(live_server.grpc_target, 32)
    assert sorted(checks_per_worker(live_server, 32, before)) == [0, 32]
    # Through nginx, each call in flight takes an upstream connection of its own (nginx does not
    # multiplex upstream streams), and the kernel spreads new ones over both workers' listeners.
    # Most rounds of 32 split about evenly; rounds retried so that a rare one-sided round (a
    # connection cache that happened to lean one way) cannot fail it alone.
    for _ in range(5):
        before = count()
        check_at_once(front_door.grpc_target, 32)
        answered = checks_per_worker(live_server, 32, before)
        assert sum(answered) == 32, answered
        if min(answered) >= 1:
            break
    assert min(answered) >= 1, answered


def test_a_grpc_message_over_the_limit_gets_the_services_refusal_through_nginx(front_door):
    limit = Settings().max_body_bytes
    with grpc.insecure_channel(front_door.grpc_target) as channel:
        infer = channel.unary_unary(MODEL_INFER)  # bytes in, bytes out
        with pytest.raises(grpc.RpcError) as refused:
            infer(b"\0" * (limit + 1), timeout=30)
    # The service's status, not nginx's 413 (which a gRPC client reads as UNKNOWN).
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
