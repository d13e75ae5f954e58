"""The end-to-end tests' one shared training run: docs/custom-task.md followed as written (a verifier
package installed editable, a data file with mapped columns whose rows name it, a system prompt and an
instruction), reporting to tensorboard, mlflow and wandb (offline). The tracking tests and the custom-task tests read
the same run, so the suite starts one deployment for both."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from launcher.report import RunReport
from shared.records import StepRecord, metrics_file
from tests.helpers.guide import guide_env, run_guide

# The guide's commands as written; the environment (settings' PRFT_ variables, which every process of
# the run reads) makes its batches small for CPUs, adds mlflow and wandb, and logs samples every 2 steps.
SMALL_AND_TRACKED = {
    "PRFT_LEARNER__BATCH_PROMPTS": "4",
    "PRFT_LEARNER__MINI_BATCH_PROMPTS": "4",
    "PRFT_LEARNER__MICRO_BATCH": "16",
    "PRFT_LEARNER__CHECKPOINT_EVERY": "2",
    "PRFT_LEARNER__SAMPLING__MAX_TOKENS": "96",
    "PRFT_LEARNER__TRACKING__REPORT_TO": json.dumps(["tensorboard", "mlflow", "wandb"]),
    "PRFT_LEARNER__TRACKING__WANDB_MODE": "offline",
    "PRFT_LEARNER__TRACKING__SAMPLES_EVERY": "2",
}


@dataclass
class GuideRun:
    folder: Path  # where the guide was followed: its files, .venv, runs/
    out: Path  # the run directory (the guide's --out)
    steps: list[StepRecord]
    report: RunReport


@pytest.fixture(scope="session")
def guide_run(tmp_path_factory, default_base_dir) -> GuideRun:
    folder = tmp_path_factory.mktemp("custom-task")
    done = run_guide(folder, guide_env(SMALL_AND_TRACKED), timeout=1400)
    failed = [d for d in done if d.returncode != 0]
    assert not failed, f"{failed[0].args}:\n{failed[0].stdout[-3000:]}{failed[0].stderr[-3000:]}"
    out = folder / "runs" / "my-task"
    report = RunReport.model_validate_json((out / "report.json").read_text())
    return GuideRun(folder, out, metrics_file(out / "learner").read(), report)
