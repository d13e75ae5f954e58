"""How much room a job takes in Redis (benchmarks and the status of an operator's checks)."""

from __future__ import annotations

import redis
from pydantic import BaseModel

from shared.bus.keys import Keys


class Footprint(BaseModel):
    used_memory: int  # bytes, INFO memory used_memory (the whole server)
    tasks: int  # entries in the tasks stream
    trajectories: int  # entries in the trajectories stream
    produced_recent: int  # append-once ids remembered above the watermark
    produced_legacy: int  # ids in the unbounded set earlier code wrote (0 for a job started by this code)


def footprint(client: redis.Redis, keys: Keys) -> Footprint:
    pipe = client.pipeline(transaction=False)
    pipe.info("memory")
    pipe.xlen(keys.tasks)
    pipe.xlen(keys.trajectories)
    pipe.zcard(keys.produced_recent)
    pipe.scard(keys.produced)
    memory, tasks, trajectories, recent, legacy = pipe.execute()
    return Footprint(
        used_memory=int(memory["used_memory"]), tasks=tasks, trajectories=trajectories, produced_recent=recent,
        produced_legacy=legacy,
    )
