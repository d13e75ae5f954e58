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
    produced: set[str] = field(default_factory=set)
    trained: Counter[str] = field(default_factory=Counter)
    stale: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0  # redelivered copies the learner recognised (not groups of their own)
    queued: set[str] = field(default_factory=set)  # produced, not yet decided
    tasks_dead: int = 0
    tasks_waiting: int = 0
    stream_copies: int = 0  # entries in the trajectories stream (one per produced group, append-once)
    metrics_totals: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def rows(self) -> list[tuple[str, int]]:
        return [
            ("tasks issued", self.issued),
            ("groups produced", len(self.produced)),
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
            f"{len(self.produced)} = {len(self.trained)} + {len(self.stale)} + {len(self.queued)}"
        )
        lines.append(
            f"{'issued = produced + dead + waiting':<{width}}  "
            f"{self.issued} = {len(self.produced)} + {self.tasks_dead} + {self.tasks_waiting}"
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
    ledger = Ledger()
    _read_ledger(ledger, learner_dir)
    if FinalRecord.read(learner_dir) is not None:
        # Only a finished run's last metrics line is covered by a checkpoint (so by the ledger); during
        # a run, or after a crash, the lines of the steps since the last checkpoint are ahead of it.
        _read_metrics(ledger, learner_dir)

    groups = bus.trajectory_ids()
    ledger.stream_copies = len(groups)
    ledger.produced = bus.produced_ids()
    copies = Counter(group_id for _, group_id in groups)
    if twice := sorted(i for i, n in copies.items() if n > 1):
        ledger.problems.append(f"groups appended more than once: {twice[:5]}")
    if set(copies) != ledger.produced:
        ledger.problems.append(
            f"the produced set and the trajectories stream differ: {sorted(set(copies) ^ ledger.produced)[:5]}"
        )

    if twice := sorted(i for i, n in ledger.trained.items() if n > 1):
        ledger.problems.append(f"trained more than once: {twice[:5]}")
    if both := sorted(set(ledger.trained) & set(ledger.stale)):
        ledger.problems.append(f"both trained and dropped as stale: {both[:5]}")
    decided = set(ledger.trained) | set(ledger.stale)
    if never := sorted(decided - ledger.produced):
        ledger.problems.append(f"decided but never produced: {never[:5]}")
    ledger.queued = ledger.produced - decided
    # A group counted as queued must really still be in the learner's hands: undelivered, or pending.
    undecided = bus.undecided_trajectories(groups)
    if lost := sorted(ledger.queued - undecided):
        ledger.problems.append(f"produced, acknowledged, but neither trained nor dropped (lost): {lost[:5]}")

    for name, expected in (("trained_groups_total", len(ledger.trained)), ("dropped_stale_total", len(ledger.stale))):
        got = ledger.metrics_totals.get(name)
        if got is not None and got != expected:
            ledger.problems.append(f"metrics.jsonl says {name} = {got}, the ledger {expected}")

    _reconcile_tasks(ledger, bus)
    return ledger


def _reconcile_tasks(ledger: Ledger, bus: LedgerQueries) -> None:
    ledger.issued = bus.issued_total()
    tasks = bus.task_ids()
    dead = {gid for _, gid in bus.dead_task_ids()}
    ledger.tasks_dead = len(dead)
    issued_ids = {gid for _, gid in tasks}
    waiting = bus.undecided_tasks(tasks) - ledger.produced - dead
    ledger.tasks_waiting = len(waiting)
    if len(issued_ids) != ledger.issued:
        ledger.problems.append(
            f"the feeder counts {ledger.issued} tasks issued, the tasks stream holds {len(issued_ids)}"
        )
    if lost := sorted(issued_ids - ledger.produced - dead - waiting):
        ledger.problems.append(f"tasks acknowledged without a group or a dead letter (lost): {lost[:5]}")


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
