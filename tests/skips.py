"""What a test needs from outside the repository: a system program, the full dataset. Missing,
the test is skipped, or fails where FMNIST_REQUIRE_SYSTEM_TOOLS=1 (CI)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REQUIRE_SYSTEM_TOOLS = os.environ.get("FMNIST_REQUIRE_SYSTEM_TOOLS") == "1"


def require_program(name: str) -> str:
    """Return the path of a system program, or skip (fail in CI) when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install it; .ci/run does)"
        if REQUIRE_SYSTEM_TOOLS:
            pytest.fail(message)
        pytest.skip(message)
    return path


def dataset_dir() -> Path:
    """Return FASHION_MNIST_DIR, or skip the test when it is not set."""
    value = os.environ.get("FASHION_MNIST_DIR")
    if not value:
        pytest.skip("FASHION_MNIST_DIR is not set; the full dataset is needed")
    return Path(value)
