"""One settings object, read from FMNIST_* environment variables."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.runtime import RUNTIMES

ENV_PREFIX = "FMNIST_"


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
    """Seconds a /predict request may take, upload included: 408 if the body is still
    arriving then, 503 deadline_exceeded if it is still being processed (see docs/security.md)."""
    runtime: str = "litert"
    """What runs the SavedModel: "litert" (converted at load, run by LiteRT's interpreter) or
    "savedmodel" (TensorFlow's signature); service/runtime.py, measured in docs/benchmarks.md."""
    tf_threads: int = 1
    """Threads of one model call (LiteRT's, or TensorFlow's intra- and inter-op pools) per
    worker: with 2 workers on 2 cores, 1 each keeps them from competing (docs/benchmarks.md)."""
    warmup: bool = True
    """Run one inference after loading, so the first request pays no graph tracing."""
    batching: bool = True
    """Group concurrent requests of a worker into one model call (service/batching.py)."""
    batch_max_size: int = 64
    """Most images in one batched model call."""
    batch_max_wait_ms: float = 2.0
    """Longest a request waits for batch-mates, only while the worker is under load."""
    batch_queue_size: int = 256
    """Requests a worker queues for the model before answering 503 overloaded."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from defaults, then the environment, then explicit overrides."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + spec.name.upper())
            if raw is not None:
                values[spec.name] = _parse(raw, spec.default, spec.name)
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        return cls(**{**values, **overrides})

    def __post_init__(self) -> None:
        """Refuse a runtime that does not exist, naming its variable."""
        if self.runtime not in RUNTIMES:
            raise ValueError(
                f"{ENV_PREFIX}RUNTIME={self.runtime!r}: choose one of {', '.join(RUNTIMES)}"
            )


def _parse(raw: str, default: Any, name: str) -> Any:
    """Convert an environment string to the type of the setting's default."""
    try:
        if isinstance(default, bool):
            if raw.lower() not in {"1", "0", "true", "false", "yes", "no"}:
                raise ValueError(raw)
            return raw.lower() in {"1", "true", "yes"}
        return type(default)(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid value") from None
