"""Pydantic models for every contract between services (HTTP bodies and Redis entries).

The HTTP shapes follow docs/architecture.md; Redis entries go through :mod:`shared.bus.codec`.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TokenIds = list[int]


class Message(BaseModel):
    # Unknown fields are an error: a typo in a client must not be silently dropped.
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- rollout service


class SamplingParams(Message):
    # The bounds are vLLM's own (it refuses a temperature above 2 and an empty stop string, and cannot
    # pass on a seed outside 64 bits), so a request the contract accepts never fails in the engine.
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1)
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)  # what the engine (and torch) can take
    stop: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list, max_length=16)


class GenerateRequest(Message):
    """Prompt as token ids or text; the optional demonstration prefix is appended as token ids."""

    prompt_token_ids: TokenIds | None = None
    prompt: str | None = None
    # A text prompt is the user's message: wrapped in the served tokenizer's chat template with the
    # assistant turn left open, as the learner builds its prompts (None counts as true). False: the
    # text is tokenised as it is. Token-id prompts are used as given and take no value here.
    chat_template: bool | None = None
    prefix_token_ids: TokenIds = Field(default_factory=list)
    n: int = Field(1, ge=1)
    sampling: SamplingParams = Field(default_factory=SamplingParams)

    @model_validator(mode="after")
    def _exactly_one_prompt(self) -> GenerateRequest:
        if (self.prompt_token_ids is None) == (self.prompt is None):
            raise ValueError("give exactly one of 'prompt_token_ids' or 'prompt'")
        if self.prompt_token_ids is not None and not self.prompt_token_ids:
            raise ValueError("'prompt_token_ids' is empty")
        if self.prompt is not None and not self.prompt:
            raise ValueError("'prompt' is empty")
        if self.prompt is None and self.chat_template is not None:
            raise ValueError("'chat_template' applies to a text 'prompt' only; 'prompt_token_ids' are used as given")
        return self


FinishReason = Literal["stop", "length"]


class Sample(Message):
    token_ids: TokenIds  # the continuation only (after prompt + prefix)
    logprobs: list[float]  # one per continuation token, of the sampled distribution
    text: str
    finish_reason: FinishReason

    @model_validator(mode="after")
    def _one_logprob_per_token(self) -> Sample:
        if len(self.logprobs) != len(self.token_ids):
            raise ValueError(f"{len(self.logprobs)} logprobs for {len(self.token_ids)} tokens")
        return self


class GenerateResponse(Message):
    model_version: int
    prompt_token_ids: TokenIds
    prefix_token_ids: TokenIds
    samples: list[Sample]


class WeightsVersion(Message):
    version: int = Field(ge=0)


class WeightUpdate(Message):
    version: int = Field(ge=0)
    uri: str = Field(min_length=1, pattern=r"^(file|https?)://")


# --------------------------------------------------------------------------- reward service


class ScoreItem(Message):
    id: str = Field(min_length=1, max_length=256)
    response: str
    reference: str
    verifier: str = "math"


class ScoreRequest(Message):
    items: list[ScoreItem] = Field(min_length=1)


class ScoreStatus(str, Enum):
    ok = "ok"
    timeout = "timeout"
    error = "error"


class ScoreResult(Message):
    id: str
    reward: float
    correct: bool
    extracted: str | None = None
    status: ScoreStatus = ScoreStatus.ok
    detail: str | None = None


class ScoreResponse(Message):
    results: list[ScoreResult]


# --------------------------------------------------------------------------- Redis: tasks


class RolloutKind(str, Enum):
    on_policy = "on_policy"  # sampled from the prompt alone
    hybrid = "hybrid"  # continues a demonstration prefix y*[:L]
    demonstration = "demonstration"  # the whole demonstration, no generation (LUFFY, SFT)


class RolloutTask(Message):
    """One prompt group to generate: issued by the learner, consumed by a rollout worker."""

    id: str = Field(min_length=1)
    prompt_id: str
    issued_at_version: int = Field(ge=0)  # learner's weight version when the task was issued
    step: int = Field(ge=0)  # learner step whose prefix schedule produced the cuts
    prompt_token_ids: TokenIds = Field(min_length=1)
    reference: str  # reference answer the verifier compares with
    verifier: str = "math"
    n_on_policy: int = Field(ge=0)
    # One entry per hybrid rollout: the demonstration prefix y*[:L] given to the engine.
    hybrid_prefixes: list[TokenIds] = Field(default_factory=list)
    # Whole demonstrations added as off-policy trajectories without generation (LUFFY / SFT).
    demonstrations: list[TokenIds] = Field(default_factory=list)
    demonstration_texts: list[str] = Field(default_factory=list)
    sampling: SamplingParams = Field(default_factory=SamplingParams)

    @property
    def group_size(self) -> int:
        return self.n_on_policy + len(self.hybrid_prefixes) + len(self.demonstrations)


# --------------------------------------------------------------------------- Redis: trajectories


class Trajectory(Message):
    """One response: ``response_token_ids = prefix (demonstration) + continuation (policy)``."""

    kind: RolloutKind
    response_token_ids: TokenIds
    prefix_len: int = Field(ge=0)  # tokens at the start of the response that came from a demonstration
    # Log-probs of the behaviour policy for the continuation tokens only (prefix tokens never have one).
    behaviour_logprobs: list[float]
    policy_version: int | None  # weight version that generated the continuation; None if nothing generated
    reward: float
    correct: bool
    score_status: ScoreStatus = ScoreStatus.ok
    finish_reason: FinishReason | None = None
    text: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Trajectory:
        if self.prefix_len > len(self.response_token_ids):
            raise ValueError("prefix_len exceeds the response length")
        n_cont = len(self.response_token_ids) - self.prefix_len
        if len(self.behaviour_logprobs) != n_cont:
            raise ValueError(f"{len(self.behaviour_logprobs)} behaviour logprobs for {n_cont} continuation tokens")
        return self

    @property
    def prefix_mask(self) -> list[bool]:
        """Per response token: True where the token came from the demonstration prefix."""
        return [i < self.prefix_len for i in range(len(self.response_token_ids))]

    @property
    def continuation_token_ids(self) -> TokenIds:
        return self.response_token_ids[self.prefix_len :]


class TrajectoryGroup(Message):
    """All rollouts of one task, scored, as the learner trains on them."""

    id: str  # equals the task id: the unit of de-duplication
    prompt_id: str
    issued_at_version: int
    step: int
    worker_id: str
    prompt_token_ids: TokenIds
    trajectories: list[Trajectory] = Field(min_length=1)

    @property
    def oldest_policy_version(self) -> int:
        """Staleness is measured from the oldest weights that produced any sample of the group."""
        versions = [t.policy_version for t in self.trajectories if t.policy_version is not None]
        return min(versions) if versions else self.issued_at_version


# --------------------------------------------------------------------------- Redis: weights, workers


class WeightsRecord(Message):
    """Value of ``<ns>:weights``: the latest published weights."""

    version: int = Field(ge=0)
    uri: str


class WorkerInfo(Message):
    """Value in the ``<ns>:workers`` registry, refreshed by the worker's heartbeat."""

    worker_id: str
    url: str  # base URL of the worker's HTTP API, where the learner pushes weights
    version: int
    heartbeat_at: float  # unix time
