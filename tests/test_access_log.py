"""The worker's access-log buffer (service/observability/buffers.py): every line written, once,
soon."""

from __future__ import annotations

import io
import logging
import threading
import time

import pytest

from service.observability.buffers import AccessLogBuffer


@pytest.fixture
def buffered():
    """An AccessLogBuffer in front of a handler writing to a string, on a logger of its own."""
    stream = io.StringIO()
    target = logging.StreamHandler(stream)
    target.setFormatter(logging.Formatter("%(message)s"))
    handler = AccessLogBuffer(target)
    logger = logging.getLogger("test.access-buffer")
    logger.propagate, logger.handlers = False, [handler]
    logger.setLevel(logging.INFO)
    yield logger, handler, stream
    logger.handlers = []
    handler.close()


def test_every_line_from_many_threads_is_written_once_by_close(buffered):
    logger, handler, stream = buffered
    threads = [
        threading.Thread(target=lambda n=n: [logger.info(f"t{n}-{i}") for i in range(300)])
        for n in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.close()
    lines = stream.getvalue().splitlines()
    assert sorted(lines) == sorted(f"t{n}-{i}" for n in range(16) for i in range(300))
    # Each thread's lines keep their order.
    assert [line for line in lines if line.startswith("t3-")] == [f"t3-{i}" for i in range(300)]


def test_a_line_is_written_without_waiting_for_more(buffered):
    logger, _, stream = buffered
    logger.info("alone")
    deadline = time.monotonic() + 5
    while "alone" not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.getvalue() == "alone\n"


def test_the_handler_filters_still_apply(buffered):
    logger, handler, stream = buffered
    handler.addFilter(lambda record: "secret" not in record.getMessage())
    logger.info("kept")
    logger.info("a secret line")
    handler.flush()
    assert stream.getvalue() == "kept\n"


class FlakyStream(io.StringIO):
    """A stream whose first write fails, as a full disk or a closed pipe would."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def write(self, text: str) -> int:
        if not self.failed:
            self.failed = True
            raise OSError("no space left on device")
        return super().write(text)


def test_a_failed_write_is_reported_and_later_lines_still_written(buffered, capsys):
    logger, handler, _ = buffered
    stream = handler.target.stream = FlakyStream()
    logger.info("lost")
    handler.flush()
    logger.info("after")
    deadline = time.monotonic() + 5
    while "after" not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.getvalue() == "after\n"
    assert "no space left on device" in capsys.readouterr().err
