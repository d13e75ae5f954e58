"""The worker's side of the Redis contracts: the tasks stream (consumer group ``rollout``), the
idempotent append to the trajectories stream, the workers registry and the weights record.

Synchronous redis-py calls (the worker runs them on threads), so the stream code of shared/ is reused.
"""

from __future__ import annotations

import time

import redis

from shared.codec import CodecError, decode_value, encode, encode_value
from shared.messages import RolloutTask, TrajectoryGroup, WeightsRecord, WorkerInfo
from shared.streams import TASKS_GROUP, Entry, Keys, StreamQueue

# SADD and XADD in one step: a group is appended once, whichever worker finishes the task first,
# even when a task was reclaimed from a worker that was only slow and both finish it.
_APPEND_ONCE = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
return 1
"""
# Idle time given to entries handed back, so that any worker's next reclaim takes them at once.
RELEASED_IDLE_MS = 1 << 40


class TaskQueue:
    def __init__(self, client: redis.Redis, keys: Keys, consumer: str):
        self.client = client
        self.keys = keys
        self.consumer = consumer
        self.queue: StreamQueue[RolloutTask] = StreamQueue(client, keys.tasks, TASKS_GROUP, RolloutTask)
        self.produced_key = keys.seen("produced")
        self._append_once = client.register_script(_APPEND_ONCE)
        self._reclaim_cursor = "0-0"

    def ensure_group(self) -> None:
        self.queue.ensure_group()

    def read_new(self, count: int, block_ms: int) -> list[Entry[RolloutTask]]:
        return self.queue.read(self.consumer, count=count, block_ms=block_ms)

    def read_own_pending(self, count: int) -> list[Entry[RolloutTask]]:
        """Entries still pending on this consumer name (a worker restarted under the same id)."""
        reply = self.client.xreadgroup(TASKS_GROUP, self.consumer, {self.keys.tasks: "0"}, count=count)
        raw = [item for _, items in (reply or []) for item in items if item[1]]
        return self.queue._decode_all(raw)

    def reclaim(self, min_idle_ms: int, count: int) -> list[Entry[RolloutTask]]:
        """Take over up to ``count`` entries idle longer than ``min_idle_ms`` (their worker stopped refreshing)."""
        reply = self.client.xautoclaim(
            self.keys.tasks, TASKS_GROUP, self.consumer, min_idle_time=min_idle_ms,
            start_id=self._reclaim_cursor, count=count,
        )
        cursor = reply[0]
        self._reclaim_cursor = cursor.decode() if isinstance(cursor, bytes) else cursor
        raw = [item for item in reply[1] if item is not None and item[1] is not None]
        return self.queue._decode_all(raw)

    def deliveries(self, entry_id: str) -> int:
        info = self.client.xpending_range(self.keys.tasks, TASKS_GROUP, min=entry_id, max=entry_id, count=1)
        return int(info[0]["times_delivered"]) if info else 0

    def keepalive(self, entry_ids: list[str]) -> None:
        """Reset the idle time of entries this worker is still working on, so nobody reclaims them."""
        if entry_ids:
            self.client.xclaim(self.keys.tasks, TASKS_GROUP, self.consumer, 0, entry_ids, justid=True)

    def release(self, entry_ids: list[str]) -> None:
        """Hand entries back: pending, but idle long enough for the next reclaim of any worker."""
        if entry_ids:
            self.client.xclaim(
                self.keys.tasks, TASKS_GROUP, self.consumer, 0, entry_ids, idle=RELEASED_IDLE_MS, justid=True
            )

    def already_produced(self, task_id: str) -> bool:
        return bool(self.client.sismember(self.produced_key, task_id))

    def append_once(self, group: TrajectoryGroup) -> bool:
        """Append ``group`` unless a group with its id was appended before; True if appended now."""
        fields = [part for pair in encode(group).items() for part in pair]
        return bool(self._append_once(keys=[self.produced_key, self.keys.trajectories], args=[group.id, *fields]))

    def ack(self, entry_id: str) -> None:
        self.queue.ack(entry_id)

    def dead_letter(self, entry: Entry[RolloutTask], reason: str) -> None:
        """Keep a task that can never produce a group for inspection, and stop its redelivery."""
        fields = {**encode(entry.message), b"error": reason.encode(), b"entry_id": entry.entry_id.encode()}
        self.client.xadd(self.keys.dead_letters(self.keys.tasks), fields)
        self.ack(entry.entry_id)

    def leave_group(self) -> None:
        """Remove this consumer from the group if nothing is pending on it (keeps XINFO tidy)."""
        info = self.client.xpending_range(self.keys.tasks, TASKS_GROUP, min="-", max="+", count=1,
                                          consumername=self.consumer)
        if not info:
            self.client.xgroup_delconsumer(self.keys.tasks, TASKS_GROUP, self.consumer)

    # ------------------------------------------------------------------ registry and weights record

    def heartbeat(self, worker_id: str, url: str, version: int) -> None:
        info = WorkerInfo(worker_id=worker_id, url=url, version=version, heartbeat_at=time.time())
        self.client.hset(self.keys.workers, worker_id, encode_value(info))

    def deregister(self, worker_id: str) -> None:
        self.client.hdel(self.keys.workers, worker_id)

    def weights_record(self) -> WeightsRecord | None:
        raw = self.client.get(self.keys.weights)
        if raw is None:
            return None
        try:
            return decode_value(WeightsRecord, raw)
        except (CodecError, ValueError) as exc:
            raise CodecError(f"{self.keys.weights} holds an unreadable record: {exc}") from exc
