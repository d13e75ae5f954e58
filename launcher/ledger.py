"""Reconcile a run's books: every task issued and every trajectory group produced is accounted for.

Reads the learner's ``ledger.jsonl`` (the decisions its checkpoints committed) and the job's Redis
keys, and checks the two identities the system promises after any fault:

    tasks issued    = groups produced + tasks dead-lettered + tasks still waiting (queued or in flight)
    groups produced = trained + dropped as stale + still queued (unread, or read and not yet decided)

with no id trained twice, no id both trained and dropped, nothing decided that was never produced,
and, once the run has finished, the learner's running totals (metrics.jsonl) equal to the ledger's counts.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from launcher.processes import start_redis_server
from shared.bus import Keys, LedgerQueries, connect
from shared.records import FinalRecord, ledger_file, metrics_file


@dataclass
class Ledger:
    issued: int = 0
    produced: int = 0  # groups ever appended to the trajectories stream
    trained: Counter[str] = field(default_factory=Counter)
    stale: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0  # redelivered copies the learner recognised (not groups of their own)
    queued: set[str] = field(default_factory=set)  # produced, not yet decided
    tasks_dead: int = 0
    tasks_waiting: int = 0
    stream_copies: int = 0  # entries left in the trajectories stream (the consumed ones are trimmed)
    metrics_totals: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def rows(self) -> list[tuple[str, int]]:
        return [
            ("tasks issued", self.issued),
            ("groups produced", self.produced),
            ("  trained", len(self.trained)),
            ("  dropped as stale", len(self.stale)),
            ("  still queued", len(self.queued)),
            ("duplicate deliveries dropped", self.duplicates),
            ("tasks dead-lettered", self.tasks_dead),
            ("tasks still waiting", self.tasks_waiting),
        ]

    def render(self) -> str:
        width = max(len(name) for name, _ in self.rows())
        lines = [f"{name:<{width}}  {value:>6}" for name, value in self.rows()]
        lines.append(
            f"{'produced = trained + stale + queued':<{width}}  "
            f"{self.produced} = {len(self.trained)} + {len(self.stale)} + {len(self.queued)}"
        )
        lines.append(
            f"{'issued = produced + dead + waiting':<{width}}  "
            f"{self.issued} = {self.produced} + {self.tasks_dead} + {self.tasks_waiting}"
        )
        lines.append("reconciles: yes" if self.ok else "reconciles: NO\n  " + "\n  ".join(self.problems))
        return "\n".join(lines)


def reconcile_run(run_dir: Path, redis_url: str | None = None) -> Ledger:
    """A run directory of ``prefix-rft run`` or of a LocalDeployment: job.yaml names the namespace (and
    Redis, unless ``redis_url`` is given)."""
    config = yaml.safe_load((run_dir / "job.yaml").read_text())
    url = redis_url or config.get("redis", {}).get("url")
    if not url:
        raise ValueError(f"{run_dir}/job.yaml names no redis url")
    client = connect(url, reconnect=False)
    try:
        return reconcile(LedgerQueries(client, Keys(config["redis"]["namespace"])), run_dir / "learner")
    finally:
        client.close()


def reconcile_stopped_run(run_dir: Path) -> Ledger:
    """A finished run whose redis-server has stopped: load a copy of its append-only file into a private
    redis-server (the run's own files stay untouched) and reconcile against that."""
    aof = run_dir / "redis"
    if not (aof / "appendonlydir").is_dir():
        raise ValueError(f"{aof} holds no append-only file; pass the URL of the run's live redis-server")
    with tempfile.TemporaryDirectory(prefix="prft-ledger-") as tmp:
        shutil.copytree(aof / "appendonlydir", Path(tmp) / "appendonlydir")
        process, url = start_redis_server(Path(tmp), appendonly=True)
        try:
            return reconcile_run(run_dir, url)
        finally:
            process.stop()


def reconcile(bus: LedgerQueries, learner_dir: Path) -> Ledger:
    """The streams are trimmed once consumed (shared.bus.retention): the totals come from the streams'
    own counters, the ids of what is still in flight from what is left in them."""
    ledger = Ledger()
    _read_ledger(ledger, learner_dir)
    if FinalRecord.read(learner_dir) is not None:
        # Only a finished run's last metrics line is covered by a checkpoint (so by the ledger); during
        # a run, or after a crash, the lines of the steps since the last checkpoint are ahead of it.
        _read_metrics(ledger, learner_dir)

    groups = bus.trajectory_ids()
    ledger.stream_copies = len(groups)
    ledger.produced = bus.produced_total()
    copies = Counter(group_id for _, group_id in groups)
    if twice := sorted(i for i, n in copies.items() if n > 1):
        ledger.problems.append(f"groups appended more than once: {twice[:5]}")

    if twice := sorted(i for i, n in ledger.trained.items() if n > 1):
        ledger.problems.append(f"trained more than once: {twice[:5]}")
    if both := sorted(set(ledger.trained) & set(ledger.stale)):
        ledger.problems.append(f"both trained and dropped as stale: {both[:5]}")
    decided = set(ledger.trained) | set(ledger.stale)
    # Still in the learner's hands: in the stream, undelivered or pending, and not decided by a checkpoint.
    ledger.queued = bus.undecided_trajectories(groups) - decided
    accounted = len(ledger.trained) + len(ledger.stale) + len(ledger.queued)
    if ledger.produced > accounted:
        ledger.problems.append(
            f"{ledger.produced - accounted} groups produced and acknowledged, but neither trained nor dropped (lost)"
        )
    elif ledger.produced < accounted:
        ledger.problems.append(f"{accounted - ledger.produced} groups decided or queued but never produced")

    for name, expected in (("trained_groups_total", len(ledger.trained)), ("dropped_stale_total", len(ledger.stale))):
        got = ledger.metrics_totals.get(name)
        if got is not None and got != expected:
            ledger.problems.append(f"metrics.jsonl says {name} = {got}, the ledger {expected}")

    _reconcile_tasks(ledger, bus)
    return ledger


def _reconcile_tasks(ledger: Ledger, bus: LedgerQueries) -> None:
    ledger.issued = bus.issued_total()
    added = bus.tasks_added()
    if added != ledger.issued:
        ledger.problems.append(f"the feeder counts {ledger.issued} tasks issued, the tasks stream took {added}")
    dead = {gid for _, gid in bus.dead_task_ids()}
    ledger.tasks_dead = len(dead)
    tasks = bus.task_ids()
    undecided = bus.undecided_tasks(tasks)
    # Waiting: not yet acknowledged by a worker, its group not appended (a worker may have appended it and
    # died before acknowledging), not dead-lettered.
    ledger.tasks_waiting = sum(
        1 for eid, gid in tasks if gid in undecided and gid not in dead and not bus.was_produced(gid, eid)
    )
    # Not an equality: a task dead-lettered after a slower worker appended its group counts on both sides.
    if (lost := ledger.issued - ledger.produced - ledger.tasks_dead - ledger.tasks_waiting) > 0:
        ledger.problems.append(f"{lost} tasks acknowledged without a group or a dead letter (lost)")


def _read_ledger(ledger: Ledger, learner_dir: Path) -> None:
    for event in ledger_file(learner_dir).read():
        if event.event == "trained":
            ledger.trained.update(event.ids)
        elif event.event == "stale":
            ledger.stale.update(event.ids)
        elif event.event == "duplicate":
            ledger.duplicates += len(event.ids)


def _read_metrics(ledger: Ledger, learner_dir: Path) -> None:
    last = metrics_file(learner_dir).last()
    if last is not None:
        ledger.metrics_totals = {
            "trained_groups_total": last.trained_groups_total,
            "dropped_stale_total": last.dropped_stale_total,
        }
