"""The records the learner writes and the launcher, benchmarks and tests read.

In the learner's run directory: ``metrics.jsonl`` (one :class:`StepRecord` per optimizer step),
``ledger.jsonl`` (one :class:`LedgerEvent` per decision a checkpoint committed) and ``final.json``
(:class:`FinalRecord`, written once a run has finished). Its ``/v1/status`` serves a
:class:`LearnerStatus`. Every JSONL file is read and written through :class:`JsonlFile`.

Unknown keys are refused (``extra="forbid"``) on purpose: a metric the trainer starts to return
must be declared here, as a field of :class:`TrainerMetrics`, before the learner can write it, so no
number reaches ``metrics.jsonl`` untyped or is silently dropped. Forgetting it fails the learner's
first step and ``tests/unit/test_records.py``. Adding one is one line: ``name: float | None = None``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

METRICS_FILE = "metrics.jsonl"
LEDGER_FILE = "ledger.jsonl"
FINAL_FILE = "final.json"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------- metrics


class TrainerMetrics(_Record):
    """What ``Trainer.train`` returns: the mean over the step's micro-batch updates, plus engine figures.

    RL steps return the policy-loss figures, SFT steps ``loss``, ``sft_nll``, ``entropy`` and
    ``loss_tokens``; the others stay unset (absent from the JSON line).
    """

    loss: float | None = None
    pg_loss: float | None = None
    sft_nll: float | None = None
    entropy: float | None = None
    entropy_agg: float | None = None  # the entropy sum / (agg_constant x rows), before entropy_coef
    clip_fraction: float | None = None
    dual_clip_fraction: float | None = None
    tis_mean: float | None = None
    tis_truncated_fraction: float | None = None
    kept_entropy_threshold: float | None = None
    entropy_clip_kept_fraction: float | None = None
    kl_approx: float | None = None
    loss_tokens: float | None = None
    grad_norm: float | None = None
    lr: float | None = None
    # Training/inference mismatch: |log pi_learner - log pi_behaviour| over the continuation tokens
    # sampled at the version the learner holds (steps that start from published weights only).
    logprob_mismatch_mean: float | None = None
    logprob_mismatch_max: float | None = None
    logprob_mismatch_tokens: float | None = None


class BatchStats(_Record):
    """The trajectory groups one RL step trains on (SFT steps have none: every field unset)."""

    reward_mean: float | None = None
    reward_on_policy: float | None = None
    reward_hybrid: float | None = None
    reward_demonstration: float | None = None
    # Prefix tokens / response tokens of the batch. The trainer returns a share of its own (over loss
    # tokens); in a record this one, set later, replaces it.
    prefix_token_share: float | None = None
    prefix_len_min: int | None = None
    prefix_len_max: int | None = None
    generated_tokens: int | None = None
    response_tokens: int | None = None
    staleness_mean: float | None = None
    staleness_hist: dict[str, int] | None = None  # lag (weight versions) -> groups
    groups: int | None = None


class StepRecord(TrainerMetrics, BatchStats):
    """One line of ``metrics.jsonl``: an optimizer step, written by rank 0 after it."""

    step: int  # optimizer steps completed
    version: int  # weight version after the step
    sft: bool
    prefix_ratio_low: float
    prefix_ratio_high: float
    tokens: int  # prompt + response tokens trained on
    tokens_per_s: float  # of training time alone
    step_time_s: float  # wait for groups + training + publishing
    train_s: float
    wait_s: float
    dropped_stale: int  # this step
    publish_s: float | None  # None: no version published after this step
    weight_push_s: float | None  # the last finished push to the workers, if any
    dropped_stale_total: int
    dropped_duplicate_total: int
    dropped_foreign_total: int
    trained_groups_total: int
    issued_total: int
    outstanding: int
    time: float  # wall clock (Unix time)


# ---------------------------------------------------------------------------------------- ledger


class Decision(_Record):
    """What the learner decided about trajectory groups it read: trained, dropped as stale, or
    recognised as a duplicate delivery or another run's group."""

    event: Literal["trained", "stale", "duplicate", "foreign"]
    ids: list[str]
    step: int | None = None  # trained: the step they trained (1-based); stale: steps completed then
    version: int | None = None  # weight version at the decision (trained and stale)
    lags: list[int] | None = None  # per id: version - oldest policy version of the group


