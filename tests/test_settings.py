"""Settings: each one's accepted range, checked once at start, by the app and by gunicorn."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from harness import ROOT
from harness.server import free_port
from service.settings import Settings

# (variable, a value out of range, words of the one-line error): every numeric setting's
# bounds, NaN and infinity for every float, zero where zero means nothing.
REFUSED = [
    ("FMNIST_REQUEST_TIMEOUT", "nan", "greater than 0"),
    ("FMNIST_REQUEST_TIMEOUT", "0", "greater than 0"),
    ("FMNIST_REQUEST_TIMEOUT", "-1", "greater than 0"),
    ("FMNIST_REQUEST_TIMEOUT", "inf", "greater than 0"),
    ("FMNIST_MODEL_POLL_SECONDS", "-0.5", "from 0 to 86400"),
    ("FMNIST_MODEL_POLL_SECONDS", "nan", "from 0 to 86400"),
    ("FMNIST_MAX_BODY_BYTES", "0", "at least 1"),
    ("FMNIST_GRPC_PORT", "65536", "from 0 to 65535"),
    ("FMNIST_MAX_PIXELS", "0", "at least 1"),
    ("FMNIST_MAX_BATCH", "0", "at least 1"),
    ("FMNIST_MAX_BATCH", "-3", "at least 1"),
    ("FMNIST_MAX_ASPECT_RATIO", "0.5", "at least 1"),
    ("FMNIST_MAX_ASPECT_RATIO", "nan", "at least 1"),
    ("FMNIST_TF_THREADS", "0", "from 1 to 1024"),
    ("FMNIST_BATCH_MAX_SIZE", "0", "at least 1"),
    ("FMNIST_BATCH_MAX_WAIT_MS", "-1", "from 0 to 1000"),
    ("FMNIST_BATCH_MAX_WAIT_MS", "nan", "from 0 to 1000"),
    ("FMNIST_BATCH_QUEUE_SIZE", "-1", "at least 0"),
    ("FMNIST_BATCH_QUEUE_SIZE", "17", "from 0 to FMNIST_THREADS (16)"),
    ("FMNIST_WORKERS", "0", "from 1 to 1024"),
    ("FMNIST_THREADS", "0", "from 1 to 4096"),
    ("FMNIST_TIMEOUT", "-1", "at least 0"),
    ("FMNIST_GRACEFUL_TIMEOUT", "-1", "at least 0"),
    ("FMNIST_METRICS_PORT", "0", "from 1 to 65535"),
    ("FMNIST_METRICS_PORT", "70000", "from 1 to 65535"),
    ("PORT", "0", "from 1 to 65535"),
    ("FMNIST_RUNTIME", "onnx", "litert-int8, litert, savedmodel"),
    ("FMNIST_LOG_LEVEL", "loud", "debug, info, warning, error, critical"),
    ("FMNIST_MODEL_VERSIONS", "1;2", '"latest", "all"'),
    ("FMNIST_MODEL_NAME", "a/b", 'without "/"'),
    ("HOST", " ", "an address"),
    ("FMNIST_MAX_BATCH", "1.5", "not a valid value (int)"),
    ("FMNIST_WARMUP", "maybe", "not a valid value (bool)"),
]

# (variable, the edge of its range that is accepted, the field and its value)
ACCEPTED = [
    ("FMNIST_REQUEST_TIMEOUT", "0.001", "request_timeout", 0.001),
    ("FMNIST_MODEL_POLL_SECONDS", "0", "model_poll_seconds", 0.0),
    ("FMNIST_MAX_BATCH", "1", "max_batch", 1),
    ("FMNIST_MAX_ASPECT_RATIO", "1", "max_aspect_ratio", 1.0),
    ("FMNIST_BATCH_MAX_WAIT_MS", "0", "batch_max_wait_ms", 0.0),
    ("FMNIST_BATCH_QUEUE_SIZE", "16", "batch_queue_size", 16),
    ("FMNIST_TIMEOUT", "0", "timeout", 0),
    ("FMNIST_LOG_LEVEL", "WARNING", "log_level", "WARNING"),
    ("PORT", "65535", "port", 65535),
    ("FMNIST_GRPC_PORT", "0", "grpc_port", 0),
    ("HOST", "127.0.0.1", "host", "127.0.0.1"),
]


@pytest.mark.parametrize(("variable", "value", "words"), REFUSED)
def test_a_value_out_of_range_is_refused_naming_the_variable_and_its_range(variable, value, words):
    with pytest.raises(ValueError) as refused:
        Settings.from_env({variable: value})
    message = str(refused.value)
    assert message.startswith(f"{variable}={value!r}") and words in message
    assert "\n" not in message


@pytest.mark.parametrize(("variable", "value", "field", "expected"), ACCEPTED)
def test_the_edges_of_each_range_are_accepted(variable, value, field, expected):
    assert getattr(Settings.from_env({variable: value}), field) == expected


def test_the_queue_bound_follows_the_threads_whatever_their_number():
    # 0: one per thread, the gRPC server's included
    assert Settings.from_env({"FMNIST_THREADS": "5"}).queue_size == 10
    assert Settings.from_env({"FMNIST_THREADS": "5", "FMNIST_GRPC_PORT": "0"}).queue_size == 5
    small = Settings.from_env({"FMNIST_THREADS": "5", "FMNIST_BATCH_QUEUE_SIZE": "2"})
    assert small.queue_size == 2
    with pytest.raises(ValueError, match="FMNIST_BATCH_QUEUE_SIZE='6'.*FMNIST_THREADS \\(5\\)"):
        Settings.from_env({"FMNIST_THREADS": "5", "FMNIST_BATCH_QUEUE_SIZE": "6"})


def test_the_app_refuses_a_bad_setting_at_start(tmp_path):
    from service import create_app

    with pytest.raises(ValueError, match="FMNIST_MAX_BATCH='0'"):
        create_app({"model_dir": tmp_path, "max_batch": 0})


@pytest.mark.integration  # runs a fresh Python
def test_gunicorn_conf_reads_the_settings_without_loading_the_app():
    probe = (
        "import runpy, sys; conf = runpy.run_path('service/gunicorn.conf.py'); "
        "print(conf['threads'], conf['workers'], conf['bind']); "
        "print([m for m in ('flask', 'service.observability.metrics', 'numpy', 'tensorflow') "
        "if m in sys.modules])"
    )
    env = {"FMNIST_THREADS": "7", "FMNIST_WORKERS": "3", "PORT": "8123"}
    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["7 3 ['0.0.0.0:8123']", "[]"]


@pytest.mark.integration  # runs bin/serve
@pytest.mark.parametrize(
    ("variable", "value"), [("FMNIST_REQUEST_TIMEOUT", "nan"), ("FMNIST_MAX_BATCH", "0")]
)
def test_bin_serve_stops_with_one_line_and_a_failure_status(variable, value, tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHON": str(ROOT / ".venv" / "bin" / "python"),
        "PORT": str(free_port()),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        variable: value,
    }
    started = time.monotonic()
    run = subprocess.run(
        [str(ROOT / "bin" / "serve")], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0
    (line,) = run.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith(f"fashion-mnist-serving: {variable}={value!r}: must be"), line
    assert time.monotonic() - started < 30


def test_a_model_dir_given_as_text_is_served(tiny_model_dir):
    from service import create_app

    app = create_app({"model_dir": str(tiny_model_dir)})  # as scripts and benchmarks pass it
    versions = app.extensions["versions"]
    assert versions.wait_ready(60), versions.error
    versions.stop()
