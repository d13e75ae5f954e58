"""The learner's books (rank 0): the record of each step, the ledger, and what a checkpoint commits.

The ledger lines of the decisions since the last checkpoint are written just before it, labelled
with its commit number; the trajectory entries they decide are acknowledged only once it is
committed. After a crash the lines of the lost commit and the metrics of the lost steps are cut.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from services.learner.checkpoint import LearnerState, write_atomic
from services.learner.metrics import StepMetrics, batch_stats
from services.learner.plan import Plan
from services.learner.settings import LearnerSettings
from services.learner.window import StalenessWindow
from shared.bus import RedisError, TaskStream, TrajectoryStream, trim_consumed
from shared.messages import TrajectoryGroup
from shared.records import FINAL_FILE, FinalRecord, LedgerEvent, StepRecord, ledger_file

log = logging.getLogger(__name__)

ACK_CHUNK = 1000


@dataclass
class StepTimes:
    train_s: float
    publish_s: float | None  # None: nothing published after the step
    wait_s: float  # for the step's trajectory groups
    step_s: float  # wait + train + publish
    push_s: float | None  # the last finished push to the workers


class Bookkeeping:
    def __init__(
        self,
        settings: LearnerSettings,
        state: LearnerState,
        metrics: StepMetrics,
        window: StalenessWindow,
        trajectories: TrajectoryStream,
        tasks: TaskStream,
    ):
        self.settings = settings
        self.state = state
        self.metrics = metrics
        self.window = window
        self.trajectories = trajectories
        self.tasks = tasks
        self.ledger = ledger_file(settings.run_dir)
        self.checkpoint_step: int | None = None  # the step of the last committed checkpoint
        self._stale_before = window.counts["stale"]

    def truncate(self) -> None:
        """Cut the lines written after the state's checkpoint (all of them on a fresh start)."""
        cut = self.ledger.truncate_after(self.state.commit, key=lambda event: event.commit)
        cut_metrics = self.metrics.log.truncate_after(self.state.step, key=lambda record: record.step)
        if cut or cut_metrics:
            log.info("cut %d ledger and %d metrics lines written after the checkpoint", cut, cut_metrics)

    # ------------------------------------------------------------------ after each step

    def record(
        self, plan: Plan, groups: list[TrajectoryGroup], batch_version: int, trainer_metrics: dict[str, float],
        times: StepTimes,
    ) -> StepRecord:
        """The step ``plan`` took (``state.step`` already counts it); ``groups`` it trained on, at ``batch_version``."""
        state = self.state
        tokens = int(plan.batch.attention_mask.sum()) if plan.batch is not None else 0
        low, high = self.settings.algorithm.schedule.bounds(plan.step)
        counts = self.window.counts
        dropped_stale, self._stale_before = counts["stale"] - self._stale_before, counts["stale"]
        # The batch's prefix-token share replaces the trainer's (see BatchStats), hence the order.
        measured = {**trainer_metrics, **(batch_stats(groups, batch_version).model_dump() if groups else {})}
        record = StepRecord(
            **measured,
            step=state.step,
            version=state.version,
            sft=plan.sft,
            prefix_ratio_low=low,
            prefix_ratio_high=high,
            tokens=tokens,
            tokens_per_s=tokens / times.train_s if times.train_s > 0 else 0.0,
            step_time_s=times.step_s,
            train_s=times.train_s,
            wait_s=times.wait_s,
            dropped_stale=dropped_stale,
            publish_s=times.publish_s,
            weight_push_s=times.push_s,
            dropped_stale_total=counts["stale"],
            dropped_duplicate_total=counts["duplicate"],
            dropped_foreign_total=counts["foreign"],
            trained_groups_total=counts["trained"],
            issued_total=self.window.issued,
            outstanding=self.window.outstanding(),
            time=time.time(),
        )
        self.metrics.record(record, groups)
        return record

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_state(self) -> LearnerState:
        """The state a checkpoint records; the ledger lines it covers are written first."""
        state = self.state
        state.commit += 1
        for decision in self.window.decisions.events:
            self.ledger.append(LedgerEvent(commit=state.commit, **decision.model_dump(exclude_unset=True)))
        self.window.save_to(state)
        return state

    def committed(self) -> None:
        """The checkpoint is committed: acknowledge the entries it covers."""
        decisions = self.window.decisions
        ids = decisions.entry_ids
        for start in range(0, len(ids), ACK_CHUNK):
            self.trajectories.ack(*ids[start : start + ACK_CHUNK])
        decisions.clear()
        self.checkpoint_step = self.state.step
        # What the checkpoint covers is consumed for good: keep Redis flat. Housekeeping only: the next
        # checkpoint trims whatever this one could not, so a failure here must not stop training.
        try:
            report = trim_consumed(self.tasks, self.trajectories)
        except RedisError as exc:
            log.warning("could not trim the streams after the checkpoint (%s); the next one will", exc)
            return
        log.info("trimmed %d trajectory and %d task entries, let go of %d append-once ids",
                 report.trajectories_deleted, report.tasks_deleted, report.ids_forgotten)

    def write_final(self, rank_digests: list[str] | None) -> None:
        final = FinalRecord(version=self.state.version, step=self.state.step, rank_digests=rank_digests)
        write_atomic(Path(self.settings.run_dir) / FINAL_FILE, final.model_dump_json())
