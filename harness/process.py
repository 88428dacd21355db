"""A program started in the background, with its whole output kept in a log file."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import requests

# A Python traceback wherever "Traceback" appears (mid-line too, as in a JSON-escaped one): that
# line, every indented line after it (frames and source), and the exception line ending it.
TRACEBACK = re.compile(r"Traceback[^\n]*(?:\n[ \t][^\n]*)*(?:\n(?![^\n]*Traceback)[^\n]*)?")
TAIL = 5000  # characters of the log an error message quotes


class BackgroundProcess:
    """Start a command in its own session, its output in `log_path`; read and stop it."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.log = None

    def launch(self, command: list[str], **popen: object) -> None:
        """Start `command`, stdout and stderr both into the log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, **popen
        )

    def log_text(self) -> str:
        """The program's whole output so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def logs(self) -> str:
        """The end of the program's output (its last TAIL characters), for error messages."""
        return self.log_text()[-TAIL:]

    def tracebacks(self) -> list[str]:
        """Every Python traceback in the whole log, oldest first (`[]` when it has none)."""
        return TRACEBACK.findall(self.log_text())

    def wait_until_ok(self, url: str, timeout: float) -> None:
        """Poll `url` until it answers 200, or fail with the program's log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.logs()
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{url} not ready in {timeout}s:\n{self.logs()}")

    def stop(self) -> None:
        """Stop the program gracefully, then for good."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log is not None:
            self.log.close()
