"""The unit of training data every task and data loader produces."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Problem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    prompt: str = Field(min_length=1)  # the user's message (instruction included)
    answer: str  # reference answer the verifier compares with
    demonstrations: tuple[str, ...] = ()  # assistant responses ending in \boxed{answer}
    # The reward service's verifier for this problem, by name; None: the service's default (math).
    verifier: str | None = None

    @property
    def has_demonstration(self) -> bool:
        return bool(self.demonstrations)
