"""The tasks stream: the learner issues RolloutTasks (with its feeder state, in one transaction), the
rollout workers' group reads, keeps alive, hands back, reclaims and dead-letters them."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from pydantic import BaseModel

from shared.bus.codec import CodecError, decode, encode
from shared.bus.keys import TASKS_GROUP, Keys
from shared.bus.stream import Entry, MessageStream, text
from shared.messages import RolloutTask

# Idle time given to entries handed back, so that any worker's next reclaim takes them at once.
RELEASED_IDLE_MS = 1 << 40


class FeederState(BaseModel):
    """Where a learner run's feeder stands: stored in Redis with every task it issues, so a learner
    resumed from an older checkpoint continues after the last task it actually issued."""

    position: int = 0  # problems drawn from the data so far (tasks and SFT examples)
    issued: int = 0  # tasks appended to the tasks stream


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    task: RolloutTask | None  # None: the entry is not a readable task (kept for inspection only)
    error: str | None


class TaskStream(MessageStream[RolloutTask]):
    def __init__(self, client: redis.Redis, keys: Keys):
        super().__init__(client, keys.tasks, TASKS_GROUP, RolloutTask)
        self.keys = keys
        self._reclaim_cursor = "0-0"

    # ------------------------------------------------------------------ the learner's side

    def issue(self, task: RolloutTask, run_id: str, state: FeederState) -> None:
        """Append ``task`` and record ``state`` (the feeder's state after it) in one transaction."""
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.stream, encode(task))
        pipe.hset(self.keys.feeder(run_id), mapping=state.model_dump())
        pipe.execute()

    def feeder_state(self, run_id: str) -> FeederState | None:
        raw = self.client.hgetall(self.keys.feeder(run_id))
        return FeederState.model_validate({text(k): int(v) for k, v in raw.items()}) if raw else None

    def read_dead_letters(self, after: str | None = None) -> list[DeadLetter]:
        """Dead letters appended after entry id ``after`` (all of them if None), oldest first."""
        start = "-" if after is None else f"({after}"
        letters = []
        for entry_id, fields in self.client.xrange(self.keys.dead_tasks, min=start):
            try:
                task = decode(RolloutTask, fields)
            except (CodecError, ValueError):
                task = None
            error = fields.get(b"error")
            letters.append(DeadLetter(text(entry_id), task, text(error) if error is not None else None))
        return letters

    # ------------------------------------------------------------------ the workers' side

    def read_own_pending(self, consumer: str, count: int) -> list[Entry[RolloutTask]]:
        """Entries still pending on this consumer name (a worker restarted under the same id)."""
        reply = self.client.xreadgroup(self.group, consumer, {self.stream: "0"}, count=count)
        return self._decode_all([item for _, items in (reply or []) for item in items if item[1]])

    def reclaim(self, consumer: str, min_idle_ms: int, count: int = 16) -> list[Entry[RolloutTask]]:
        """Take over up to ``count`` entries idle longer than ``min_idle_ms`` (their worker stopped refreshing).
        One XAUTOCLAIM per call, continuing where the last one stopped, so a long pending list is
        covered over successive calls without holding up the caller."""
        reply = self.client.xautoclaim(
            self.stream, self.group, consumer, min_idle_time=min_idle_ms, start_id=self._reclaim_cursor, count=count
        )
        self._reclaim_cursor = text(reply[0])
        return self._decode_all([item for item in reply[1] if item is not None and item[1] is not None])

    def deliveries(self, entry_id: str) -> int:
        info = self.client.xpending_range(self.stream, self.group, min=entry_id, max=entry_id, count=1)
        return int(info[0]["times_delivered"]) if info else 0

    def keepalive(self, consumer: str, entry_ids: list[str]) -> None:
        """Reset the idle time of entries ``consumer`` is still working on, so nobody reclaims them."""
        if entry_ids:
            self.client.xclaim(self.stream, self.group, consumer, 0, entry_ids, justid=True)

    def release(self, consumer: str, entry_ids: list[str]) -> None:
        """Hand entries back: pending, but idle long enough for the next reclaim of any worker."""
        if entry_ids:
            self.client.xclaim(self.stream, self.group, consumer, 0, entry_ids, idle=RELEASED_IDLE_MS, justid=True)

    def dead_letter(self, entry: Entry[RolloutTask], reason: str) -> None:
        """Keep a task that can never produce a group for inspection, and stop its redelivery."""
        fields = {**encode(entry.message), b"error": reason.encode(), b"entry_id": entry.entry_id.encode()}
        self.client.xadd(self.keys.dead_tasks, fields)
        self.ack(entry.entry_id)

    def leave_group(self, consumer: str) -> None:
        """Remove ``consumer`` from the group if nothing is pending on it (keeps XINFO tidy)."""
        if not self.pending_entries(consumer, count=1):
            self.client.xgroup_delconsumer(self.stream, self.group, consumer)
