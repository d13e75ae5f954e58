"""Evaluation results for the trackers of ``learner.tracking``: ``prefix-rft run`` logs each run's
evaluations (before, during and after training) in a run ``<job>-eval`` beside the learner's ``<job>``,
and ``prefix-rft compare`` the comparison's table in a run ``<comparison>-compare``."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from launcher.config import JobConfig
from launcher.evaluate import EvalResult
from launcher.report import RunReport
from services.learner.tracking import run_name
from shared.settings import SettingsError
from shared.tracking import TrackerUnavailable, TrackingSettings, check_available, open_trackers

EVAL_COLUMNS = ["split", "when", "step", "greedy_accuracy", "avg_at_k", "pass_at_k", "k", "mean_response_tokens"]


def check_trackers(tracking: TrackingSettings) -> None:
    """Before a job starts anything: a tracker whose package is missing is a settings error naming it."""
    try:
        check_available(tracking.report_to)
    except TrackerUnavailable as exc:
        raise SettingsError(str(exc)) from None


def job_parameters(job: JobConfig) -> dict[str, Any]:
    """The job config as hyper-parameters, without the bearer token."""
    return {section: value for section, value in job.document().items() if section != "auth"}


def _eval_metrics(result: EvalResult) -> dict[str, float]:
    prefix = f"eval/{result.split}"
    metrics = {f"{prefix}/greedy_accuracy": result.greedy_accuracy,
               f"{prefix}/mean_response_tokens": result.mean_response_tokens}
    if result.avg_at_k is not None:
        metrics[f"{prefix}/avg_at_{result.k}"] = result.avg_at_k
    if result.pass_at_k is not None:
        metrics[f"{prefix}/pass_at_{result.k}"] = result.pass_at_k
    return metrics


def _row(result: EvalResult, when: str, step: int) -> list[Any]:
    return [result.split, when, step, result.greedy_accuracy, result.avg_at_k, result.pass_at_k, result.k,
            result.mean_response_tokens]


def log_evaluation(job: JobConfig, report: RunReport) -> None:
    """The run's evaluations, at the step each was taken (0: before training), and one table of them."""
    tracking = job.learner.tracking
    if not tracking.report_to:
        return
    name = run_name(job.learner)
    by_step: dict[int, dict[str, float]] = defaultdict(dict)
    for result in report.evaluation_before.values():
        by_step[0].update(_eval_metrics(result))
    for point in report.accuracy_curve:
        by_step[point.step][f"eval/{point.split}/greedy_accuracy"] = point.greedy_accuracy
    for result in report.evaluation_after.values():
        by_step[report.steps].update(_eval_metrics(result))
    rows = [_row(r, "before", 0) for r in report.evaluation_before.values()]
    rows += [_row(r, "after", report.steps) for r in report.evaluation_after.values()]
    trackers = open_trackers(tracking, f"{name}-eval", name, job.learner.run_dir / "tracking", job_parameters(job))
    try:
        for step in sorted(by_step):  # in order: wandb drops a step logged after a later one
            trackers.log_metrics(by_step[step], step)
        if rows:
            trackers.log_table("evaluation", EVAL_COLUMNS, rows, report.steps)
    finally:
        trackers.close()


def log_comparison(job: JobConfig, out: Path, summaries: list, steps: int) -> None:
    """A comparison's final accuracies per variant (mean and spread over seeds) as one table."""
    tracking = job.learner.tracking
    if not tracking.report_to:
        return
    columns = ["variant", "label", "split", "greedy_mean", "greedy_std", "seeds"]
    rows = [
        [s.variant, s.label, split, spread.mean, spread.std, len(spread.values)]
        for s in summaries
        for split, spread in s.greedy.items()
    ]
    metrics = {f"compare/{row[0]}/{row[2]}/greedy": row[3] for row in rows}
    name = out.resolve().name
    trackers = open_trackers(tracking, f"{name}-compare", name, out / "tracking", job_parameters(job))
    try:
        trackers.log_metrics(metrics, steps)
        trackers.log_table("comparison", columns, rows, steps)
    finally:
        trackers.close()
