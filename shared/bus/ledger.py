"""Read-only queries the ledger reconciles a run's books with (and tests check them with): how many
entries each stream ever took, the ids still in the streams, the append-once ids, the tasks the feeders
issued, what the consumer groups have not decided.

The streams are trimmed once their entries are durably consumed (:mod:`shared.bus.retention`), so the
totals come from the streams' own counters (``entries-added``) and the ids from what is left."""

from __future__ import annotations

import json

import redis

from shared.bus.codec import decode
from shared.bus.keys import TASKS_GROUP, TRAJECTORIES_GROUP, Keys
from shared.bus.stream import entry_ms, position, text
from shared.messages import RolloutTask, TrajectoryGroup

# (entry id, message id) of one stream entry
EntryIds = list[tuple[str, str]]


class LedgerQueries:
    def __init__(self, client: redis.Redis, keys: Keys):
        self.client = client
        self.keys = keys

    def issued_total(self) -> int:
        """Tasks issued, by the counts every learner run of the namespace stored with its tasks."""
        return sum(int(self.client.hget(key, "issued") or 0) for key in self.client.scan_iter(self.keys.feeders))

    def tasks_added(self) -> int:
        """Entries ever appended to the tasks stream, trimmed ones included."""
        return self._added(self.keys.tasks)

    def produced_total(self) -> int:
        """Groups ever appended to the trajectories stream (append-once: one per produced group)."""
        return self._added(self.keys.trajectories)

    def was_produced(self, group_id: str, task_entry_id: str) -> bool:
        """The group of the task at ``task_entry_id`` was appended, or can no longer be (its task is below
        the watermark: acknowledged, so produced or dead-lettered)."""
        if entry_ms(task_entry_id) < self.watermark():
            return True
        return self.client.zscore(self.keys.produced_recent, group_id) is not None

    def watermark(self) -> int:
        return int(self.client.get(self.keys.produced_watermark) or 0)

    def recent_produced_ids(self) -> set[str]:
        """The append-once ids still remembered (above the watermark)."""
        return {text(m) for m in self.client.zrange(self.keys.produced_recent, 0, -1)}

    def task_ids(self) -> EntryIds:
        return self._ids(self.keys.tasks)

    def trajectory_ids(self) -> EntryIds:
        return self._ids(self.keys.trajectories)

    def dead_task_ids(self) -> EntryIds:
        return self._ids(self.keys.dead_tasks)

    def dead_task_count(self) -> int:
        """Every dead letter of the tasks stream, unreadable entries included."""
        return int(self.client.xlen(self.keys.dead_tasks))

    def tasks(self) -> list[RolloutTask]:
        return [decode(RolloutTask, fields) for _, fields in self.client.xrange(self.keys.tasks)]

    def groups(self) -> list[TrajectoryGroup]:
        return [decode(TrajectoryGroup, fields) for _, fields in self.client.xrange(self.keys.trajectories)]

    def undecided_tasks(self, entries: EntryIds) -> set[str]:
        """Ids of ``entries`` not yet delivered to a worker, or delivered and not acknowledged."""
        return self._undecided(self.keys.tasks, TASKS_GROUP, entries)

    def undecided_trajectories(self, entries: EntryIds) -> set[str]:
        """Ids of ``entries`` not yet delivered to the learner, or delivered and not acknowledged."""
        return self._undecided(self.keys.trajectories, TRAJECTORIES_GROUP, entries)

    def _added(self, stream: str) -> int:
        if not self.client.exists(stream):
            return 0
        return int(self.client.xinfo_stream(stream)["entries-added"])

    def _ids(self, stream: str) -> EntryIds:
        """(entry id, message id) of every entry; only the ``id`` of each JSON body is read, so entries
        a newer schema wrote still count."""
        out = []
        for entry_id, fields in self.client.xrange(stream):
            body = fields.get(b"d")
            if body is not None:
                out.append((text(entry_id), json.loads(body)["id"]))
        return out

    def _undecided(self, stream: str, group: str, entries: EntryIds) -> set[str]:
        if not self.client.exists(stream):
            return set()
        info = next((g for g in self.client.xinfo_groups(stream) if text(g["name"]) == group), None)
        if info is None:
            return {gid for _, gid in entries}
        last = position(text(info["last-delivered-id"]))
        pending = {text(p["message_id"]) for p in self.client.xpending_range(stream, group, "-", "+", count=1_000_000)}
        return {gid for eid, gid in entries if position(eid) > last or eid in pending}
