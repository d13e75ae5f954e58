"""The staleness window (rank 0): admission and expiry of rollout work in one place.

A task is *issued* (the feeder appends it while fewer than ``window`` groups are outstanding),
*consumed* once its group is decided (trained, or dropped as stale by the intake when it falls more
than ``max_staleness`` versions behind), or *dead* when a worker moved it to the dead letters (it
never produces a group, so it gives its place back). Outstanding = issued - consumed - dead.
"""

from __future__ import annotations

from collections import Counter

from services.learner.checkpoint import LearnerState
from services.learner.consumed import ConsumedIds
from services.learner.feeder import Feeder
from services.learner.intake import Decisions, GroupIntake
from shared.messages import TrajectoryGroup
from shared.problems import Problem


class StalenessWindow:
    def __init__(self, feeder: Feeder, intake: GroupIntake, window: int):
        self.feeder = feeder
        self.intake = intake
        self.window = window

    # ------------------------------------------------------------------ the books of the window

    @property
    def issued(self) -> int:
        return self.feeder.state.issued

    @property
    def consumed_ids(self) -> ConsumedIds:
        return self.intake.consumed_ids

    @property
    def dead_ids(self) -> set[str]:
        return self.feeder.dead_ids

    @property
    def counts(self) -> Counter[str]:
        """Groups trained, and dropped as stale, duplicate or foreign."""
        return self.intake.counts

    @property
    def ready(self) -> int:
        """Groups read and admitted, not yet trained."""
        return len(self.intake.ready)

    @property
    def decisions(self) -> Decisions:
        """What was decided since the last checkpoint (its ledger lines and the entries to acknowledge)."""
        return self.intake.decisions

    def outstanding(self) -> int:
        return self.feeder.outstanding(self.intake.consumed_ids)

    # ------------------------------------------------------------------ admission and expiry

    def recover(self) -> None:
        """After a restart: continue after the tasks already issued, take back the pending groups."""
        self.feeder.catch_up()
        self.intake.recover()

    def take(self, n: int, step: int, version: int) -> list[TrajectoryGroup] | None:
        """Issue tasks up to the window, expire the groups too stale for ``version``; ``n`` fresh groups or None."""
        self.feeder.fill(step, version, self.intake.consumed_ids)
        return self.intake.take(n, version, step)

    def wait(self, block_ms: int, count: int) -> int:
        """Read the groups the workers sent since; blocks up to ``block_ms`` for the first."""
        return self.intake.poll(block_ms, count=count)

    def draw_demonstrations(self, n: int) -> list[tuple[Problem, list[int]]]:
        return self.feeder.draw_demonstrations(n)

    # ------------------------------------------------------------------ checkpoints

    def save_to(self, state: LearnerState) -> None:
        """Record the window in the state a checkpoint writes."""
        state.position = self.feeder.state.position
        state.issued = self.feeder.state.issued
        state.consumed = self.intake.consumed_ids.state()
        state.consumed_ids = []  # read from older checkpoints only
        state.totals = {k: float(v) for k, v in self.intake.counts.items()}