class LedgerEvent(Decision):
    """One line of ``ledger.jsonl``: a decision, labelled with the checkpoint that committed it."""

    commit: int


# ---------------------------------------------------------------------------------------- status


class PushReport(_Record):
    """One push of a weight version to the live workers: the time to notify them all (each fetches and
    swaps in the background after accepting)."""

    version: int
    seconds: float
    pushed: list[str]  # worker ids that accepted the version (202)
    failed: list[str]


class QueueDepths(_Record):
    tasks_backlog: int
    trajectories_backlog: int
    trajectories_pending: int
    ready_groups: int  # read, admitted, not yet trained


class StalenessStatus(_Record):
    max_staleness: int
    last_mean: float | None
    last_hist: dict[str, int] | None
    dropped_stale_total: int
    dropped_duplicate_total: int


class LearnerStatus(_Record):
    """``GET /v1/status``. While the engine starts only ``phase`` is set (and served). "held": ready, and
    waiting for ``POST /v1/start`` before it issues any task (``learner.start_on_request``)."""

    phase: Literal["starting", "held", "waiting", "training", "done", "stopped"]
    run_id: str | None = None
    algorithm: str | None = None
    step: int | None = None
    total_steps: int | None = None
    version: int | None = None
    queues: QueueDepths | None = None
    issued: int | None = None
    outstanding: int | None = None
    window: int | None = None
    staleness: StalenessStatus | None = None
    dead_lettered_tasks: int | None = None
    trained_groups_total: int | None = None
    last_push: PushReport | None = None


# ---------------------------------------------------------------------------------------- final


class FinalRecord(_Record):
    """``final.json``: written once, when the run has taken its last step and published it."""

    version: int
    step: int
    rank_digests: list[str] | None  # every rank's weight checksum; None under ZeRO-3

    @classmethod
    def read(cls, learner_dir: Path) -> FinalRecord | None:
        path = learner_dir / FINAL_FILE
        return cls.model_validate_json(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------------------------------- JSONL

M = TypeVar("M", bound=BaseModel)


class JsonlFile(Generic[M]):
    """Append-only JSON lines, one model each; a resumed run cuts the lines of the steps it lost.

    Only the fields that were set are written (an SFT step has no reward), with sorted keys.
    """

    def __init__(self, path: Path, model: type[M]):
        self.path = path
        self.model = model

    def append(self, record: M) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(_line(record))

    def read(self) -> list[M]:
        if not self.path.is_file():
            return []
        return [self.model.model_validate_json(line) for line in self.path.read_text().splitlines() if line.strip()]

    def last(self) -> M | None:
        records = self.read()
        return records[-1] if records else None

    def truncate_after(self, value: int, key: Callable[[M], int]) -> int:
        """Drop records whose ``key`` is above ``value`` (a crashed run's lost work); returns how many."""
        records = self.read()
        kept = [r for r in records if key(r) <= value]
        if len(kept) != len(records):
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text("".join(_line(r) for r in kept))
            tmp.replace(self.path)
        return len(records) - len(kept)


def _line(record: BaseModel) -> str:
    return json.dumps(record.model_dump(mode="json", exclude_unset=True), sort_keys=True) + "\n"


def metrics_file(learner_dir: Path) -> JsonlFile[StepRecord]:
    return JsonlFile(learner_dir / METRICS_FILE, StepRecord)


def ledger_file(learner_dir: Path) -> JsonlFile[LedgerEvent]:
    return JsonlFile(learner_dir / LEDGER_FILE, LedgerEvent)
