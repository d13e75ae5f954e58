"""The engine core's process: forked from the preloaded forkserver, it runs with the environment its
caller had when it started it, as a spawned process does."""

from __future__ import annotations

import os

from services.rollout import engine_child


def _report_environment(queue, names):
    queue.put({name: os.environ.get(name) for name in names})


def test_a_forked_engine_process_gets_its_callers_environment_at_start(monkeypatch):
    names = ["OMP_NUM_THREADS", "PRFT_TEST_SET_LATER", "PRFT_TEST_GONE"]
    monkeypatch.setenv("PRFT_TEST_GONE", "1")
    monkeypatch.delenv("PRFT_TEST_SET_LATER", raising=False)
    context = engine_child._PreloadedForkServer()
    queue = context.Queue()
    # The forkserver starts (with this environment) before the caller changes its own.
    warm = context.Process(target=_report_environment, args=(queue, []))
    warm.start()
    warm.join(60)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("PRFT_TEST_GONE")
    monkeypatch.setenv("PRFT_TEST_SET_LATER", "yes")
    process = context.Process(target=_report_environment, args=(queue, names))
    process.start()
    process.join(60)
    queue.get(timeout=10)  # the warm-up's report
    assert process.exitcode == 0
    assert queue.get(timeout=10) == {"OMP_NUM_THREADS": "3", "PRFT_TEST_SET_LATER": "yes", "PRFT_TEST_GONE": None}
