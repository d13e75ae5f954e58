"""Rollout workers in tests: one started on its own (a real vLLM engine), and probes of a worker as
the learner sees it: the weights version it serves (and a wait for one), its count of weight swaps,
its entry in the job's worker registry, the groups it appended, the processes it started and a wait on
any condition."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import psutil

from launcher.processes import ManagedProcess, free_port, start_process
from shared.api.rollout import RolloutClient, WeightsStatus
from shared.bus import Keys, LedgerQueries, WorkerRegistry
from shared.messages import TrajectoryGroup, WorkerInfo


def served_version(url: str) -> int:
    async def version() -> int:
        async with RolloutClient(url, timeout_s=10) as worker:
            return await worker.version()

    return asyncio.run(version())


def wait_served(url: str, version: int, timeout: float = 300.0) -> WeightsStatus:
    """Wait until the worker serves ``version`` or newer (a push only queues it: the worker fetches and
    swaps in the background); WeightsUpdateFailed with the worker's reason if it could not."""

    async def wait() -> WeightsStatus:
        async with RolloutClient(url, timeout_s=10) as worker:
            return await worker.wait_for_version(version, timeout_s=timeout, poll_s=0.05)

    return asyncio.run(wait())


def weight_swaps(url: str) -> float:
    """The worker's count of weight swaps that succeeded (its Prometheus counter)."""

    async def swaps() -> float:
        async with RolloutClient(url, timeout_s=10) as worker:
            return await worker.metric("rollout_weight_swaps_total", outcome="ok") or 0.0

    return asyncio.run(swaps())


def register(client, keys, worker_id, url, version=0, age_s=0.0):
    info = WorkerInfo(worker_id=worker_id, url=url, version=version, heartbeat_at=time.time() - age_s)
    WorkerRegistry(client, keys).register(info)


def start_worker(tmp: Path, name: str, model: Path, redis_url: str, namespace: str, reward_url: str):
    port = free_port()
    env = {
        "PRFT_REDIS__URL": redis_url,
        "PRFT_REDIS__NAMESPACE": namespace,
        "PRFT_ROLLOUT__WORKER_ID": name,
        "PRFT_ROLLOUT__REWARD_URL": reward_url,
        "PRFT_ROLLOUT__MAX_INFLIGHT_TASKS": "2",
        "PRFT_ROLLOUT__HEARTBEAT_S": "0.5",
        "PRFT_ROLLOUT__RECLAIM_IDLE_MS": "2000",
        "PRFT_ROLLOUT__REWARD_BACKOFF_S": "0.2",
        "VLLM_RPC_BASE_PATH": str(tmp / f"rpc-{name}"),
        "PYTHONUNBUFFERED": "1",
        # Two engines on a small machine: one compute thread each, or their OpenMP threads fight.
        "OMP_NUM_THREADS": "1",
    }
    argv = [sys.executable, "-m", "services.rollout", "--model", str(model), "--port", str(port)]
    process = start_process(name, argv, tmp / f"{name}.log", env=env)
    return process, f"http://127.0.0.1:{port}"


def groups_in(redis_client, keys: Keys) -> list[TrajectoryGroup]:
    return LedgerQueries(redis_client, keys).groups()


def wait_for(condition, timeout: float, what: str, processes=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        for process in processes:
            process.check_alive()
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def started_processes(process: ManagedProcess) -> list[psutil.Process]:
    """The processes a worker started (vLLM's EngineCore among them), checked to hold the engine."""
    children = psutil.Process(process.popen.pid).children(recursive=True)
    assert any("EngineCor" in child.name() for child in children), [c.name() for c in children]
    return children


def still_running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those not ended (a zombie has ended: it holds no memory, only its exit status)."""
    running = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            pass
    return running
