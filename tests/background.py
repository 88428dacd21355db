"""A program the tests start in the background, with its output kept in a log file."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import requests


class BackgroundProcess:
    """Start a command in its own session, its output in `log_path`; read and stop it."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def launch(self, command: list[str], **popen: object) -> None:
        """Start `command`, stdout and stderr both into the log."""
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, **popen
        )

    def logs(self) -> str:
        """The program's output so far (its last 5,000 characters)."""
        return self.log_path.read_text(errors="replace")[-5000:]

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
        self.log.close()
