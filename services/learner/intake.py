"""Intake of trajectory groups (rank 0): read, de-duplicate, drop stale ones, hand out full batches.

Every entry read is decided exactly once: trained, dropped as stale, or recognised as a duplicate (or
as another run's). Decided entries are acknowledged only after the checkpoint that records the
decision; until then they stay pending in the consumer group, so after a crash they are delivered
again and decided again against the restored state. The ledger events of each decision are written
with the checkpoint that covers them.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from services.learner.consumed import ConsumedIds
from shared.bus import Entry, TrajectoryStream
from shared.messages import TrajectoryGroup
from shared.records import Decision

log = logging.getLogger(__name__)


@dataclass
class Decisions:
    """What happened to the entries read since the last checkpoint."""

    entry_ids: list[str] = field(default_factory=list)  # to acknowledge once a checkpoint covers them
    events: list[Decision] = field(default_factory=list)  # ledger lines, once a checkpoint commits them

    def clear(self) -> None:
        self.entry_ids.clear()
        self.events.clear()


class GroupIntake:
    def __init__(
        self,
        queue: TrajectoryStream,
        consumer: str,
        max_staleness: int,
        owns: Callable[[str], bool],
        consumed_ids: ConsumedIds,
    ):
        self.queue = queue
        self.consumer = consumer
        self.max_staleness = max_staleness
        self.owns = owns
        self.consumed_ids = consumed_ids  # trained or dropped, as of the in-memory state
        self.ready: deque[Entry[TrajectoryGroup]] = deque()
        self._ready_ids: set[str] = set()
        self.decisions = Decisions()
        self.counts: Counter[str] = Counter()  # stale, duplicate, foreign since the start of this process

    def recover(self) -> int:
        """Take back every entry left pending (by this learner before a crash, or by a dead consumer)."""
        entries = self.queue.reclaim(self.consumer, min_idle_ms=0, count=1_000_000)
        for entry in entries:
            self._admit(entry)
        if entries:
            log.info("recovered %d pending trajectory groups", len(entries))
        return len(entries)

    def poll(self, block_ms: int, count: int) -> int:
        entries = self.queue.read(self.consumer, count=count, block_ms=block_ms)
        for entry in entries:
            self._admit(entry)
        return len(entries)

    def take(self, n: int, version: int, step: int) -> list[TrajectoryGroup] | None:
        """``n`` fresh groups for a batch trained at ``version``, or None while fewer are ready."""
        self._expire(version, step)
        if len(self.ready) < n:
            return None
        taken = [self.ready.popleft() for _ in range(n)]
        groups = []
        for entry in taken:
            self._ready_ids.discard(entry.message.id)
            self.consumed_ids.add(entry.message.id)
            self.decisions.entry_ids.append(entry.entry_id)
            groups.append(entry.message)
        self.counts["trained"] += n
        self.decisions.events.append(
            Decision(
                event="trained",
                step=step + 1,
                version=version,
                ids=[g.id for g in groups],
                lags=[version - g.oldest_policy_version for g in groups],
            )
        )
        return groups

    def _admit(self, entry: Entry[TrajectoryGroup]) -> None:
        group_id = entry.message.id
        if not self.owns(group_id):
            self._drop(entry, "foreign")
        elif group_id in self.consumed_ids or group_id in self._ready_ids:
            self._drop(entry, "duplicate")
        else:
            self.ready.append(entry)
            self._ready_ids.add(group_id)

    def _expire(self, version: int, step: int) -> None:
        fresh: deque[Entry[TrajectoryGroup]] = deque()
        stale: list[tuple[str, int]] = []
        for entry in self.ready:
            lag = version - entry.message.oldest_policy_version
            if lag > self.max_staleness:
                self._ready_ids.discard(entry.message.id)
                self.consumed_ids.add(entry.message.id)
                self.decisions.entry_ids.append(entry.entry_id)
                stale.append((entry.message.id, lag))
            else:
                fresh.append(entry)
        self.ready = fresh
        if stale:
            self.counts["stale"] += len(stale)
            self.decisions.events.append(
                Decision(event="stale", step=step, version=version, ids=[i for i, _ in stale],
                         lags=[lag for _, lag in stale])
            )
            log.info("dropped %d stale groups (lags %s)", len(stale), sorted({lag for _, lag in stale}))

    def _drop(self, entry: Entry[TrajectoryGroup], reason: Literal["duplicate", "foreign"]) -> None:
        self.counts[reason] += 1
        self.decisions.entry_ids.append(entry.entry_id)
        self.decisions.events.append(Decision(event=reason, ids=[entry.message.id]))
