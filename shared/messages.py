"""Pydantic models of the entries on the Redis bus (tasks, trajectory groups, the weights record, the
worker registry); they go through :mod:`shared.bus.codec`. The HTTP contracts are in :mod:`shared.api`.
"""

from __future__ import annotations

from enum import Enum

from pydantic import Field, model_validator

from shared.api.reward import DEFAULT_VERIFIER, ScoreStatus
from shared.api.rollout import FinishReason, SamplingParams
from shared.api.weights import DeltaRef
from shared.schema import Message, TokenIds
from shared.weights.settings import TransportName

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
    # The reward service's verifier for every response of the group (the problem's, else the default).
    verifier: str = DEFAULT_VERIFIER
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
    # The verifier the reward service scored every trajectory with (the task's), so that what a
    # reward means can be read back: a plug-in's partial credit and math's 0/1 can look alike.
    verifier: str = "math"

    @property
    def oldest_policy_version(self) -> int:
        """Staleness is measured from the oldest weights that produced any sample of the group."""
        versions = [t.policy_version for t in self.trajectories if t.policy_version is not None]
        return min(versions) if versions else self.issued_at_version


# --------------------------------------------------------------------------- Redis: weights, workers


class WeightsRecord(Message):
    """Value of ``<ns>:weights``: the latest published weights."""

    version: int = Field(ge=0)
    uri: str  # the whole safetensors file (file:// or the learner's URL): what a worker without a transport reads
    # The version's manifest in the transport's terms (shared.weights): buckets verified on arrival.
    manifest: str | None = None
    transport: TransportName | None = None
    delta: DeltaRef | None = None  # the version's delta from an earlier one, when it has one


class WorkerInfo(Message):
    """Value in the ``<ns>:workers`` registry, refreshed by the worker's heartbeat."""

    worker_id: str
    url: str  # base URL of the worker's HTTP API, where the learner pushes weights
    version: int
    heartbeat_at: float  # unix time
    # "host:port" where the worker's swarm node takes peers (the swarm transport); None: it has none.
    swarm: str | None = None
