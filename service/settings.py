"""One settings object, read from FMNIST_* environment variables and checked once at start.

gunicorn.conf.py reads it too, in the master: this module imports nothing of Flask,
prometheus_client, NumPy or TensorFlow, so the master loads none of them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

ENV_PREFIX = "FMNIST_"
# Platforms set these two without our prefix (PORT is the convention of most of them).
UNPREFIXED = {"port": "PORT", "host": "HOST"}
RUNTIMES = ("litert-int8", "litert", "savedmodel")
DEFAULT_RUNTIME = "litert-int8"  # the fastest measured at the accuracy floor (docs/runtimes.md)
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# "latest", "all" or a comma list of integers: TensorFlow Serving's model version policy.
MODEL_VERSIONS = re.compile(r"\s*(latest|all|[0-9]+(\s*,\s*[0-9]+)*)\s*", re.IGNORECASE)
MODEL_NAME = re.compile(r"[^/:\s]+")  # a route segment; TF Serving's names hold no ":"


class Bounds(NamedTuple):
    """The accepted range of a numeric setting; `above` makes the low end exclusive."""

    low: float
    high: float = math.inf
    above: bool = False

    def holds(self, value: float) -> bool:
        """Whether `value` is in range; NaN and infinities never are."""
        low_ok = value > self.low if self.above else value >= self.low
        return low_ok and value <= self.high and math.isfinite(value)

    def describe(self, integer: bool) -> str:
        """The range in words, for the start-up error."""
        kind = "an integer" if integer else "a number"
        if self.above:
            return f"{kind} greater than {self.low:g}" + (
                f" and at most {self.high:g}" if self.high < math.inf else ""
            )
        if self.high < math.inf:
            return f"{kind} from {self.low:g} to {self.high:g}"
        return f"{kind} of at least {self.low:g}"


PORT_RANGE = Bounds(1, 65535)


@dataclass(frozen=True)
class Settings:
    """Service settings; each field is read from FMNIST_<FIELD NAME IN CAPITALS>."""

    model_dir: Path = Path("models/fashion_mnist")
    """Folder holding one integer-named SavedModel folder per model version."""
    model_versions: str = "latest"
    """Versions served: "latest" (the newest that loads), "all", or a comma list such as "1,3"."""
    model_poll_seconds: float = 10.0
    """Seconds between rescans of model_dir for new or removed versions (0: scan only at start)."""
    model_name: str = "fashion_mnist"
    """Name the model is served under, in responses and routes."""
    max_body_bytes: int = 10 * 1024 * 1024
    """Largest request body accepted (413 above it)."""
    max_pixels: int = 25_000_000
    """Largest image, in pixels, decoded (413 above it: decompression-bomb guard)."""
    max_batch: int = 64
    """Most images in one request (413 above it)."""
    max_aspect_ratio: float = 20.0
    """Longest over shortest side above which an image is refused (422)."""
    request_timeout: float = 30.0
    """Seconds a request that runs the model (or /preprocess) may take, upload and queueing
    included: 408 if the body is still arriving then, 503 deadline_exceeded if it is still
    being processed or waiting for the model (see docs/security.md)."""
    runtime: str = DEFAULT_RUNTIME
    """What runs the SavedModel: "litert-int8" (its exported LiteRT flatbuffer with 8-bit
    weights, run by LiteRT's interpreter), "litert" (the float flatbuffer: the SavedModel's
    answers within 1e-5) or "savedmodel" (TensorFlow's signature; needs TensorFlow, which the
    image lacks); service/inference/runtime.py, measured in docs/runtimes.md."""
    tf_threads: int = 1
    """Threads of one model call (LiteRT's, or TensorFlow's intra- and inter-op pools) per
    worker: with 2 workers on 2 cores, more measured no faster (docs/benchmarks.md, "Workers
    and threads")."""
    warmup: bool = True
    """Run one inference after loading, so the first request pays none of the runtime's
    start-up (the interpreter's first tensor allocation under LiteRT, graph tracing under
    savedmodel)."""
    batching: bool = True
    """Group concurrent requests of a worker into one model call (service/inference/batching.py)."""
    batch_max_size: int = 64
    """Most images in one batched model call."""
    batch_max_wait_ms: float = 2.0
    """Longest a request waits for batch-mates, only while the worker is under load and holds
    requests not yet queued."""
    batch_queue_size: int = 0
    """Requests of a worker that may wait for the model before the next one answers 503
    overloaded: 1 to threads. 0 (the default) means threads, twice with gRPC on (its server has
    as many): every request the worker holds may wait, and request_timeout bounds how long (503
    deadline_exceeded)."""
    workers: int = 2
    """gunicorn worker processes (service/gunicorn.conf.py says why this many)."""
    threads: int = 16
    """Threads per gunicorn worker: the requests one worker holds at once."""
    reuse_port: bool = True
    """Each worker listens on a socket of its own (SO_REUSEPORT, Linux only), so that the kernel
    spreads new connections over the workers (service/gunicorn.conf.py says why)."""
    timeout: int = 60
    """Seconds before gunicorn restarts a worker whose main loop is stuck (0: never)."""
    graceful_timeout: int = 30
    """Seconds in-flight requests get to finish on shutdown."""
    log_level: str = "info"
    """gunicorn and service log level."""
    metrics_port: int = 9100
    """Port of the Prometheus /metrics endpoint, served by the gunicorn master."""
    metrics_host: str = "0.0.0.0"
    """Address of the metrics endpoint."""
    port: int = 8000
    """Public API port (read from PORT)."""
    host: str = "0.0.0.0"
    """Address gunicorn binds (read from HOST), and the gRPC server too."""
    grpc_port: int = 8001
    """Port of each worker's gRPC server (the Open Inference Protocol's and TensorFlow Serving's
    services, and grpc.health.v1), shared by the workers through SO_REUSEPORT (service/grpc/);
    8001 as KServe and Triton; 0 switches gRPC off."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from defaults, then the environment, then explicit overrides."""
        variables = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            raw = variables.get(env_name(spec.name))
            if raw is not None:
                values[spec.name] = _parse(raw, spec.default, spec.name)
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        return cls(**{**values, **overrides})

    def __post_init__(self) -> None:
        """Refuse a value out of range, naming its variable and what it accepts."""
        self._check_numbers()
        self._check_words()

    def _check_numbers(self) -> None:
        """Every numeric setting within its bounds, and a queue a worker can fill."""
        for name, bounds in BOUNDS.items():
            value = getattr(self, name)
            if not bounds.holds(value):
                integer = isinstance(value, int)
                refuse(name, value, f"must be {bounds.describe(integer)}")
        if self.batch_queue_size > self.threads:
            # A worker holds one request per thread: a longer queue could never fill.
            refuse(
                "batch_queue_size",
                self.batch_queue_size,
                f"must be from 0 to {env_name('threads')} ({self.threads}); "
                "a worker never holds more requests than threads",
            )

    def _check_words(self) -> None:
        """Every text setting one of its choices, or of its form."""
        if self.runtime not in RUNTIMES:
            refuse("runtime", self.runtime, f"must be one of {', '.join(RUNTIMES)}")
        if self.log_level.lower() not in LOG_LEVELS:  # gunicorn and logging take any case
            refuse("log_level", self.log_level, f"must be one of {', '.join(LOG_LEVELS)}")
        if not MODEL_VERSIONS.fullmatch(self.model_versions):
            refuse(
                "model_versions",
                self.model_versions,
                'must be "latest", "all" or a comma list such as "1,3"',
            )
        if not MODEL_NAME.fullmatch(self.model_name):
            refuse("model_name", self.model_name, 'must be a name without "/", ":" or spaces')
        for name in ("host", "metrics_host"):
            if not getattr(self, name).strip():
                refuse(name, getattr(self, name), "must be an address such as 0.0.0.0")

    @property
    def queue_size(self) -> int:
        """Requests a worker's batching queue holds: the setting, or one per thread (the
        gRPC server's threads included)."""
        return self.batch_queue_size or self.threads * (2 if self.grpc_port else 1)


BOUNDS: dict[str, Bounds] = {
    "model_poll_seconds": Bounds(0, 86400),
    "max_body_bytes": Bounds(1),
    "max_pixels": Bounds(1),
    "max_batch": Bounds(1),
    "max_aspect_ratio": Bounds(1),
    "request_timeout": Bounds(0, 86400, above=True),
    "tf_threads": Bounds(1, 1024),
    "batch_max_size": Bounds(1),
    "batch_max_wait_ms": Bounds(0, 1000),
    "batch_queue_size": Bounds(0),
    "workers": Bounds(1, 1024),
    "threads": Bounds(1, 4096),
    "timeout": Bounds(0),
    "graceful_timeout": Bounds(0),
    "metrics_port": PORT_RANGE,
    "port": PORT_RANGE,
    "grpc_port": Bounds(0, 65535),
}


def env_name(name: str) -> str:
    """The environment variable a setting is read from."""
    return UNPREFIXED.get(name, ENV_PREFIX + name.upper())


def refuse(name: str, value: Any, accepted: str) -> NoReturn:
    """Stop start-up with one line: the variable, its value, and what it accepts."""
    shown = f"{value:g}" if isinstance(value, float) else str(value)  # 0.0 as "0", as typed
    raise ValueError(f"{env_name(name)}={shown!r}: {accepted}")


def _parse(raw: str, default: Any, name: str) -> Any:
    """Convert an environment string to the type of the setting's default."""
    try:
        if isinstance(default, bool):
            if raw.lower() not in {"1", "0", "true", "false", "yes", "no"}:
                raise ValueError(raw)
            return raw.lower() in {"1", "true", "yes"}
        return type(default)(raw)
    except ValueError:
        kind = type(default).__name__
        raise ValueError(f"{env_name(name)}={raw!r} is not a valid value ({kind})") from None
