"""Prefix sampling of method.md: the cosine curriculum on the prefix ratio and the per-token cut.

Everything here is a pure function of its arguments (the step, the settings, a seeded RNG), so the
learner can recompute the schedule after a restart and tests can check it by hand.
"""

from __future__ import annotations

import math
import random

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PrefixSchedule(BaseModel):
    """l ~ U[low_t, high], low_t = low_end + 0.5 (1 + cos(pi min(t, T) / T)) (high - low_end)."""

    model_config = ConfigDict(extra="forbid")

    high: float = Field(0.95, gt=0.0, le=1.0)
    low_end: float = Field(0.05, ge=0.0, le=1.0)  # low_t once the decay is over
    decay_steps: int = Field(500, ge=1)  # T_decay
    min_prefix_len: int = Field(1, ge=0)
    # "uniform" is the ablation: l ~ U[low_end, high] from step 0, no curriculum.
    kind: str = Field("cosine", pattern="^(cosine|uniform)$")

    @model_validator(mode="after")
    def _ordered(self) -> PrefixSchedule:
        if self.low_end > self.high:
            raise ValueError(f"low_end {self.low_end} is above high {self.high}")
        return self

    def bounds(self, step: int) -> tuple[float, float]:
        """(low_t, high) at training step ``step``."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self.kind == "uniform":
            return self.low_end, self.high
        progress = min(step, self.decay_steps) / self.decay_steps
        low = self.low_end + 0.5 * (1.0 + math.cos(math.pi * progress)) * (self.high - self.low_end)
        return low, self.high

    def sample_ratio(self, step: int, rng: random.Random) -> float:
        low, high = self.bounds(step)
        return rng.uniform(low, high)

    def cut(self, ratio: float, demo_len: int) -> int:
        """L = clamp(floor(l |y*|), min_prefix_len, |y*| - 1): always one continuation token left."""
        if demo_len < 2:
            raise ValueError(f"a demonstration needs at least 2 tokens to be cut, got {demo_len}")
        upper = demo_len - 1
        lower = min(self.min_prefix_len, upper)
        return max(lower, min(math.floor(ratio * demo_len), upper))

    def sample_cut(self, step: int, demo_len: int, rng: random.Random) -> tuple[float, int]:
        ratio = self.sample_ratio(step, rng)
        return ratio, self.cut(ratio, demo_len)
