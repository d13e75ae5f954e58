"""Ready means ready: while any part of the engine is still loading, /readyz says 503 and requests get a
503 that says so, never a 500 from a part that is not there yet. And a worker leaves fast: once idle,
SIGTERM ends it within 2 s (issue 20), out of the worker registry, with no engine process left.

A real tokenizer is slow to load (SmolLM2's took long enough for the first /v1/generate after /readyz to
fail); the built-in one loads in milliseconds, so the service here runs with its tokenizer load held
until the test lets it go: the vLLM engine is up, the tokenizer is not.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import httpx
import psutil
import pytest

from launcher.processes import free_port, start_process, wait_http_ready
from shared.bus import Keys, WorkerRegistry
from tests.helpers.rollout import rollout_env
from tests.helpers.workers import started_processes, still_running, wait_for

pytestmark = pytest.mark.integration

# python -c: the service's entry point, with shared.modeling.load_tokenizer waiting for a release file.
# The first load is the entry point's check of the model folder, before the server listens: only the
# engine's own load (the second) is held.
HELD_TOKENIZER = """
import pathlib, sys, time
import shared.modeling as modeling
loading, release = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
load = modeling.load_tokenizer
calls = []
def held(path):
    calls.append(path)
    if len(calls) == 1:
        return load(path)
    loading.touch()
    while not release.exists():
        time.sleep(0.05)
    return load(path)
modeling.load_tokenizer = held
from services.rollout.entry import main
main(sys.argv[3:])
"""


def test_requests_before_the_tokenizer_is_loaded_get_503_ready_means_they_work_and_idle_it_stops_fast(
    tmp_path, default_init_dir, redis_url, redis_client, namespace
):
    loading, release = tmp_path / "loading", tmp_path / "release"
    port = free_port()
    service_args = ["--model", str(default_init_dir), "--port", str(port)]  # a worker: it consumes tasks
    argv = [sys.executable, "-c", HELD_TOKENIZER, str(loading), str(release), *service_args]
    worker_env = {"PRFT_REDIS__URL": redis_url, "PRFT_REDIS__NAMESPACE": namespace, "PRFT_ROLLOUT__WORKER_ID": "w"}
    process = start_process("rollout", argv, tmp_path / "rollout.log", env=rollout_env(tmp_path, worker_env))
    url = f"http://127.0.0.1:{port}"
    text_prompt = {"prompt": "What is 1 + 1?", "sampling": {"max_tokens": 2}}
    completion = {"prompt": "1 + 1 =", "max_tokens": 2}
    engine = []
    try:
        deadline = time.monotonic() + 600
        while not loading.exists():
            process.check_alive()
            assert time.monotonic() < deadline, f"the engine never reached its tokenizer:\n{process.log_tail()}"
            time.sleep(0.1)
        with httpx.Client(base_url=url, timeout=60) as client:
            wait_http_ready(process, f"{url}/healthz", timeout=60)  # alive while it loads
            ready = client.get("/readyz")
            assert ready.status_code == 503, ready.text
            refused = client.post("/v1/generate", json=text_prompt)
            assert refused.status_code == 503 and "loading" in refused.json()["detail"], refused.text
            openai = client.post("/v1/completions", json=completion)
            assert openai.status_code == 503, openai.text
            assert openai.json()["error"]["type"] == "ServiceUnavailableError"

            release.touch()
            wait_http_ready(process, f"{url}/readyz", timeout=120)
            # The first requests /readyz lets through are served.
            served = client.post("/v1/generate", json=text_prompt)
            assert served.status_code == 200, served.text
            assert client.post("/v1/completions", json=completion).status_code == 200

        # Registered, with no task in the stream: SIGTERM (to the worker's process only, as a container
        # runtime sends it) ends it within 2 s, out of the registry, its engine core ended with it.
        registry = WorkerRegistry(redis_client, Keys(namespace))
        wait_for(lambda: registry.get("w") is not None, 60, "the worker to register", (process,))
        engine = started_processes(process)
        # The engine core is in a process group of its own: a SIGTERM to the worker's group (a launcher,
        # Ctrl-C) reaches the worker, which stops the engine in its own time (after a swap under way).
        engine_core = next(p for p in engine if "EngineCor" in p.name())
        assert os.getpgid(engine_core.pid) != os.getpgid(process.popen.pid)
        # Neither it nor its engine core imported scikit-learn or SciPy, which transformers imports
        # wherever they are installed (lm-eval brings both here): seconds of every start otherwise.
        for started in [psutil.Process(process.popen.pid), *engine]:
            loaded = sorted({m.path for m in started.memory_maps() if "/scipy" in m.path or "/sklearn" in m.path})
            assert not loaded, f"{started.name()} ({started.pid}) loaded {loaded[:3]}"
        signalled = time.monotonic()
        process.popen.send_signal(signal.SIGTERM)
        assert process.popen.wait(60) == 0, process.log_tail()
        stopped_s = time.monotonic() - signalled
        assert stopped_s < 2.0, f"an idle worker took {stopped_s:.1f} s to stop:\n{process.log_tail()}"
        assert registry.get("w") is None
        # The engine core is SIGKILLed with its parent; multiprocessing's resource tracker, also a
        # child, exits on its own once it reads the end of its pipe (a few milliseconds later).
        wait_for(lambda: not still_running(engine), 10, "the worker's child processes to end")
    finally:
        process.stop()
        for leftover in still_running(engine):
            leftover.kill()
