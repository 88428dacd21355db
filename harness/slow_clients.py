"""Slow and silent clients, and a probe that times a normal request meanwhile (the front-door
tests and benchmarks/slow_clients.py).

Three kinds of misbehaving connection, all to 127.0.0.1:
- silent: connects and sends nothing;
- trickle: sends a request's header one byte every `interval` seconds;
- stall: sends a POST's whole header, announcing more body than it sends, then nothing.

`SlowClients` opens them, watches from one thread when the server cuts each (closes it, resets
it or answers it), and, for tricklers, sends the next byte from one other thread. Sockets are
closed only at the end, so no file descriptor is reused while the threads still hold it.
"""

from __future__ import annotations

import selectors
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from harness.images import encode, garment

KINDS = ("silent", "trickle", "stall")
STALL_BODY_BYTES = 1000  # announced; the stalled client sends STALL_SENT of them
STALL_SENT = 10
PROBE_PNG = encode(garment())


def trickled_request(port: int) -> bytes:
    """A GET whose header a trickler sends byte by byte: longer than any attack lasts."""
    return (
        f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Padding: {'a' * 200}\r\n\r\n"
    ).encode()


def stalled_head(port: int) -> bytes:
    """A /predict header announcing STALL_BODY_BYTES of body, and the first STALL_SENT."""
    return (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/png\r\n"
        f"Content-Length: {STALL_BODY_BYTES}\r\nConnection: close\r\n\r\n"
    ).encode() + PROBE_PNG[:STALL_SENT]


@dataclass
class Cut:
    """When the server ended one slow connection, and how: its status line, or none."""

    seconds: float
    status: int | None


@dataclass
class SlowClients:
    """`count` connections of one kind to 127.0.0.1:`port`, opened on entry, closed on exit."""

    port: int
    kind: str
    count: int
    interval: float = 6.0  # seconds between a trickler's bytes
    sockets: list[socket.socket] = field(default_factory=list)
    cuts: dict[int, Cut] = field(default_factory=dict)  # socket index: how it ended

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> SlowClients:
        self.started = time.monotonic()
        for _ in range(self.count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            if self.kind == "stall":
                sock.sendall(stalled_head(self.port))
            self.sockets.append(sock)
        self._threads.append(threading.Thread(target=self._watch, daemon=True))
        if self.kind == "trickle":
            self._threads.append(threading.Thread(target=self._trickle, daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
        for sock in self.sockets:
            sock.close()

    def cut_seconds(self) -> list[float]:
        """Seconds from opening to the server's cut, for each connection it cut."""
        return sorted(cut.seconds for cut in self.cuts.values())

    def _trickle(self) -> None:
        """Send every open trickler its next byte, every `interval` seconds, until stopped."""
        request = trickled_request(self.port)
        for position in range(len(request) - 1):  # never the last byte: the header stays open
            for index, sock in enumerate(self.sockets):
                if index not in self.cuts:
                    try:
                        sock.send(request[position : position + 1])
                    except OSError:  # cut meanwhile; the watcher records it
                        pass
            if self._stop.wait(self.interval):
                return

    def _watch(self) -> None:
        """Record when the server closes, resets or answers each connection."""
        with selectors.DefaultSelector() as selector:
            for index, sock in enumerate(self.sockets):
                selector.register(sock, selectors.EVENT_READ, index)
            while not self._stop.is_set() and len(self.cuts) < len(self.sockets):
                for key, _ in selector.select(timeout=0.2):
                    self.cuts[key.data] = Cut(time.monotonic() - self.started, status(key.fileobj))
                    selector.unregister(key.fileobj)


def status(sock: socket.socket) -> int | None:
    """The status of the answer waiting on a readable socket; None for a close or a reset."""
    try:
        data = sock.recv(64)
    except OSError:
        return None
    if data.startswith(b"HTTP/1."):
        return int(data.split(b" ", 2)[1])
    return None


@dataclass
class Probe:
    """One normal request sent during an attack: when it started, and how long its answer
    took (None when none came within the timeout)."""

    started: float
    seconds: float | None
    status: int | None


def probe(url: str, timeout: float) -> Probe:
    """POST one PNG to /predict on a new connection; time the answer."""
    started = time.monotonic()
    try:
        response = requests.post(
            url + "/predict",
            data=PROBE_PNG,
            headers={"Content-Type": "image/png", "Connection": "close"},
            timeout=timeout,
        )
    except requests.RequestException:
        return Probe(started, None, None)
    return Probe(started, time.monotonic() - started, response.status_code)


def probe_meanwhile(url: str, count: int, spacing: float, timeout: float) -> list[Probe]:
    """Start `count` probes `spacing` seconds apart, each on its own connection and thread,
    so that one waiting probe does not delay the next; return them when all have ended."""
    with ThreadPoolExecutor(count) as pool:
        futures = []
        for number in range(count):
            if number:
                time.sleep(spacing)
            futures.append(pool.submit(probe, url, timeout))
        return [future.result() for future in futures]


def summary(probes: list[Probe], timeout: float) -> dict[str, float | int]:
    """Median and max probe latency (an unanswered probe counts as the timeout) and how many
    were unanswered."""
    seconds = [p.seconds if p.seconds is not None else timeout for p in probes]
    return {
        "median": statistics.median(seconds),
        "max": max(seconds),
        "unanswered": sum(p.seconds is None for p in probes),
    }
