"""gunicorn's gthread worker, except that a new connection waits for its first bytes in the
worker's poller instead of in a request thread.

gthread hands every accepted connection to its thread pool at once, and the thread waits up to
five seconds for the first bytes before giving the connection back to the poller: a few dozen
connections that send nothing held every thread, and the requests queued behind them waited
(docs/security.md, "Slow clients and the front door"). Here a connection goes to a thread only
once it has something to read; until then it waits where kept-alive connections wait, and is
closed after `keepalive` seconds of silence, as gthread closes the connections it defers.

It overrides `enqueue_req` and reuses gthread's own waiting list for deferred connections
(`pending_conns`, `on_pending_socket_readable`), which gunicorn does not document as an
extension point: tests/test_faults.py fails if an upgrade changes them.
"""

from __future__ import annotations

import selectors
import socket
import time
from functools import partial
from types import FrameType

from gunicorn.workers.gthread import TConn, ThreadWorker


class ParkingThreadWorker(ThreadWorker):
    """A gthread worker whose threads never wait for a silent client's first bytes, and whose
    gRPC server (gunicorn.conf.py's post_worker_init) shuts down with its HTTP side."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """SIGTERM: besides gunicorn's graceful stop of HTTP, refuse new gRPC calls at once and
        let those in flight finish within graceful_timeout (worker_exit waits for them)."""
        grpc_server = getattr(self, "grpc_server", None)
        if grpc_server is not None:
            grpc_server.stop(self.cfg.graceful_timeout)  # returns at once
        super().handle_exit(sig, frame)

    def enqueue_req(self, conn: TConn) -> None:
        """Run the connection in a thread if it has bytes to read; otherwise park it.

        Called on the worker's main thread, for new connections and for ones coming back from
        the poller (kept alive, or parked here), which have bytes to read.
        """
        if conn.initialized or conn.data_ready or has_bytes(conn.sock):
            conn.data_ready = True  # the thread need not wait for them
            super().enqueue_req(conn)
            return
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(
            conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn)
        )


def has_bytes(sock: socket.socket) -> bool:
    """Whether a read would not block: bytes wait, the peer closed, or the socket failed."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True  # the thread meets the error and closes the connection
    return True
