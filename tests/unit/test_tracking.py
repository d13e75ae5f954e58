"""What the learner and the launcher hand the trackers: settings, step metrics, completions tables."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.learner.settings import LearnerSettings
from services.learner.tracking import (
    SAMPLE_COLUMNS,
    StepTracking,
    hyper_parameters,
    run_name,
    sample_rows,
    step_metrics,
)
from shared.messages import RolloutKind, Trajectory, TrajectoryGroup
from shared.tracking import Tracker, Trackers, TrackingSettings, flatten
from tests.helpers.records import step_record


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("none", []),
        ([], []),
        ("tensorboard", ["tensorboard"]),
        ("tensorboard, MLflow", ["tensorboard", "mlflow"]),
        (["wandb", "trackio", "wandb"], ["wandb", "trackio"]),
    ],
)
def test_report_to_takes_names_lists_and_none(given, expected):
    assert TrackingSettings(report_to=given).report_to == expected
    assert LearnerSettings(report_to=given).tracking.report_to == expected  # learner.report_to, as TRL's


@pytest.mark.parametrize(("given", "message"), [("tensorbored", "unknown tracker 'tensorbored'"),
                                                ("none,wandb", "'none' cannot be combined")])
def test_bad_tracker_names_are_refused_naming_them(given, message):
    with pytest.raises(ValidationError, match=message):
        LearnerSettings(report_to=given)


def test_the_command_lines_report_to_wins_over_the_job_files_shorthand(tmp_path):
    """`learner.report_to` in a job file is short for learner.tracking.report_to, which --report-to and
    PRFT_LEARNER__TRACKING__REPORT_TO set: the shorthand must not hide them."""
    from launcher.cli import with_report_to
    from launcher.config import JobConfig

    job_file = tmp_path / "job.yaml"
    job_file.write_text("learner:\n  report_to: [tensorboard]\n")
    assert JobConfig.load(job_file).learner.tracking.report_to == ["tensorboard"]
    flagged = JobConfig.load(job_file, sets=with_report_to({}, "mlflow,wandb"))
    assert flagged.learner.tracking.report_to == ["mlflow", "wandb"]


def test_no_tracker_by_default():
    assert LearnerSettings().tracking.report_to == []


def test_step_metrics_are_every_number_of_the_record_under_train():
    record = step_record(7, loss=0.5, reward_mean=0.25, staleness_hist={"0": 3, "1": 1}, sft=True)
    metrics = step_metrics(record)
    assert metrics["train/loss"] == 0.5 and metrics["train/reward_mean"] == 0.25
    assert metrics["train/staleness_hist/1"] == 1.0 and metrics["train/sft"] == 1.0
    assert "train/step" not in metrics and "train/time" not in metrics and "train/pg_loss" not in metrics


def _traj(kind: RolloutKind, prefix: int, reward: float, text: str) -> Trajectory:
    n = prefix + 2
    return Trajectory(kind=kind, response_token_ids=list(range(n)), prefix_len=prefix,
                      behaviour_logprobs=[-1.0] * (n - prefix), policy_version=0, reward=reward, correct=reward > 0,
                      text=text)


GROUPS = [
    TrajectoryGroup(id=f"g{g}", prompt_id="p", issued_at_version=0, step=0, worker_id="w", prompt_token_ids=[g, 9],
                    trajectories=[_traj(RolloutKind.on_policy, 0, 1.0, f"a{g}"),
                                  _traj(RolloutKind.hybrid, 3, 0.0, f"b{g}")])
    for g in range(3)
]


def test_sample_rows_hold_the_prompt_prefix_length_response_reward_kind_and_verifier():
    rows = sample_rows(GROUPS, lambda ids: f"prompt{ids}", limit=3)
    assert SAMPLE_COLUMNS == ["prompt", "prefix_len", "response", "reward", "kind", "verifier"]
    assert rows == [["prompt[0, 9]", 0, "a0", 1.0, "on_policy", "math"],
                    ["prompt[0, 9]", 3, "b0", 0.0, "hybrid", "math"],
                    ["prompt[1, 9]", 0, "a1", 1.0, "on_policy", "math"]]


class Recorder(Tracker):
    def __init__(self):
        self.metrics, self.tables = [], []

    def log_params(self, params):
        pass

    def log_metrics(self, metrics, step):
        self.metrics.append(step)

    def log_table(self, key, columns, rows, step):
        self.tables.append((key, step, len(rows)))

    def close(self):
        pass


def test_every_step_is_logged_and_a_table_at_step_1_then_every_samples_every():
    recorder = Recorder()
    tracking = StepTracking(Trackers([recorder]), str, samples_every=3, samples_per_step=4)
    for step in range(1, 8):
        tracking(step_record(step), GROUPS)
    tracking(step_record(8, sft=True), [])  # an SFT step samples nothing
    assert recorder.metrics == list(range(1, 9))
    assert recorder.tables == [("samples", 1, 4), ("samples", 4, 4), ("samples", 7, 4)]


def test_the_run_is_named_after_the_job_and_the_token_stays_out(tmp_path):
    settings = LearnerSettings(run_dir=tmp_path / "20260101-prefix-rft-s0" / "learner")
    assert run_name(settings) == "20260101-prefix-rft-s0"
    assert run_name(settings.model_copy(update={"tracking": TrackingSettings(run_name="mine")})) == "mine"
    job = tmp_path / "job.yaml"
    job.write_text("auth: {token: secret}\nlearner: {batch_prompts: 4}\nreward: {workers: 2}\n")
    params = hyper_parameters(settings.model_copy(update={"batch_prompts": 4, "mini_batch_prompts": 4}), job)
    assert set(params) == {"learner", "reward", "redis"} and params["reward"] == {"workers": 2}
    assert params["learner"]["batch_prompts"] == 4 and params["learner"]["total_steps"] == 500  # as resolved
    assert not [key for key in flatten(params) if key.startswith(("auth", "learner.auth"))]


@pytest.mark.parametrize("command", ["run", "compare", "learner"])
def test_report_to_on_each_command_names_a_bad_tracker(command, tmp_path):
    from typer.testing import CliRunner

    from launcher.cli import app

    out = tmp_path / "out"
    args = [command, "--report-to", "tensorbored"] + (["--out", str(out)] if command != "learner" else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "unknown tracker 'tensorbored'" in result.output, result.output
    assert isinstance(result.exception, SystemExit) and not out.exists()


@pytest.mark.parametrize("command", ["run", "learner"])
def test_a_missing_tracker_package_stops_the_command_naming_the_pip_install(command, tmp_path, monkeypatch):
    import sys

    from typer.testing import CliRunner

    from launcher.cli import app

    monkeypatch.setitem(sys.modules, "trackio", None)  # as if it were not installed
    out = tmp_path / "out"
    args = [command, "--report-to", "trackio"] + (["--out", str(out)] if command == "run" else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "pip install trackio" in result.output, result.output
    assert not out.exists()
