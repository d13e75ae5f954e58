"""A real rollout service for tests: ``python -m services.rollout`` (vLLM on CPU, HTTP only), with the
bearer token that weight pushes must carry and the request limits the tests probe."""

from __future__ import annotations

import sys
from pathlib import Path

from launcher.processes import ManagedProcess, free_port, start_process, wait_http_ready

TOKEN = "rollout-test-token"
MAX_N = 16
MAX_TOKENS = 256


def rollout_env(tmp: Path, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "PRFT_AUTH__TOKEN": TOKEN,
        "PRFT_ROLLOUT__MAX_N": str(MAX_N),
        "PRFT_ROLLOUT__MAX_TOKENS": str(MAX_TOKENS),
        "VLLM_RPC_BASE_PATH": str(tmp / "rpc"),
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }


def rollout_args(model: Path, port: int) -> list[str]:
    """The command-line arguments of ``python -m services.rollout`` for an HTTP-only service."""
    return ["--model", str(model), "--port", str(port), "--no-worker"]


def start_rollout(
    tmp: Path, model: Path, extra_env: dict[str, str] | None = None, name: str = "rollout"
) -> tuple[ManagedProcess, str]:
    port = free_port()
    argv = [sys.executable, "-m", "services.rollout", *rollout_args(model, port)]
    process = start_process(name, argv, tmp / f"{name}.log", env=rollout_env(tmp, extra_env))
    url = f"http://127.0.0.1:{port}"
    try:
        # Generous: on a machine shared with other engines and trainers, start-up has taken over 4 minutes.
        wait_http_ready(process, f"{url}/readyz", timeout=600)
    except BaseException:
        process.kill()
        raise
    return process, url
