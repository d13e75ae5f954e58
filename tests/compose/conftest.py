"""What the compose tests share: the images, built (or found cached) once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.helpers.compose_stack import run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def images() -> None:
    # This interpreter's CLI builds the default model on the host (or finds it in the cache the
    # other tests fill), for the image to copy instead of training its own.
    env = {"PREFIX_RFT": f"{sys.executable} -m launcher.cli", **os.environ}
    result = run(["make", "-s", "images"], cwd=REPO, timeout=3600, env=env)
    assert result.returncode == 0, f"make images failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
