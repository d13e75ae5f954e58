"""The worker registry: each rollout worker's URL and weights version, refreshed by its heartbeat; the
learner pushes new weights to the workers whose heartbeat is recent."""

from __future__ import annotations

import logging
import time

import redis

from shared.bus.codec import CodecError, decode_value, encode_value
from shared.bus.keys import Keys
from shared.bus.stream import text
from shared.messages import WorkerInfo

log = logging.getLogger(__name__)


class WorkerRegistry:
    def __init__(self, client: redis.Redis, keys: Keys):
        self.client = client
        self.key = keys.workers

    def register(self, info: WorkerInfo) -> None:
        """Add or refresh ``info.worker_id`` (its heartbeat is ``info.heartbeat_at``)."""
        self.client.hset(self.key, info.worker_id, encode_value(info))

    def deregister(self, worker_id: str) -> None:
        self.client.hdel(self.key, worker_id)

    def get(self, worker_id: str) -> WorkerInfo | None:
        raw = self.client.hget(self.key, worker_id)
        return decode_value(WorkerInfo, raw) if raw is not None else None

    def all(self) -> dict[str, WorkerInfo]:
        """Every registered worker, live or not; an unreadable entry is logged and left out."""
        workers = {}
        for worker_id, raw in self.client.hgetall(self.key).items():
            try:
                workers[text(worker_id)] = decode_value(WorkerInfo, raw)
            except (CodecError, ValueError) as exc:
                log.warning("registry entry %r is unreadable: %s", worker_id, exc)
        return workers

    def live(self, ttl_s: float, now: float | None = None) -> list[WorkerInfo]:
        """Workers whose last heartbeat is at most ``ttl_s`` old."""
        now = time.time() if now is None else now
        return [info for info in self.all().values() if now - info.heartbeat_at <= ttl_s]

    def swarm_peers(self, ttl_s: float, now: float | None = None) -> list[str]:
        """The swarm addresses of the live workers that have one (the swarm transport's peers)."""
        return [info.swarm for info in self.live(ttl_s, now) if info.swarm]
