"""The groups decided so far (trained, or dropped as stale), kept as a watermark so memory stays flat.

A redelivered group (a worker that reclaimed a task another one had finished, an entry delivered again
after a crash) must be recognised as a duplicate however late it comes, so every decided id is
remembered. Task ids end in their issue number (``<run>-<n>``, n = 0, 1, 2, ... with no gap), and
groups are decided in roughly that order, so "every n below ``floor`` is decided" plus the few decided
above it says the same as the set of every id, in a size that does not grow with the run. The
exceptions below the floor are the tasks a worker dead-lettered (they give their place back without a
group): the floor passes them as *holes*, few and bounded by failures, not by steps.

Ids without a numeric tail (not issued by a feeder) are kept as they are.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ConsumedState(BaseModel):
    """What a checkpoint keeps of :class:`ConsumedIds`."""

    model_config = ConfigDict(extra="forbid")

    floor: int = Field(0, ge=0)  # every issue number below it is decided, except the holes
    above: list[int] = Field(default_factory=list)  # decided at or above the floor
    holes: list[int] = Field(default_factory=list)  # below the floor, dead-lettered and not decided
    dead_above: list[int] = Field(default_factory=list)  # dead-lettered at or above the floor
    count: int = Field(0, ge=0)  # ids decided in all
    others: list[str] = Field(default_factory=list)


def _number(group_id: str) -> int | None:
    tail = group_id.rpartition("-")[2]
    return int(tail) if tail.isdigit() else None


class ConsumedIds:
    def __init__(self, state: ConsumedState | None = None):
        state = state or ConsumedState()
        self.floor = state.floor
        self.above = set(state.above)
        self.holes = set(state.holes)
        self.dead_above = set(state.dead_above)
        self.count = state.count
        self.others = set(state.others)

    @classmethod
    def of(cls, group_ids) -> ConsumedIds:
        consumed = cls()
        for group_id in group_ids:
            consumed.add(group_id)
        return consumed

    def add(self, group_id: str) -> None:
        """``group_id`` is decided (a second add of one id changes nothing)."""
        number = _number(group_id)
        if number is None:
            if group_id not in self.others:
                self.others.add(group_id)
                self.count += 1
            return
        if number < self.floor:
            if number in self.holes:  # a dead-lettered task's group came after all
                self.holes.discard(number)
                self.count += 1
            return
        if number in self.above:
            return
        self.above.add(number)
        self.dead_above.discard(number)
        self.count += 1
        self._advance()

    def dead(self, group_id: str) -> None:
        """The task ``group_id`` is dead-lettered: it may never be decided, so the floor may pass it."""
        number = _number(group_id)
        if number is None or number < self.floor or number in self.above:
            return
        self.dead_above.add(number)
        self._advance()

    def _advance(self) -> None:
        while True:
            if self.floor in self.above:
                self.above.discard(self.floor)
            elif self.floor in self.dead_above:
                self.dead_above.discard(self.floor)
                self.holes.add(self.floor)
            else:
                return
            self.floor += 1

    def __contains__(self, group_id: object) -> bool:
        if not isinstance(group_id, str):
            return False
        number = _number(group_id)
        if number is None:
            return group_id in self.others
        if number < self.floor:
            return number not in self.holes
        return number in self.above

    def __len__(self) -> int:
        return self.count

    def state(self) -> ConsumedState:
        return ConsumedState(
            floor=self.floor, above=sorted(self.above), holes=sorted(self.holes),
            dead_above=sorted(self.dead_above), count=self.count, others=sorted(self.others),
        )

    def remembered(self) -> int:
        """Entries held (what grows if the floor stalls): a figure for the memory benchmark."""
        return len(self.above) + len(self.holes) + len(self.dead_above) + len(self.others)
