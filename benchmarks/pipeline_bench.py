"""The asynchronous pipeline: the same job with max_staleness 0 (synchronous), 1 and 2.

Each run is a real ``prefix-rft run`` (redis-server, reward service, one rollout worker, DeepSpeed
learner, all separate processes) on the built-in model and task, the same number of steps, no
evaluation. Figures per run, per step: wall time, the time the learner waited for trajectory groups,
the time the worker waited for weights (idle, no task in flight), T_generate (worker busy) and
T_train (train + publish), the ideal speed-up (T_generate + T_train) / max(T_generate, T_train) and
the achieved one (T_generate + T_train) / wall time, both measured in the same run, and the speed-up
against the synchronous run's wall time. Goal: at least 0.8 of the ideal at max_staleness 1.

    .venv/bin/python benchmarks/pipeline_bench.py [--steps 40] [--staleness 0 1 2] [--out runs/pipeline-bench]

Writes ``pipeline.json`` and ``pipeline.png`` in the output directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from launcher.pipeline import PipelineStats
from launcher.run import RunOptions, run_job
from shared.settings import dotted


def run_one(out: Path, staleness: int, steps: int, seed: int, pin_cores: bool) -> PipelineStats:
    out.mkdir(parents=True, exist_ok=True)
    options = RunOptions(
        steps=steps, seed=seed, sets=dotted({"learner.max_staleness": staleness}), out=out / "run", evaluate=False,
        pin_cores=pin_cores,
    )
    report = run_job(options, Console(stderr=True))
    if report.pipeline is None:
        raise RuntimeError(f"max_staleness {staleness}: the run recorded no pipeline figures")
    return report.pipeline


def plot(results: dict[int, PipelineStats], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"staleness {s}" for s in results]
    fig, (ax_time, ax_speed) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.2
    for offset, (key, label) in enumerate(
        (("step_wall_s", "wall"), ("worker_busy_s", "T_generate"), ("learner_train_s", "T_train"),
         ("learner_wait_s", "learner waits"))
    ):
        xs = [i + (offset - 1.5) * width for i in range(len(results))]
        ax_time.bar(xs, [getattr(r, key) for r in results.values()], width, label=label)
    ax_time.set_xticks(range(len(results)), labels)
    ax_time.set(ylabel="seconds per step", title="time per step")
    ax_time.legend()
    xs = range(len(results))
    ax_speed.bar([x - 0.15 for x in xs], [r.ideal_speedup for r in results.values()], 0.3, label="ideal")
    ax_speed.bar([x + 0.15 for x in xs], [r.achieved_speedup for r in results.values()], 0.3, label="achieved")
    ax_speed.axhline(1.0, color="grey", linewidth=0.8)
    ax_speed.set_xticks(list(xs), labels)
    ax_speed.set(ylabel="(T_generate + T_train) / time", title="speed-up over running the two in sequence")
    ax_speed.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--staleness", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/pipeline-bench"))
    parser.add_argument("--no-pin-cores", action="store_true", help="let every process use every core")
    args = parser.parse_args(argv)
    if args.steps < 3:
        parser.error(f"--steps {args.steps}: at least 3 steps are needed to measure a steady state")
    if any(s < 0 for s in args.staleness):
        parser.error(f"--staleness {args.staleness}: values must be >= 0")

    results = {
        s: run_one(args.out / f"staleness-{s}", s, args.steps, args.seed, not args.no_pin_cores)
        for s in args.staleness
    }
    sync = results.get(0)
    table = Table(title=f"asynchronous pipeline: {args.steps} steps per run, built-in model and task")
    for column in ("max_staleness", "wall s/step", "learner waits s/step", "worker waits s/step", "T_generate s",
                   "T_train s", "ideal speed-up", "achieved", "fraction of ideal", "vs staleness 0"):
        table.add_column(column, justify="right")
    for staleness, r in results.items():
        table.add_row(
            str(staleness), f"{r.step_wall_s:.2f}", f"{r.learner_wait_s:.2f}", f"{r.worker_idle_s:.2f}",
            f"{r.worker_busy_s:.2f}", f"{r.learner_train_s:.2f}", f"{r.ideal_speedup:.2f}",
            f"{r.achieved_speedup:.2f}", f"{r.fraction_of_ideal:.2f}",
            f"{sync.step_wall_s / r.step_wall_s:.2f}" if sync else "-",
        )
    Console().print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pipeline.json").write_text(
        json.dumps({str(s): r.model_dump() for s, r in results.items()}, indent=2)
    )
    plot(results, args.out / "pipeline.png")
    print(f"figures: {args.out / 'pipeline.json'} and {args.out / 'pipeline.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
