"""How well generation and training overlapped in a run: the figures of the pipeline benchmark.

T_train is the learner's time per step spent training and publishing; T_generate is the time a
worker spent per step with at least one task in flight (``rollout_worker_busy_seconds``), divided
over the workers that share a batch. A perfect pipeline runs a step in max(T_generate, T_train), a
synchronous one in their sum, so the ideal speed-up is (T_generate + T_train) / max(...), and the
achieved one is (T_generate + T_train) / the measured wall time per step.
"""

from __future__ import annotations

import asyncio
import statistics

from pydantic import BaseModel

from shared.api.rollout import RolloutClient
from shared.records import StepRecord

BUSY_METRIC = "rollout_worker_busy_seconds"


class PipelineStats(BaseModel):
    steps: int
    max_staleness: int
    step_wall_s: float  # wall time per step between the first and the last step (steady state)
    learner_wait_s: float  # per step: the learner waiting for trajectory groups
    learner_train_s: float  # per step: training and publishing weights (T_train)
    worker_busy_s: float  # per step: generating or scoring, averaged over workers (T_generate)
    worker_idle_s: float  # per step: a worker with no task, waiting for the learner's next weights
    ideal_speedup: float
    achieved_speedup: float

    @property
    def fraction_of_ideal(self) -> float:
        return self.achieved_speedup / self.ideal_speedup


def worker_busy_seconds(urls: list[str]) -> list[float]:
    """Each worker's busy-seconds counter, read from its /metrics."""

    async def busy(url: str) -> float:
        async with RolloutClient(url, timeout_s=10.0) as worker:
            value = await worker.metric(f"{BUSY_METRIC}_total")
        if value is None:
            raise ValueError(f"{url}/metrics has no {BUSY_METRIC}")
        return value

    async def every_worker() -> list[float]:
        return list(await asyncio.gather(*(busy(url) for url in urls)))

    return asyncio.run(every_worker())


def pipeline_stats(metrics: list[StepRecord], busy_s: list[float], max_staleness: int) -> PipelineStats | None:
    """``busy_s``: each worker's busy seconds during training. Every figure is per RL step (SFT steps
    generate nothing); None when there are fewer than two RL steps to measure."""
    rl = [m for m in metrics if not m.sft]
    if len(rl) < 2 or not busy_s:
        return None
    steps = len(metrics)
    step_wall = (rl[-1].time - rl[0].time) / (len(rl) - 1)
    train = statistics.fmean(m.train_s + (m.publish_s or 0.0) for m in rl)
    busy = sum(busy_s) / len(busy_s) / len(rl)
    idle = max(0.0, step_wall - busy)
    total = busy + train
    return PipelineStats(
        steps=steps,
        max_staleness=max_staleness,
        step_wall_s=step_wall,
        learner_wait_s=statistics.fmean(m.wait_s for m in rl),
        learner_train_s=train,
        worker_busy_s=busy,
        worker_idle_s=idle,
        ideal_speedup=total / max(busy, train),
        achieved_speedup=total / step_wall,
    )
