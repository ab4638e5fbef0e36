"""Shared fixtures: real assets, system tools, and the CI rule for missing tools."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from streamer import assets

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DATA = Path(__file__).parent / "data"


def require_tool(name: str) -> str:
    """Path of a system tool; skip without it on a laptop, fail under CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: .ci/run must install it)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def bikes() -> Path:
    return assets.sample_path("sample:bikes")


@pytest.fixture(scope="session")
def model_file() -> Path:
    return assets.model_path("yolo11n")
