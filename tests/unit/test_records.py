"""The learner's records: every figure the trainer returns has a typed field, unknown keys are refused,
and a JSONL file writes only what was set and reads back the same models."""

import pytest
import torch
from pydantic import ValidationError

from services.learner.algorithm import AlgorithmSettings
from services.learner.batching import TrainBatch
from services.learner.objective import policy_loss
from shared.records import (
    BatchStats,
    FinalRecord,
    JsonlFile,
    LearnerStatus,
    LedgerEvent,
    PushReport,
    StepRecord,
    TrainerMetrics,
)
from tests.helpers.records import step_record

# What Trainer.train adds to the objective's figures.
TRAINER_FIGURES = {"kept_entropy_threshold", "grad_norm", "lr"}


def batch() -> TrainBatch:
    loss = torch.tensor([[False, True, True, True]])
    return TrainBatch(
        input_ids=torch.ones(1, 4, dtype=torch.long),
        attention_mask=torch.ones(1, 4, dtype=torch.long),
        loss_mask=loss,
        prefix_mask=torch.tensor([[False, True, False, False]]),
        demonstration_mask=torch.zeros(1, 4, dtype=torch.bool),
        behaviour_logprobs=torch.full((1, 4), -1.0),
        advantages=torch.where(loss, 1.0, 0.0),
        policy_versions=torch.zeros(1, dtype=torch.long),
    )


@pytest.mark.parametrize("sft", [False, True])
def test_every_figure_of_the_objective_is_a_field_of_the_step_record(sft):
    logprobs = torch.full((1, 4), -1.0, requires_grad=True)
    out = policy_loss(logprobs, torch.ones(1, 4), batch(), AlgorithmSettings(), None, 1, sft=sft)
    figures = {"loss", *out.metrics} | TRAINER_FIGURES
    declared = set(TrainerMetrics.model_fields) | set(BatchStats.model_fields)
    assert figures <= declared, f"declare these in shared/records.py TrainerMetrics: {sorted(figures - declared)}"
    StepRecord(**step_record(1).model_dump(exclude_unset=True), **{k: 0.5 for k in figures})


def test_an_undeclared_figure_is_refused():
    with pytest.raises(ValidationError, match="new_metric"):
        StepRecord(**step_record(1).model_dump(exclude_unset=True), new_metric=1.0)


def test_a_jsonl_file_writes_what_was_set_and_reads_it_back(tmp_path):
    metrics = JsonlFile(tmp_path / "metrics.jsonl", StepRecord)
    sft_step = step_record(1, sft=True, loss=2.0)
    rl_step = step_record(2, loss=1.0, reward_mean=0.5, reward_demonstration=None, staleness_hist={"0": 4})
    metrics.append(sft_step)
    metrics.append(rl_step)
    first, second = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert '"reward_mean"' not in first and '"reward_demonstration": null' in second
    assert metrics.read() == [sft_step, rl_step] and metrics.last() == rl_step

    ledger = JsonlFile(tmp_path / "ledger.jsonl", LedgerEvent)
    for commit in (1, 2, 2, 3):
        ledger.append(LedgerEvent(commit=commit, event="duplicate", ids=[f"run-{commit}"]))
    assert ledger.truncate_after(1, key=lambda event: event.commit) == 3
    assert [event.ids for event in ledger.read()] == [["run-1"]]
    assert JsonlFile(tmp_path / "absent.jsonl", LedgerEvent).read() == []


def test_final_record_and_status(tmp_path):
    assert FinalRecord.read(tmp_path) is None  # the run has not finished
    with pytest.raises(ValidationError):
        LearnerStatus(phase="sleeping")
    assert LearnerStatus(phase="starting").model_dump(exclude_unset=True) == {"phase": "starting"}
    push = PushReport(version=3, seconds=0.5, pushed=["w1"], failed=[])
    served = LearnerStatus(phase="waiting", last_push=push, step=None).model_dump(exclude_unset=True)
    assert served == {"phase": "waiting", "step": None, "last_push": push.model_dump()}
