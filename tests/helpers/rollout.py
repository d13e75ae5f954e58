"""A real rollout service for tests: ``python -m services.rollout`` (vLLM on CPU, HTTP only), with the
bearer token that weight pushes must carry and the request limits the tests probe."""

from __future__ import annotations

import sys
from pathlib import Path

from launcher.processes import free_port, start_process, wait_http_ready

TOKEN = "rollout-test-token"
MAX_N = 16
MAX_TOKENS = 256


def start_rollout(tmp: Path, model: Path, extra_env: dict[str, str] | None = None, name: str = "rollout"):
    port = free_port()
    env = {
        "PRFT_AUTH__TOKEN": TOKEN,
        "PRFT_ROLLOUT__MAX_N": str(MAX_N),
        "PRFT_ROLLOUT__MAX_TOKENS": str(MAX_TOKENS),
        "VLLM_RPC_BASE_PATH": str(tmp / "rpc"),
        "VLLM_CACHE_ROOT": str(tmp / "vllm-cache"),
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    argv = [sys.executable, "-m", "services.rollout", "--model", str(model), "--port", str(port)]
    process = start_process(name, argv + ["--no-worker"], tmp / f"{name}.log", env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ready(process, f"{url}/readyz", timeout=240)
    except BaseException:
        process.kill()
        raise
    return process, url
