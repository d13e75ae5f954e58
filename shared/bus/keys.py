"""Every Redis key of one job, under its namespace; the bus is the only code that uses them.

The names are the wire contract between the learner, the rollout workers and the ledger (a run's
append-only file keeps them), so they never change without a migration.
"""

from __future__ import annotations

from dataclasses import dataclass

# Consumer groups: the rollout workers read the tasks stream, the learner the trajectories stream.
TASKS_GROUP = "rollout"
TRAJECTORIES_GROUP = "learner"


def dead_letters_of(stream: str) -> str:
    """Where the entries of ``stream`` that can never be processed are kept for inspection."""
    return f"{stream}:dead"


@dataclass(frozen=True)
class Keys:
    namespace: str

    @property
    def tasks(self) -> str:
        """Stream of RolloutTask, appended by the learner, read by the workers' group."""
        return f"{self.namespace}:tasks"

    @property
    def trajectories(self) -> str:
        """Stream of TrajectoryGroup, appended once per task by the workers, read by the learner's group."""
        return f"{self.namespace}:trajectories"

    @property
    def dead_tasks(self) -> str:
        return dead_letters_of(self.tasks)

    @property
    def dead_trajectories(self) -> str:
        return dead_letters_of(self.trajectories)

    @property
    def produced(self) -> str:
        """Set of the task ids whose group was appended (append-once); written by earlier code only, which
        kept every id for good. Now :attr:`produced_recent` and :attr:`produced_watermark` hold them."""
        return f"{self.namespace}:seen:produced"

    @property
    def produced_recent(self) -> str:
        """Sorted set of the task ids whose group was appended, scored by the millisecond of their task's
        entry in the tasks stream; ids below :attr:`produced_watermark` are removed."""
        return f"{self.namespace}:seen:produced-recent"

    @property
    def produced_watermark(self) -> str:
        """Millisecond W: every task whose entry id is below W was acknowledged (its group appended, or
        dead-lettered), so a group for it is never appended again."""
        return f"{self.namespace}:seen:produced-watermark"

    def feeder(self, run_id: str) -> str:
        """Hash of one learner run's data position and tasks issued, written with each task."""
        return f"{self.namespace}:learner:{run_id}:feeder"

    @property
    def feeders(self) -> str:
        """Pattern matching the feeder hash of every run in the namespace."""
        return self.feeder("*")

    @property
    def weights(self) -> str:
        """The WeightsRecord of the newest published version."""
        return f"{self.namespace}:weights"

    @property
    def workers(self) -> str:
        """Hash of worker id -> WorkerInfo (the registry the learner pushes weights to)."""
        return f"{self.namespace}:workers"
