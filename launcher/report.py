"""The run report: ``report.json``, ``curves.png`` and the closing table printed to the terminal."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from launcher.evaluate import EvalResult
from launcher.pipeline import PipelineStats
from shared.records import StepRecord


class AccuracyPoint(BaseModel):
    step: int
    model_version: int
    split: str
    greedy_accuracy: float


class RunReport(BaseModel):
    algorithm: str
    seed: int
    steps: int
    model: str
    # The base's weights_digest: a comparison refuses to put runs from different bases side by side.
    model_digest: str | None = None
    data: str
    wall_time_s: float
    train_time_s: float
    tokens_per_s: float  # generated tokens per second of training wall time
    dropped_stale_groups: int
    trained_groups: int
    accuracy_before: dict[str, float]  # split -> greedy accuracy
    accuracy_after: dict[str, float]
    evaluation_before: dict[str, EvalResult]
    evaluation_after: dict[str, EvalResult]
    accuracy_curve: list[AccuracyPoint] = Field(default_factory=list)
    pipeline: PipelineStats | None = None  # how generation and training overlapped
    run_dir: str


def write_report(report: RunReport, metrics: list[StepRecord], run_dir: Path) -> Path:
    (run_dir / "report.json").write_text(report.model_dump_json(indent=2))
    plot_curves(metrics, report, run_dir / "curves.png")
    return run_dir / "report.json"


def plot_curves(metrics: list[StepRecord], report: RunReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_reward, ax_acc, ax_prefix) = plt.subplots(1, 3, figsize=(15, 4.2))
    steps = [m.step for m in metrics]
    for reward, label in (
        (lambda m: m.reward_mean, "all rollouts"),
        (lambda m: m.reward_on_policy, "on-policy"),
        (lambda m: m.reward_hybrid, "hybrid (prefix)"),
    ):
        points = [(m.step, reward(m)) for m in metrics if reward(m) is not None]
        if points:
            ax_reward.plot(*zip(*points), label=label, marker=".")
    ax_reward.set(title="training reward", xlabel="step", ylabel="mean reward", ylim=(-0.02, 1.02))
    if not _legend(ax_reward):  # SFT samples nothing: say so on the panel rather than leave it blank
        ax_reward.text(0.5, 0.5, "no rollouts (SFT)", ha="center", va="center", transform=ax_reward.transAxes)

    for split in sorted({p.split for p in report.accuracy_curve}):
        points = [(p.step, p.greedy_accuracy) for p in report.accuracy_curve if p.split == split]
        ax_acc.plot(*zip(*points), label=split, marker="o")
    for value in report.accuracy_before.values():
        ax_acc.scatter([0], [value], marker="x", color="grey")
    for split, value in report.accuracy_after.items():
        ax_acc.scatter([report.steps], [value], marker="*", s=120, label=f"{split} final")
    ax_acc.set(title="greedy accuracy", xlabel="step", ylabel="accuracy", ylim=(-0.02, 1.02))
    _legend(ax_acc)

    lows = [m.prefix_ratio_low for m in metrics]
    highs = [m.prefix_ratio_high for m in metrics]
    if steps:
        ax_prefix.fill_between(steps, lows, highs, alpha=0.3, label="range")
        ax_prefix.plot(steps, lows, label="low_t")
    shares = [(m.step, m.prefix_token_share) for m in metrics if m.prefix_token_share is not None]
    if shares:
        ax_prefix.plot(*zip(*shares), label="prefix-token share", linestyle="--")
    ax_prefix.set(title="prefix ratio", xlabel="step", ylim=(0, 1))
    _legend(ax_prefix)

    fig.suptitle(f"{report.algorithm} (seed {report.seed}, {report.steps} steps)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _legend(ax) -> bool:
    """A legend where the panel has labelled lines (matplotlib warns on an empty one); whether it had."""
    if not ax.get_legend_handles_labels()[0]:
        return False
    ax.legend()
    return True


def print_summary(report: RunReport, console: Console) -> None:
    table = Table(title=f"{report.algorithm}: {report.steps} steps in {report.wall_time_s:.0f} s")
    table.add_column("split")
    table.add_column("greedy before", justify="right")
    table.add_column("greedy after", justify="right")
    table.add_column("avg@k after", justify="right")
    for split, after in report.evaluation_after.items():
        before = report.accuracy_before.get(split)
        table.add_row(
            split,
            "-" if before is None else f"{before:.3f}",
            f"{after.greedy_accuracy:.3f}",
            "-" if after.avg_at_k is None else f"{after.avg_at_k:.3f}",
        )
    console.print(table)
    if report.pipeline is not None:
        pipe = report.pipeline
        console.print(
            f"per step: {pipe.step_wall_s:.2f} s wall · generate {pipe.worker_busy_s:.2f} s · "
            f"train {pipe.learner_train_s:.2f} s · learner waited {pipe.learner_wait_s:.2f} s · "
            f"speed-up {pipe.achieved_speedup:.2f} of ideal {pipe.ideal_speedup:.2f}"
        )
    console.print(
        f"tokens/s {report.tokens_per_s:.0f} · trained groups {report.trained_groups} · "
        f"dropped stale groups {report.dropped_stale_groups} · report {report.run_dir}/report.json"
    )
