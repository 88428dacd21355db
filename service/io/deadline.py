"""A time limit per request, so a stalled upload or an expensive batch cannot hold a thread.

Under gunicorn's gthread worker, its `timeout` only restarts a worker whose main loop hangs;
a request thread that waits on a slow client or works through a heavy batch is never cut
off. The deadline bounds both, on every POST route (service/inference/dataplane.py): socket reads of
the body stop when it passes (408), and it is checked between images, before calling the
model, and while waiting in the batching queue (503).
"""

from __future__ import annotations

import socket
import time
from types import TracebackType
from typing import Any

from gunicorn.http.errors import ParseException
from werkzeug.exceptions import ClientDisconnected

from service.errors import DeadlineExceeded, MalformedRequest, RequestTimeout

# The shortest socket timeout set; zero would make the socket non-blocking instead.
MIN_SOCKET_TIMEOUT = 0.001


class Deadline:
    """The moment by which one request must be answered."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left; zero or less once the deadline has passed."""
        return self.expires - time.monotonic()

    def check(self, step: str) -> None:
        """Raise DeadlineExceeded if the deadline has passed before `step`."""
        if self.remaining() <= 0:
            raise DeadlineExceeded(
                f"The request took longer than {self.seconds:g}s before {step}; "
                "send fewer or smaller images, or retry.",
                headers={"Retry-After": "1"},
            )

    def reading_body(self, environ: dict[str, Any]) -> BodyReads:
        """Bound the socket reads of the request body by the deadline: a stall becomes a 408."""
        return BodyReads(self, environ.get("gunicorn.socket"))  # absent under the test client


class BodyReads:
    """The `with` block of Deadline.reading_body: the socket's timeout set to the time left
    for the block, and put back after it.

    A class rather than a generator context manager: every POST goes through it, and a
    generator costs a frame and a StopIteration more.
    """

    def __init__(self, deadline: Deadline, sock: socket.socket | None) -> None:
        self.deadline = deadline
        self.sock = sock

    def __enter__(self) -> None:
        if self.sock is not None:
            self.sock.settimeout(max(self.deadline.remaining(), MIN_SOCKET_TIMEOUT))

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        """Put the socket back in blocking mode; turn a read that timed out into a 408, and a
        body whose framing is broken into a 400."""
        if self.sock is not None:
            self.sock.settimeout(None)  # gunicorn writes the response on a blocking socket
        # Werkzeug reports any failed read as a disconnect; a timeout is the deadline's.
        if isinstance(error, ClientDisconnected) and isinstance(error.__context__, TimeoutError):
            raise RequestTimeout(
                f"The request body did not arrive within {self.deadline.seconds:g}s."
            ) from None
        # A chunked body cut short (Werkzeug's disconnect), or chunk framing gunicorn's parser
        # refuses as it reads (a chunk size that is not hex, a chunk without its CRLF): Werkzeug
        # catches only OSError and ValueError, so gunicorn's parse errors reach us as they are.
        if isinstance(error, ClientDisconnected | ParseException):
            raise MalformedRequest(
                f"The request body's framing is broken: {_reason(error)}"
            ) from None


def _reason(error: BaseException) -> str:
    """What was wrong with the body, in a few words."""
    if isinstance(error, ParseException):
        return f"{type(error).__name__} ({str(error)[:80]})."
    return "it ended before its last chunk."
