"""End to end: a real ``prefix-rft run`` reporting to tensorboard, mlflow and wandb offline (the
custom-task guide's run, shared with tests/e2e/test_custom_task.py); what the trackers got is read back
with their own readers (tensorboard's EventAccumulator, mlflow's client on the file store, wandb's
record schema on the offline run directory) and compared with the run's own records (metrics.jsonl,
report.json)."""

from __future__ import annotations

import pytest

from tests.helpers import trackers as read

# One short job, but every process is real and the evaluations run before, during and after it.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

SPLIT = "held-out"  # the run evaluates on rows of its data file held out of training


def test_tensorboard_gets_every_step_record_the_job_config_and_completions(guide_run):
    out, steps, report = guide_run.out, guide_run.steps, guide_run.report
    run = read.tensorboard_run(out / "tracking" / "tensorboard" / "my-task")
    assert read.tensorboard_scalars(run, "train/reward_mean") == pytest.approx(
        {s.step: s.reward_mean for s in steps}
    )
    assert sorted(read.tensorboard_scalars(run, "train/loss")) == [1, 2, 3]
    hparams = read.tensorboard_hparams(run)
    assert hparams["learner.total_steps"] == 3 and hparams["learner.batch_prompts"] == 4
    assert hparams["learner.tracking.report_to"] == "['tensorboard', 'mlflow', 'wandb']"
    assert not [key for key in hparams if key.startswith("auth")]  # the bearer token stays out
    tables = read.tensorboard_table(run, "samples/text_summary")
    assert sorted(tables) == [1, 3]  # step 1, then every 2 steps
    assert len(tables[1]) == 8
    assert list(tables[1][0]) == ["prompt", "prefix_len", "response", "reward", "kind", "verifier"]
    assert {row["kind"] for rows in tables.values() for row in rows} <= {"on_policy", "hybrid"}

    evaluation = read.tensorboard_run(out / "tracking" / "tensorboard" / "my-task-eval")
    accuracy = read.tensorboard_scalars(evaluation, f"eval/{SPLIT}/greedy_accuracy")
    assert accuracy[0] == pytest.approx(report.accuracy_before[SPLIT])
    assert accuracy[3] == pytest.approx(report.accuracy_after[SPLIT])
    # The evaluations during training, as the report has them. How many there are depends on the
    # machine: one is skipped when the learner's last step comes before the launcher sees step 2.
    during = {p.step: p.greedy_accuracy for p in report.accuracy_curve if p.split == SPLIT}
    assert {step: value for step, value in accuracy.items() if step not in (0, 3)} == pytest.approx(during)


def test_mlflow_file_store_gets_the_same_run(guide_run):
    out, steps, report = guide_run.out, guide_run.steps, guide_run.report
    client, run = read.mlflow_run((out / "tracking" / "mlruns").as_uri(), "prefix-rft", "my-task")
    history = client.get_metric_history(run.info.run_id, "train/tokens")
    assert {(m.step, m.value) for m in history} == {(s.step, s.tokens) for s in steps}
    assert run.data.params["learner.total_steps"] == "3" and run.data.params["learner.algorithm.name"] == "prefix-rft"
    assert run.info.status == "FINISHED"
    _, evaluation = read.mlflow_run((out / "tracking" / "mlruns").as_uri(), "prefix-rft", "my-task-eval")
    assert evaluation.data.metrics[f"eval/{SPLIT}/greedy_accuracy"] == pytest.approx(report.accuracy_after[SPLIT])
    assert evaluation.data.tags["group"] == "my-task"


def _wandb_run(out, name: str):
    """The offline run directory whose run record is called ``name``, and its records."""
    for run_dir in (out / "tracking" / "wandb").glob("offline-run-*"):
        records = read.wandb_offline_records(run_dir)
        if records["run"][0].run.display_name == name:
            return run_dir, records
    raise AssertionError(f"no offline wandb run {name!r} under {out / 'tracking' / 'wandb'}")


def test_wandb_offline_run_directory_gets_the_same_run(guide_run):
    out, steps, report = guide_run.out, guide_run.steps, guide_run.report
    run_dir, records = _wandb_run(out, "my-task")
    assert records["run"][0].run.run_group == "my-task"
    history = read.wandb_history(records)
    losses = {row["_step"]: row["train/loss"] for row in history if "train/loss" in row}
    assert losses == pytest.approx({s.step: s.loss for s in steps})
    config = read.wandb_config(records)
    assert config["learner"]["total_steps"] == 3 and "auth" not in config
    tables = [row for row in history if "samples/path" in row]
    assert [row["_step"] for row in tables] == [1, 3]
    assert (run_dir / "files" / tables[0]["samples/path"]).is_file()
    _, evaluation = _wandb_run(out, "my-task-eval")
    after = {row["_step"]: row for row in read.wandb_history(evaluation) if f"eval/{SPLIT}/greedy_accuracy" in row}
    assert after[3][f"eval/{SPLIT}/greedy_accuracy"] == pytest.approx(report.accuracy_after[SPLIT])
