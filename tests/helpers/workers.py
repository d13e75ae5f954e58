"""Probes of a rollout worker as the learner sees it: the weights version it serves, its count of
weight swaps, and its entry in the job's worker registry."""

from __future__ import annotations

import asyncio
import time

from shared.api.rollout import RolloutClient
from shared.bus import WorkerRegistry
from shared.messages import WorkerInfo


def served_version(url: str) -> int:
    async def version() -> int:
        async with RolloutClient(url, timeout_s=10) as worker:
            return await worker.version()

    return asyncio.run(version())


def weight_swaps(url: str) -> float:
    """The worker's count of weight swaps that succeeded (its Prometheus counter)."""

    async def swaps() -> float:
        async with RolloutClient(url, timeout_s=10) as worker:
            return await worker.metric("rollout_weight_swaps_total", outcome="ok") or 0.0

    return asyncio.run(swaps())


def register(client, keys, worker_id, url, version=0, age_s=0.0):
    info = WorkerInfo(worker_id=worker_id, url=url, version=version, heartbeat_at=time.time() - age_s)
    WorkerRegistry(client, keys).register(info)
