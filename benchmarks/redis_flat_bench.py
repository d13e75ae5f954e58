"""Redis that stays flat: a long run of the default job, Redis memory and the learner's memory every 50 steps.

A real ``prefix-rft run`` (redis-server, reward service, one rollout worker, DeepSpeed learner, separate
processes) on the built-in model and task, without evaluation. While it trains, a poller reads the run's
Redis (INFO memory ``used_memory``, the streams' lengths, the append-once ids remembered) and the
learner's resident memory (RSS) and keeps one row at the first step, then every ``--every`` steps. After
the run the ledger is reconciled against the run's append-only file.

    .venv/bin/python benchmarks/redis_flat_bench.py [--steps 300] [--every 50] [--out runs/redis-flat-bench]

Writes ``redis_flat.json`` and ``redis_flat.png`` in the output directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import psutil
import yaml
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from launcher.ledger import reconcile_stopped_run
from launcher.run import RunOptions, run_job
from shared.bus import Keys, connect, footprint
from shared.records import metrics_file

POLL_S = 1.0


class Row(BaseModel):
    step: int
    elapsed_s: float
    redis_used_mb: float
    learner_rss_mb: float
    tasks_entries: int
    trajectories_entries: int
    produced_ids_remembered: int


class Poller(threading.Thread):
    """Samples the run while it trains; a row at step 1 and each multiple of ``every``."""

    def __init__(self, run_dir: Path, every: int):
        super().__init__(daemon=True)
        self.run_dir = run_dir
        self.every = every
        self.rows: list[Row] = []
        self.peak_entries = 0
        self.stop_event = threading.Event()
        self.started = time.monotonic()

    def run(self) -> None:
        client, keys, learner = None, None, None
        next_step = 1
        while not self.stop_event.wait(POLL_S):
            try:
                if client is None:
                    client, keys = self._connect()
                    if client is None:
                        continue
                if learner is None:
                    learner = self._learner()
                    if learner is None:
                        continue
                last = metrics_file(self.run_dir / "learner").last()
                if last is None or last.step < next_step:
                    continue
                seen = footprint(client, keys)
                self.peak_entries = max(self.peak_entries, seen.tasks + seen.trajectories)
                row = Row(
                    step=last.step, elapsed_s=time.monotonic() - self.started,
                    redis_used_mb=seen.used_memory / 2**20, learner_rss_mb=learner.memory_info().rss / 2**20,
                    tasks_entries=seen.tasks, trajectories_entries=seen.trajectories,
                    produced_ids_remembered=seen.produced_recent,
                )
                self.rows.append(row)
                print(f"[redis-flat] {row.model_dump_json()}", file=sys.stderr, flush=True)
                next_step = (last.step // self.every + 1) * self.every
            except (psutil.Error, OSError, ValueError) as exc:
                print(f"[redis-flat] poll failed: {exc}", file=sys.stderr, flush=True)
            except Exception as exc:  # Redis going away at the end of the run
                print(f"[redis-flat] poll failed: {exc!r}", file=sys.stderr, flush=True)
                client = None

    def _connect(self):
        job = self.run_dir / "job.yaml"
        if not job.is_file():
            return None, None
        redis = yaml.safe_load(job.read_text()).get("redis", {})
        if not redis.get("url") or not (self.run_dir / "processes.json").is_file():
            return None, None
        return connect(redis["url"], reconnect=False), Keys(redis["namespace"])

    def _learner(self) -> psutil.Process | None:
        path = self.run_dir / "processes.json"
        if not path.is_file():
            return None
        pid = next((p["pid"] for p in json.loads(path.read_text()) if p["name"] == "learner"), None)
        return psutil.Process(pid) if pid is not None else None


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r.step for r in rows]
    fig, (ax_mem, ax_entries) = plt.subplots(1, 2, figsize=(11, 4))
    ax_mem.plot(steps, [r.redis_used_mb for r in rows], marker="o", label="Redis used_memory")
    ax_mem.plot(steps, [r.learner_rss_mb for r in rows], marker="s", label="learner RSS")
    ax_mem.set(xlabel="step", ylabel="MiB", title="memory during the run", ylim=(0, None))
    ax_mem.legend()
    ax_entries.plot(steps, [r.tasks_entries for r in rows], marker="o", label="tasks stream")
    ax_entries.plot(steps, [r.trajectories_entries for r in rows], marker="s", label="trajectories stream")
    ax_entries.plot(steps, [r.produced_ids_remembered for r in rows], marker="^", label="append-once ids")
    ax_entries.set(xlabel="step", ylabel="entries", title="what Redis holds", ylim=(0, None))
    ax_entries.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/redis-flat-bench"))
    args = parser.parse_args(argv)
    if args.steps < 1 or args.every < 1:
        parser.error(f"--steps {args.steps} and --every {args.every} must be at least 1")
    run_dir = args.out / "run"
    if run_dir.exists():
        parser.error(f"{run_dir} exists: pass another --out")

    poller = Poller(run_dir, args.every)
    poller.start()
    started = time.monotonic()
    run_job(RunOptions(steps=args.steps, seed=args.seed, out=run_dir, evaluate=False), Console(stderr=True))
    poller.stop_event.set()
    poller.join()
    wall = time.monotonic() - started
    ledger = reconcile_stopped_run(run_dir)

    rows = poller.rows
    table = Table(title=f"{args.steps}-step default job: memory every {args.every} steps ({wall:.0f} s)")
    for column in ("step", "elapsed s", "Redis used MiB", "learner RSS MiB", "tasks entries", "trajectories entries",
                   "append-once ids"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(str(r.step), f"{r.elapsed_s:.0f}", f"{r.redis_used_mb:.2f}", f"{r.learner_rss_mb:.0f}",
                      str(r.tasks_entries), str(r.trajectories_entries), str(r.produced_ids_remembered))
    console = Console()
    console.print(table)
    console.print(ledger.render())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "redis_flat.json").write_text(json.dumps(
        {"steps": args.steps, "wall_s": wall, "rows": [r.model_dump() for r in rows], "ledger_ok": ledger.ok,
         "ledger": dict(ledger.rows()), "problems": ledger.problems}, indent=2))
    if rows:
        plot(rows, args.out / "redis_flat.png")
    print(f"figures: {args.out / 'redis_flat.json'} and {args.out / 'redis_flat.png'}")
    return 0 if ledger.ok else 1


if __name__ == "__main__":
    sys.exit(main())
