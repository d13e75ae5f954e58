"""Each tracker backend with its real client, writing under tmp_path, read back with that tracker's
own reader: hyper-parameters (the job config), step metrics, and the completions table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.tracking import TrackerUnavailable, TrackingSettings, open_trackers
from shared.tracking.base import require
from tests.helpers import trackers as read

pytestmark = pytest.mark.integration

PARAMS = {"learner": {"optimizer": {"lr": 0.0002}, "batch_prompts": 4, "algorithm": {"name": "prefix-rft"}},
          "reward": {"workers": 2}}
COLUMNS = ["prompt", "prefix_len", "response", "reward", "kind"]
ROWS = [["1+2=?", 0, "It is \\boxed{3}", 1.0, "on_policy"], ["1+2=?", 5, "so | 4", 0.0, "hybrid"]]


def _log(settings: TrackingSettings, default_dir: Path) -> None:
    trackers = open_trackers(settings, "job-1", "job", default_dir, PARAMS)
    for step in (1, 2, 3):  # as the learner logs: a step's metrics, then its table if it has one
        trackers.log_metrics({"train/loss": 1.0 / step, "train/reward_mean": 0.25 * step}, step)
        if step == 1:
            trackers.log_table("samples", COLUMNS, ROWS, step)
    trackers.close()


def test_tensorboard(tmp_path):
    _log(TrackingSettings(report_to=["tensorboard"], dir=tmp_path), tmp_path)
    run = read.tensorboard_run(tmp_path / "tensorboard" / "job-1")
    assert read.tensorboard_scalars(run, "train/loss") == pytest.approx({1: 1.0, 2: 0.5, 3: 1 / 3})
    assert read.tensorboard_hparams(run) == {
        "learner.optimizer.lr": 0.0002, "learner.batch_prompts": 4, "learner.algorithm.name": "prefix-rft",
        "reward.workers": 2,
    }
    table = read.tensorboard_text(run, "samples/text_summary")[1]
    assert table.splitlines()[0] == "| prompt | prefix_len | response | reward | kind |"
    assert "| 1+2=? | 5 | so \\| 4 | 0.0 | hybrid |" in table


def test_mlflow_file_store(tmp_path):
    _log(TrackingSettings(report_to=["mlflow"], dir=tmp_path, project="exp"), tmp_path)
    client, run = read.mlflow_run((tmp_path / "mlruns").as_uri(), "exp", "job-1")
    assert run.data.params["learner.optimizer.lr"] == "0.0002" and run.data.params["reward.workers"] == "2"
    history = client.get_metric_history(run.info.run_id, "train/reward_mean")
    assert {(m.step, m.value) for m in history} == {(1, 0.25), (2, 0.5), (3, 0.75)}
    assert run.data.tags["group"] == "job" and run.info.status == "FINISHED"
    path = client.download_artifacts(run.info.run_id, "samples/step_000001.json", str(tmp_path / "download"))
    table = json.loads(open(path).read())  # mlflow's table artifact: {"columns": [...], "data": [[...], ...]}
    assert table["columns"] == COLUMNS and table["data"] == ROWS


def test_wandb_offline(tmp_path):
    _log(TrackingSettings(report_to=["wandb"], dir=tmp_path, project="proj", wandb_mode="offline"), tmp_path)
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    records = read.wandb_offline_records(run_dir)
    (run,) = records["run"]
    assert (run.run.project, run.run.display_name, run.run.run_group) == ("proj", "job-1", "job")
    config = read.wandb_config(records)
    assert config["learner"] == PARAMS["learner"] and config["reward"] == PARAMS["reward"]
    history = read.wandb_history(records)
    losses = {row["_step"]: row["train/loss"] for row in history if "train/loss" in row}
    assert losses == pytest.approx({1: 1.0, 2: 0.5, 3: 1 / 3})
    (table_ref,) = [row for row in history if "samples/path" in row]
    table = json.loads((run_dir / "files" / table_ref["samples/path"]).read_text())
    assert table["columns"] == COLUMNS and table["data"] == ROWS


def test_trackio_local_store(tmp_path):
    from trackio.sqlite_storage import SQLiteStorage

    _log(TrackingSettings(report_to=["trackio"], project="prft-test-" + tmp_path.name), tmp_path)
    project = "prft-test-" + tmp_path.name
    try:
        logs = SQLiteStorage.get_logs(project, "job-1")
        losses = {row["step"]: row["train/loss"] for row in logs if "train/loss" in row}
        assert losses == pytest.approx({1: 1.0, 2: 0.5, 3: 1 / 3})
        (table,) = [row["samples"]["_value"] for row in logs if "samples" in row]
        assert [[r[c] for c in COLUMNS] for r in table] == ROWS
        config = SQLiteStorage.get_run_config(project, "job-1")
        assert config["learner"] == PARAMS["learner"] and config["_Group"] == "job"
    finally:  # trackio's store is one directory for every project ($TRACKIO_DIR): leave nothing in it
        db = SQLiteStorage.get_project_db_path(project)
        for path in db.parent.glob(f"{project}.*"):
            path.unlink()


def test_a_missing_package_names_the_pip_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    with pytest.raises(TrackerUnavailable, match=r"--report-to wandb needs the 'wandb' package: pip install wandb"):
        require("wandb")
