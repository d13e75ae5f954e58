"""End to end: ``prefix-rft run --report-to tensorboard,mlflow`` on real processes; what the trackers got
is read back with their own readers (tensorboard's EventAccumulator, mlflow's client on the file store)
and compared with the run's own records (metrics.jsonl, report.json, job.yaml)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import trackers as read
from tests.helpers.jobs import SMALL_JOB

# One short job, but every process is real and the evaluations run before, during and after it.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, default_base_dir):
    root = tmp_path_factory.mktemp("tracked")
    config = root / "small.yaml"
    config.write_text(SMALL_JOB)
    out = root / "job-1"
    args = ["run", "--steps", "3", "--eval-problems", "4", "--eval-every", "2", "--config", str(config),
            "--out", str(out), "--report-to", "tensorboard,mlflow", "--set", "learner.tracking.samples_every=2"]
    done = subprocess.run([sys.executable, "-m", "launcher.cli", *args], capture_output=True, text=True, timeout=1400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    steps = [json.loads(line) for line in (out / "learner" / "metrics.jsonl").read_text().splitlines()]
    report = json.loads((out / "report.json").read_text())
    return out, steps, report


def test_tensorboard_gets_every_step_record_the_job_config_and_completions(tracked_run):
    out, steps, report = tracked_run
    run = read.tensorboard_run(out / "tracking" / "tensorboard" / "job-1")
    assert read.tensorboard_scalars(run, "train/reward_mean") == pytest.approx(
        {s["step"]: s["reward_mean"] for s in steps}
    )
    assert sorted(read.tensorboard_scalars(run, "train/loss")) == [1, 2, 3]
    hparams = read.tensorboard_hparams(run)
    assert hparams["learner.total_steps"] == 3 and hparams["learner.batch_prompts"] == 4
    assert hparams["learner.tracking.report_to"] == "['tensorboard', 'mlflow']"
    assert not [key for key in hparams if key.startswith("auth")]  # the bearer token stays out
    tables = read.tensorboard_text(run, "samples/text_summary")
    assert sorted(tables) == [1, 3]  # step 1, then every 2 steps
    lines = tables[1].splitlines()
    assert lines[0] == "| prompt | prefix_len | response | reward | kind |" and len(lines) == 2 + 8
    assert {line.rsplit("|", 2)[1].strip() for line in lines[2:]} <= {"on_policy", "hybrid"}

    evaluation = read.tensorboard_run(out / "tracking" / "tensorboard" / "job-1-eval")
    accuracy = read.tensorboard_scalars(evaluation, "eval/id/greedy_accuracy")
    assert accuracy[0] == pytest.approx(report["accuracy_before"]["id"])
    assert accuracy[3] == pytest.approx(report["accuracy_after"]["id"])
    assert 2 in accuracy  # the evaluation during training


def test_mlflow_file_store_gets_the_same_run(tracked_run):
    out, steps, report = tracked_run
    client, run = read.mlflow_run((out / "tracking" / "mlruns").as_uri(), "prefix-rft", "job-1")
    history = client.get_metric_history(run.info.run_id, "train/tokens")
    assert {(m.step, m.value) for m in history} == {(s["step"], s["tokens"]) for s in steps}
    assert run.data.params["learner.total_steps"] == "3" and run.data.params["learner.algorithm.name"] == "prefix-rft"
    assert run.info.status == "FINISHED"
    _, evaluation = read.mlflow_run((out / "tracking" / "mlruns").as_uri(), "prefix-rft", "job-1-eval")
    assert evaluation.data.metrics["eval/ood/greedy_accuracy"] == pytest.approx(report["accuracy_after"]["ood"])
    assert evaluation.data.tags["group"] == "job-1"
