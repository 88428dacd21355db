"""The real server, as tests, benchmarks and the soak run start it: gunicorn with the service's
settings (service/gunicorn.conf.py), through bin/serve as `make serve` runs it, or serving
another app (a benchmark's) under the same settings.

It is ready when /readyz answers 200 and every worker accepts connections: /readyz reaches one
worker only, and a worker still loading its model accepts none (procfs.polls_listener).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import requests
from prometheus_client.mmap_dict import MmapedDict

from harness import ROOT, procfs
from harness.process import BackgroundProcess

DEFAULT_WORKERS = 2  # service/settings.py's FMNIST_WORKERS default


def free_port() -> int:
    """Ask the kernel for a free TCP port on localhost."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer(BackgroundProcess):
    """A gunicorn process on free local ports, its metric files beside its log.

    `app` is a gunicorn app spec (`"benchmarks.floor_app:create_app()"`) served with the
    service's gunicorn.conf.py instead of bin/serve's app; `root` the checkout it runs from.
    """

    def __init__(
        self,
        model_dir: Path | None,
        log_path: Path,
        *,
        app: str | None = None,
        root: Path = ROOT,
        remove_folder: bool = False,
        **env: str,
    ) -> None:
        super().__init__(log_path)
        self.app = app
        self.root = root
        self.remove_folder = remove_folder
        self.port = free_port()
        self.metrics_port = free_port()
        self.grpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"  # a gRPC client's address
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.metrics_dir = log_path.parent / f"metrics-{self.port}"
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "FMNIST_METRICS_PORT": str(self.metrics_port),
            "FMNIST_METRICS_HOST": "127.0.0.1",
            "FMNIST_GRPC_PORT": str(self.grpc_port),
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            "PYTHON": sys.executable,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            **({"FMNIST_MODEL_DIR": str(model_dir)} if model_dir is not None else {}),
            **env,
        }
        self.workers = int(self.env.get("FMNIST_WORKERS") or DEFAULT_WORKERS)
        self.cold_start = 0.0  # seconds from launch to the first /readyz 200

    def start(self, timeout: float = 120) -> LiveServer:
        """Start gunicorn and wait until it is ready (every worker accepting)."""
        if self.app is None:
            command = [str(self.root / "bin" / "serve")]
        else:
            self.metrics_dir.mkdir(parents=True, exist_ok=True)
            config = str(self.root / "service" / "gunicorn.conf.py")
            command = [sys.executable, "-m", "gunicorn", "-c", config, self.app]
        self.launch(command, env=self.env, cwd=self.root)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()  # a server that never got ready is not left running
            raise
        return self

    def wait_ready(self, timeout: float = 120) -> None:
        """Poll until /readyz answers 200 and every worker accepts connections, or fail with
        the log."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.logs()
            if not self.cold_start and self.answers_ready():
                self.cold_start = time.monotonic() - started
            if self.cold_start and self.every_worker_accepts():
                return
            time.sleep(0.1)
        raise AssertionError(f"server not ready in {timeout}s:\n{self.logs()}")

    def answers_ready(self) -> bool:
        """Whether /readyz answers 200 now."""
        try:
            return requests.get(self.url + "/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def every_worker_accepts(self) -> bool:
        """Whether all `workers` workers run and each polls its listening socket."""
        pids = self.worker_pids()
        return len(pids) == self.workers and all(
            procfs.polls_listener(pid, self.port) for pid in pids
        )

    def worker_pids(self) -> list[int]:
        """The process ids of gunicorn's workers (the master's children), sorted."""
        assert self.process is not None
        return procfs.children(self.process.pid)

    def worker_rss_mib(self) -> list[float]:
        """Resident memory of each worker process, in MiB."""
        return [round(procfs.rss_bytes(pid) / 2**20, 1) for pid in self.worker_pids()]

    def counted_per_worker(self, sample: str, **labels: str) -> list[float]:
        """Each worker's own count of `sample` in the series with `labels`, read from its file
        in the multiprocess directory (a scrape adds the workers up), in worker_pids' order."""
        counts = []
        for pid in self.worker_pids():
            path = self.metrics_dir / f"counter_{pid}.db"
            values = MmapedDict.read_all_values_from_file(str(path)) if path.exists() else []
            counted = 0.0
            for key, value, *_ in values:
                _, name, series, _ = json.loads(key)
                if name == sample and labels.items() <= series.items():
                    counted += value
            counts.append(counted)
        return counts

    def connections_per_worker(self) -> list[int]:
        """How many connected TCP sockets each worker holds now, fewest first."""
        return sorted(procfs.client_sockets(pid) for pid in self.worker_pids())

    def stop(self) -> None:
        """Stop gunicorn gracefully (then for good); remove its folder if it owns one."""
        super().stop()
        if self.remove_folder:
            shutil.rmtree(self.log_path.parent, ignore_errors=True)


def scratch_server(env: dict[str, str], app: str | None = None, root: Path = ROOT) -> LiveServer:
    """An unstarted server in a new temporary folder (its log, metric files and TMPDIR), which
    stop() removes. No LiteRT conversion from an earlier start is found in its TMPDIR, so its
    cold start includes converting the model."""
    folder = Path(tempfile.mkdtemp(prefix="fmnist-server-"))
    (folder / "tmp").mkdir()
    return LiveServer(
        None,
        folder / "gunicorn.log",
        app=app,
        root=root,
        remove_folder=True,
        **{"TMPDIR": str(folder / "tmp"), **env},
    )
