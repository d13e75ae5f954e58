"""Keeping Redis flat: delete what is durably consumed, after each learner checkpoint.

- trajectories: entries the learner acknowledged, which it does once a committed checkpoint records
  their decision (trained or dropped), so a resumed learner never needs them again;
- tasks: entries the workers acknowledged, which they do once the task's group is appended (or the task
  is dead-lettered);
- the append-once ids: below the tasks stream's low water (see :class:`TrajectoryStream`).

What the ledger needs stays: the counts of entries ever appended (XINFO ``entries-added``), everything
not yet acknowledged, the dead letters and the feeders' counts.
"""

from __future__ import annotations

from pydantic import BaseModel

from shared.bus.tasks import TaskStream
from shared.bus.trajectories import TrajectoryStream


class TrimReport(BaseModel):
    trajectories_deleted: int = 0
    tasks_deleted: int = 0
    ids_forgotten: int = 0  # append-once ids let go below the watermark
    watermark_ms: int = 0


def trim_consumed(tasks: TaskStream, trajectories: TrajectoryStream) -> TrimReport:
    report = TrimReport()
    report.trajectories_deleted, _ = trajectories.trim_acknowledged()
    report.tasks_deleted, low = tasks.trim_acknowledged()
    if low is not None:
        report.ids_forgotten = trajectories.advance_watermark(low)
    report.watermark_ms = trajectories.watermark()
    return report
