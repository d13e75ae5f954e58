"""Redis that stays flat: a long run of the default job, Redis memory and the learner's memory every 50 steps.

A real ``prefix-rft run`` (redis-server, reward service, one rollout worker, DeepSpeed learner, separate
processes) on the built-in model and task, without evaluation. While it trains, a poller reads the run's
Redis (INFO memory ``used_memory``, the streams' lengths, the append-once ids remembered) and the
learner's resident memory (RSS) and keeps one row at the first step, then every ``--every`` steps. After
the run the ledger is reconciled against the run's append-only file.

    .venv/bin/python benchmarks/redis_flat_bench.py [--steps 300] [--every 50] [--out runs/redis-flat-bench]

Writes ``rows.jsonl`` (each row as it is taken), ``redis_flat.json`` and ``redis_flat.png`` in the
output directory. Stopped early (Ctrl-C, SIGTERM) it stops the run cleanly and reports the rows so far;
``--report-only`` reports an earlier run of the same ``--out`` again (its rows and its ledger).
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
    # The most since the row before (sampled every poll): the streams fill between checkpoints, so a
    # row taken just after one shows the trough, this the crest.
    redis_peak_mb: float = 0.0
    learner_rss_mb: float
    tasks_entries: int
    trajectories_entries: int
    produced_ids_remembered: int


class Poller(threading.Thread):
    """Samples the run while it trains; a row at step 1 and each multiple of ``every``."""

    def __init__(self, run_dir: Path, every: int, rows_path: Path):
        super().__init__(daemon=True)
        self.run_dir = run_dir
        self.rows_path = rows_path
        self.every = every
        self.rows: list[Row] = []
        self.peak_used = 0
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
                seen = footprint(client, keys)
                self.peak_used = max(self.peak_used, seen.used_memory)
                last = metrics_file(self.run_dir / "learner").last()
                if last is None or last.step < next_step:
                    continue
                row = Row(
                    step=last.step, elapsed_s=time.monotonic() - self.started,
                    redis_used_mb=seen.used_memory / 2**20, redis_peak_mb=self.peak_used / 2**20,
                    learner_rss_mb=learner.memory_info().rss / 2**20,
                    tasks_entries=seen.tasks, trajectories_entries=seen.trajectories,
                    produced_ids_remembered=seen.produced_recent,
                )
                self.peak_used = 0
                self.rows.append(row)
                with self.rows_path.open("a") as handle:
                    handle.write(row.model_dump_json() + "\n")
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
    ax_mem.plot(steps, [r.redis_peak_mb for r in rows], marker="v", label="Redis peak since the row before")
    ax_mem.set(xlabel="step", ylabel="Redis MiB", title="memory during the run", ylim=(0, None))
    ax_rss = ax_mem.twinx()  # the learner's RSS is about a thousand times Redis's
    ax_rss.plot(steps, [r.learner_rss_mb for r in rows], marker="s", color="tab:green", label="learner RSS")
    ax_rss.set(ylabel="learner RSS MiB", ylim=(0, None))
    handles = ax_mem.get_legend_handles_labels()[0] + ax_rss.get_legend_handles_labels()[0]
    ax_mem.legend(handles=handles, loc="lower right")
    ax_entries.plot(steps, [r.tasks_entries for r in rows], marker="o", label="tasks stream")
    ax_entries.plot(steps, [r.trajectories_entries for r in rows], marker="s", label="trajectories stream")
    ax_entries.plot(steps, [r.produced_ids_remembered for r in rows], marker="^", label="append-once ids")
    ax_entries.set(xlabel="step", ylabel="entries", title="what Redis holds", ylim=(0, None))
    ax_entries.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(out: Path, rows: list[Row], steps: int, every: int, wall: float | None) -> bool:
    """Print the table and the ledger of ``out/run``; write the JSON and the plot. True if the ledger reconciles."""
    ledger = reconcile_stopped_run(out / "run")
    reached = rows[-1].step if rows else 0
    took = f", {wall:.0f} s" if wall is not None else ""
    table = Table(title=f"default job, {reached} of {steps} steps: memory every {every} steps{took}")
    for column in ("step", "elapsed s", "Redis used MiB", "Redis peak MiB since the row before", "learner RSS MiB",
                   "tasks entries", "trajectories entries", "append-once ids"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(str(r.step), f"{r.elapsed_s:.0f}", f"{r.redis_used_mb:.2f}", f"{r.redis_peak_mb:.2f}",
                      f"{r.learner_rss_mb:.0f}", str(r.tasks_entries), str(r.trajectories_entries),
                      str(r.produced_ids_remembered))
    console = Console()
    console.print(table)
    console.print(ledger.render())
    (out / "redis_flat.json").write_text(json.dumps(
        {"steps": steps, "reached": reached, "wall_s": wall, "rows": [r.model_dump() for r in rows],
         "ledger_ok": ledger.ok, "ledger": dict(ledger.rows()), "problems": ledger.problems}, indent=2))
    if rows:
        plot(rows, out / "redis_flat.png")
    print(f"figures: {out / 'redis_flat.json'} and {out / 'redis_flat.png'}")
    return ledger.ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/redis-flat-bench"))
    parser.add_argument("--report-only", action="store_true", help="report the run already in --out again")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.every < 1:
        parser.error(f"--steps {args.steps} and --every {args.every} must be at least 1")
    run_dir = args.out / "run"
    rows_path = args.out / "rows.jsonl"
    if args.report_only:
        if not rows_path.is_file():
            parser.error(f"--report-only: {rows_path} does not exist (run the benchmark first)")
        rows = [Row.model_validate_json(line) for line in rows_path.read_text().splitlines() if line.strip()]
        return 0 if report(args.out, rows, args.steps, args.every, None) else 1
    if run_dir.exists():
        parser.error(f"{run_dir} exists: pass another --out")

    args.out.mkdir(parents=True, exist_ok=True)
    poller = Poller(run_dir, args.every, rows_path)
    poller.start()
    started = time.monotonic()
    try:
        run_job(RunOptions(steps=args.steps, seed=args.seed, out=run_dir, evaluate=False), Console(stderr=True))
    except KeyboardInterrupt:
        print("stopped early: the run was stopped cleanly; reporting the rows so far", file=sys.stderr)
    poller.stop_event.set()
    poller.join()
    return 0 if report(args.out, poller.rows, args.steps, args.every, time.monotonic() - started) else 1


if __name__ == "__main__":
    sys.exit(main())
