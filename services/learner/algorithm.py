"""Algorithm settings: Prefix-RFT and the baselines of method.md, as presets of one model.

Every number of method.md is a field here with the paper's value as its default; the baselines
and ablations are presets (``AlgorithmSettings.preset(name)``), never separate code paths.
"""

from __future__ import annotations

from enum import Enum

from pydantic import Field, model_validator

from shared.prefix import PrefixSchedule
from shared.settings import StrictModel


class AlgorithmName(str, Enum):
    prefix_rft = "prefix-rft"
    sft = "sft"
    rft = "rft"
    sft_then_rft = "sft-then-rft"
    luffy = "luffy"
    prefix_rft_no_entropy_clip = "prefix-rft-no-entropy-clip"
    prefix_rft_frozen_prefix = "prefix-rft-frozen-prefix"
    prefix_rft_uniform = "prefix-rft-uniform"


class Baseline(str, Enum):
    group = "group"  # mean reward of the whole group, hybrid included (the paper's default)
    exclude_hybrid = "exclude-hybrid"  # mean of the on-policy rollouts only (variant in the authors' code)


class AlgorithmSettings(StrictModel):
    name: AlgorithmName = AlgorithmName.prefix_rft

    # Group composition: N rollouts per prompt, of which n_hybrid continue a demonstration prefix.
    n_rollouts: int = Field(8, ge=1)
    n_hybrid: int = Field(1, ge=0)
    continuations_per_prefix: int = Field(1, ge=1)
    # Whole demonstrations used as off-policy rollouts (LUFFY: 1 of the N).
    n_demonstration: int = Field(0, ge=0)
    schedule: PrefixSchedule = PrefixSchedule()

    # PPO clip with dual clip (Dual-clip PPO bound c applies to A < 0).
    clip_eps_low: float = Field(0.2, ge=0)
    clip_eps_high: float = Field(0.2, ge=0)
    dual_clip_c: float = Field(3.0, gt=1.0)
    # Dr.GRPO: A_i = r_i - mean(r); no std division; token losses summed / constant.
    baseline: Baseline = Baseline.group
    loss_agg_constant: int | None = Field(None, ge=1)  # None: the max response length of the run
    # Entropy-based clipping: keep the advantage on the top fraction of prefix tokens by entropy.
    entropy_clip: bool = True
    entropy_clip_top: float = Field(0.2, gt=0, le=1)
    entropy_coef: float = Field(0.001, ge=0)
    entropy_on_continuation_only: bool = False
    # Asynchrony: truncated importance weight pi_old / pi_behaviour on continuation tokens.
    tis_cap: float = Field(2.0, gt=0)
    # LUFFY: shaped ratio pi / (pi + gamma) on demonstration tokens, no clipping.
    luffy_gamma: float = Field(0.1, gt=0)
    # Ablation: no gradient on prefix tokens.
    freeze_prefix: bool = False
    # Hybrid-reward guard: a hybrid rollout whose reward is below this gets no gradient on its prefix
    # tokens (its continuation still trains). A failed hybrid's advantage is negative, and on its prefix
    # it would push the policy away from a correct demonstration. None: off (the paper's method).
    hybrid_guard_threshold: float | None = None
    # SFT then RFT: SFT for this many steps, then RFT.
    sft_steps: int = Field(0, ge=0)
    # Keep demonstrations for this fraction of prompts (demonstration-quantity ablation).
    demo_fraction: float = Field(1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _group_fits(self) -> AlgorithmSettings:
        special = self.n_hybrid * self.continuations_per_prefix + self.n_demonstration
        if special > self.n_rollouts:
            raise ValueError(
                f"n_hybrid x continuations_per_prefix + n_demonstration = {special} "
                f"exceeds n_rollouts {self.n_rollouts}"
            )
        return self

    @property
    def n_on_policy(self) -> int:
        """On-policy rollouts per prompt that has a demonstration (the budget stays n_rollouts)."""
        return self.n_rollouts - self.n_hybrid * self.continuations_per_prefix - self.n_demonstration

    def is_sft_step(self, step: int) -> bool:
        return self.name == AlgorithmName.sft or (self.name == AlgorithmName.sft_then_rft and step < self.sft_steps)

    @classmethod
    def preset(cls, name: str | AlgorithmName, **overrides) -> AlgorithmSettings:
        """The settings of a named algorithm; ``overrides`` change individual fields."""
        name = AlgorithmName(name)
        base: dict = {"name": name}
        if name in (AlgorithmName.rft, AlgorithmName.sft, AlgorithmName.sft_then_rft):
            base.update(n_hybrid=0, n_demonstration=0, entropy_clip=False)
        if name == AlgorithmName.sft_then_rft:
            base.update(sft_steps=overrides.pop("sft_steps", 0))
        if name == AlgorithmName.luffy:
            base.update(n_hybrid=0, n_demonstration=1, entropy_clip=False)
        if name == AlgorithmName.prefix_rft_no_entropy_clip:
            base.update(entropy_clip=False)
        if name == AlgorithmName.prefix_rft_frozen_prefix:
            base.update(freeze_prefix=True)
        # A schedule given in the overrides (a YAML section such as {decay_steps: 40}) changes the
        # preset's schedule field by field instead of replacing it: the uniform ablation stays uniform.
        schedule = {"kind": "uniform"} if name == AlgorithmName.prefix_rft_uniform else {}
        given = overrides.pop("schedule", None)
        if isinstance(given, PrefixSchedule):
            given = given.model_dump(exclude_unset=True)
        base["schedule"] = PrefixSchedule(**{**schedule, **(given or {})})
        return cls(**{**base, **overrides})
