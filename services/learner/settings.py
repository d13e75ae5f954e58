"""Learner settings: the ``learner`` section of the job's YAML file (env vars ``PRFT_LEARNER__*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from services.learner.algorithm import AlgorithmSettings
from shared.api.rollout import SamplingParams
from shared.data import DataSettings, PromptSettings
from shared.datasets.arithmetic import ArithmeticDataset
from shared.settings import ServiceSettings, StrictModel, public_base_url
from shared.tracking.settings import TrackingSettings
from shared.weights.settings import WeightsSettings

PAPER_LR = 1e-6
# The built-in model has about a million parameters: at the paper's 1e-6 it would not move in a
# run of a few hundred steps. At 5e-4 RL collapses it (RFT's on-policy reward fell from 0.41 to 0
# in 6 steps, entropy tripled); at 1e-4 Prefix-RFT's reward climbs steadily.
DEFAULT_MODEL_LR = 1e-4


class DeepSpeedSettings(StrictModel):
    zero_stage: int = Field(0, ge=0, le=3)
    dtype: Literal["fp32", "bf16"] = "fp32"  # fp16 needs loss scaling and does not run on CPU
    gradient_clipping: float = Field(1.0, ge=0)  # 0 disables clipping
    backend: Literal["gloo", "nccl"] | None = None  # None: nccl when CUDA is available, else gloo
    # Merged last into the generated ds_config, for keys this model does not cover.
    extra_config: dict[str, Any] = Field(default_factory=dict)


class OptimizerSettings(StrictModel):
    lr: float | None = Field(None, gt=0)  # None: 1e-6 (paper) for a given model, 1e-4 for the built-in one
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    warmup_steps: int = Field(0, ge=0)  # linear warm-up of the learning rate, then constant


class LearnerSettings(ServiceSettings):
    yaml_section = "learner"

    # None: the built-in default base policy (built and cached on first use).
    model: str | None = None
    # The data file, its column mapping and held-out rows (a plain string is the path); no path: the
    # built-in arithmetic task's train split.
    # NoDecode: PRFT_LEARNER__DATA=/data/f.parquet is the path as it is, not JSON to decode.
    data: Annotated[DataSettings, NoDecode] = DataSettings()
    prompt: PromptSettings = PromptSettings()  # system prompt, instruction template, chat template file
    dataset: ArithmeticDataset = ArithmeticDataset()
    # Given as a mapping, ``name`` selects the preset and the other keys override its fields.
    algorithm: AlgorithmSettings = AlgorithmSettings()
    sampling: SamplingParams = SamplingParams(temperature=1.0, max_tokens=256)

    batch_prompts: int = Field(16, ge=1)  # groups per step (paper: 128)
    mini_batch_prompts: int = Field(16, ge=1)  # groups per optimizer update (paper: 64)
    micro_batch: int = Field(16, ge=1)  # rows per forward pass on one rank
    ppo_epochs: int = Field(1, ge=1)  # passes over each batch
    # Rows longer than this lose the tail of their response; None: the model's maximum positions.
    max_seq_len: int | None = Field(None, ge=2)
    # Where entropy-based clipping ranks prefix tokens: over each mini-batch (method.md; costs a
    # forward pass without gradient when the mini-batch spans several passes or ranks) or over each
    # forward pass alone.
    entropy_clip_scope: Literal["mini_batch", "micro_batch"] = "mini_batch"
    # Recompute each layer's activations in the backward pass instead of keeping them: memory of a
    # long row falls to about one layer's, for about a third more compute. None: on for a given
    # model, off for the built-in one (its activations are small).
    gradient_checkpointing: bool | None = None
    # Padding-free packing: a micro-batch takes consecutive rows while their tokens fit this budget
    # (a longer row goes alone) and runs them as one sequence, attention kept within each row.
    # None: no packing, micro-batches of ``micro_batch`` rows padded to their longest.
    micro_batch_tokens: int | None = Field(None, ge=2)
    # The divisor of the policy loss's token sums (docs/method.md, "Loss scale"). "constant": the
    # run's constant times the mini-batch's rows (Dr.GRPO as the paper states it).
    # "micro_batch_max_length": each micro-batch's sum over its longest response, then the mean over
    # micro-batches, as the authors' code does.
    loss_scale: Literal["constant", "micro_batch_max_length"] = "constant"
    optimizer: OptimizerSettings = OptimizerSettings()
    deepspeed: DeepSpeedSettings = DeepSpeedSettings()
    seed: int = 0

    total_steps: int = Field(500, ge=1)
    max_staleness: int = Field(1, ge=0)  # versions a group may lag behind the learner's weights
    publish_every: int = Field(1, ge=1)  # steps between weight versions
    checkpoint_every: int = Field(20, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    keep_weights: int = Field(3, ge=1)  # weight versions kept on disk and served
    # ... and every version numbered a multiple of this (0: none): milestones to evaluate or export
    keep_weights_every: int = Field(20, ge=0)
    publish_initial: bool = True  # publish version 0 (the starting weights) at a fresh start
    # Build the engine, then wait for POST /v1/start before issuing any task or publishing: the launcher
    # starts the learner alongside the workers and lets it go once it has evaluated the base policy.
    start_on_request: bool = False

    run_dir: Path = Path("runs/learner")
    host: str = "127.0.0.1"
    port: int = Field(8002, ge=0, le=65535)
    # Base URL workers use to fetch weights; None: see shared.settings.public_base_url.
    public_url: str | None = None
    # How weight versions reach the workers (the transport, named in the Redis record, so a worker
    # follows the learner's choice) and the manifest's bucket size.
    weights: WeightsSettings = WeightsSettings()

    worker_ttl_s: float = Field(30.0, gt=0)  # a worker whose heartbeat is older is not pushed to
    push_timeout_s: float = Field(60.0, gt=0)
    push_retries: int = Field(3, ge=0)
    read_block_ms: int = Field(1000, ge=1)  # one blocking read of the trajectories stream
    consumer: str = "learner-0"
    # Trackers rank 0 reports to (tensorboard, wandb, mlflow, trackio); none by default.
    # `learner.report_to` is short for `learner.tracking.report_to`.
    tracking: TrackingSettings = TrackingSettings()

    @field_validator("algorithm", mode="before")
    @classmethod
    def _apply_preset(cls, value: Any) -> Any:
        if isinstance(value, dict) and "name" in value:
            overrides = {k: v for k, v in value.items() if k != "name"}
            return AlgorithmSettings.preset(value["name"], **overrides)
        return value

    @model_validator(mode="before")
    @classmethod
    def _lr_shorthand(cls, data: Any) -> Any:
        # `learner.lr` is what users type (TRL, verl): it sets optimizer.lr, where the value lives.
        if isinstance(data, dict) and "lr" in data:
            data = dict(data)
            optimizer = dict(data.get("optimizer") or {})
            optimizer["lr"] = data.pop("lr")
            data["optimizer"] = optimizer
        # `learner.report_to`, as TRL's `report_to`: where tracking.report_to lives. The sources are merged
        # by now, so an explicit tracking.report_to (what --report-to and PRFT_LEARNER__TRACKING__REPORT_TO
        # set) wins: a job file's shorthand must not override the command line.
        if isinstance(data, dict) and "report_to" in data:
            data = dict(data)
            tracking = data.get("tracking") or {}
            if not isinstance(tracking, dict):
                tracking = tracking.model_dump(include=tracking.model_fields_set)
            tracking = dict(tracking)
            shorthand = data.pop("report_to")
            tracking.setdefault("report_to", shorthand)
            data["tracking"] = tracking
        return data

    @model_validator(mode="after")
    def _batches_divide(self) -> LearnerSettings:
        if self.batch_prompts % self.mini_batch_prompts:
            raise ValueError(
                f"batch_prompts {self.batch_prompts} is not a multiple of mini_batch_prompts {self.mini_batch_prompts}"
            )
        if self.start_on_request and not self.auth.token.get_secret_value():
            raise ValueError("start_on_request needs auth.token: POST /v1/start is refused without one")
        if self.weights.transport == "swarm" and not self.auth.token.get_secret_value():
            raise ValueError("weights.transport swarm needs auth.token: the swarm's peers authenticate with it")
        return self

    @property
    def lr(self) -> float:
        if self.optimizer.lr is not None:
            return self.optimizer.lr
        return PAPER_LR if self.model else DEFAULT_MODEL_LR

    @property
    def use_gradient_checkpointing(self) -> bool:
        if self.gradient_checkpointing is not None:
            return self.gradient_checkpointing
        return self.model is not None

    @property
    def logprob_temperature(self) -> float:
        """The temperature the learner's log-probs and entropies are taken at: the rollouts' own, so
        the ratio to the engine's behaviour log-probs compares one distribution (greedy: 1)."""
        return self.sampling.temperature or 1.0

    @property
    def agg_constant(self) -> int:
        """Dr.GRPO's divisor: a constant per run, by default the maximum response length."""
        return self.algorithm.loss_agg_constant or self.sampling.max_tokens

    @property
    def window(self) -> int:
        """Groups that may be outstanding (issued, not yet consumed): AReaL's admission bound."""
        return (self.max_staleness + 1) * self.batch_prompts

    def public_base_url(self) -> str:
        return public_base_url(self.host, self.port, self.public_url)
