"""A time limit per request, so a stalled upload or an expensive batch cannot hold a thread.

Under gunicorn's gthread worker, its `timeout` only restarts a worker whose main loop hangs;
a request thread that waits on a slow client or works through a heavy batch is never cut
off. The deadline bounds both, on every POST route (service/dataplane.py): socket reads of
the body stop when it passes (408), and it is checked between images, before calling the
model, and while waiting in the batching queue (503).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.exceptions import ClientDisconnected

from service.errors import DeadlineExceeded, RequestTimeout

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

    @contextmanager
    def reading_body(self, environ: dict[str, Any]) -> Iterator[None]:
        """Bound the socket reads of the request body by the deadline: a stall becomes a 408."""
        sock = environ.get("gunicorn.socket")  # absent under Flask's test client
        if sock is not None:
            sock.settimeout(max(self.remaining(), MIN_SOCKET_TIMEOUT))
        try:
            yield
        except ClientDisconnected as error:
            # Werkzeug reports any failed read as a disconnect; a timeout is the deadline's.
            if isinstance(error.__context__, TimeoutError):
                raise RequestTimeout(
                    f"The request body did not arrive within {self.seconds:g}s."
                ) from None
            raise
        finally:
            if sock is not None:
                sock.settimeout(None)  # gunicorn writes the response on a blocking socket
