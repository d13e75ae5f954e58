"""Which CPU cores each process of a local deployment may use.

A vLLM engine and the DeepSpeed learner both run OpenMP thread pools sized to every core. Sharing
cores, their spinning threads stall each other: measured on 2 cores, a training step that takes
4.7 s alone took 24 s while the engine generated. Disjoint cores let generation and training
overlap as the asynchronous pipeline intends.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from pydantic import BaseModel


class CorePlan(BaseModel):
    learner: tuple[int, ...]
    workers: list[tuple[int, ...]]


def thread_env(cores: tuple[int, ...]) -> dict[str, str]:
    """Thread pools sized to the cores a process is pinned to."""
    return {"OMP_NUM_THREADS": str(len(cores))}


def available_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def plan_cores(cores: Sequence[int], rollout_workers: int) -> CorePlan | None:
    """Half the cores (rounded down, at least one) to the learner, the rest spread over the workers.

    None when there is a single core: nothing to split. Workers outnumbering their cores share them.
    """
    cores = list(cores)
    if len(cores) < 2 or rollout_workers < 1:
        return None
    learner_count = max(1, len(cores) // 2)
    learner, rest = cores[:learner_count], cores[learner_count:]
    if rollout_workers >= len(rest):
        workers = [(rest[i % len(rest)],) for i in range(rollout_workers)]
    else:
        per_worker, extra = divmod(len(rest), rollout_workers)
        workers, start = [], 0
        for index in range(rollout_workers):
            size = per_worker + (1 if index < extra else 0)
            workers.append(tuple(rest[start : start + size]))
            start += size
    return CorePlan(learner=tuple(learner), workers=workers)


def pin(pid: int, cores: tuple[int, ...]) -> None:
    """Pin a just-started process (before it starts threads, which inherit the mask)."""
    os.sched_setaffinity(pid, cores)
