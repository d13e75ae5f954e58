"""From a task to its trajectory group: which engine requests to run, and how their samples, the
demonstrations and the scores become trajectories.

Order in the group: on-policy samples, then one hybrid per entry of ``task.hybrid_prefixes`` (in
that order), then the demonstrations. Equal prefixes share one engine request with ``n`` samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from services.rollout.engine import EngineRequest
from shared.api.reward import ScoreItem, ScoreResult
from shared.api.rollout import Sample
from shared.messages import RolloutKind, RolloutTask, Trajectory, TrajectoryGroup
from shared.schema import TokenIds


@dataclass(frozen=True)
class GroupPlan:
    requests: list[EngineRequest]
    on_policy_request: int | None  # index in requests, None when the task has no on-policy sample
    hybrid_slots: list[tuple[int, int]]  # per hybrid prefix: (request index, sample index)


def plan_group(task: RolloutTask) -> GroupPlan:
    requests: list[EngineRequest] = []
    on_policy = None
    if task.n_on_policy:
        on_policy = len(requests)
        requests.append(EngineRequest(task.prompt_token_ids, [], task.n_on_policy, task.sampling))
    by_prefix: dict[tuple[int, ...], list[int]] = {}
    for position, prefix in enumerate(task.hybrid_prefixes):
        by_prefix.setdefault(tuple(prefix), []).append(position)
    slots: list[tuple[int, int]] = [(0, 0)] * len(task.hybrid_prefixes)
    for prefix, positions in by_prefix.items():
        index = len(requests)
        requests.append(EngineRequest(task.prompt_token_ids, list(prefix), len(positions), task.sampling))
        for sample_index, position in enumerate(positions):
            slots[position] = (index, sample_index)
    return GroupPlan(requests, on_policy, slots)


@dataclass(frozen=True)
class Draft:
    """A trajectory before scoring."""

    kind: RolloutKind
    response_token_ids: TokenIds
    prefix_len: int
    behaviour_logprobs: list[float]
    policy_version: int | None
    finish_reason: str | None
    text: str


def drafts(
    task: RolloutTask, plan: GroupPlan, version: int, results: list[list[Sample]], decode: Callable[[TokenIds], str]
) -> list[Draft]:
    out: list[Draft] = []
    if plan.on_policy_request is not None:
        for sample in results[plan.on_policy_request]:
            out.append(
                Draft(RolloutKind.on_policy, list(sample.token_ids), 0, list(sample.logprobs), version,
                      sample.finish_reason, decode(sample.token_ids))
            )
    for prefix, (request_index, sample_index) in zip(task.hybrid_prefixes, plan.hybrid_slots):
        sample = results[request_index][sample_index]
        response = list(prefix) + list(sample.token_ids)
        # Decoded as one sequence: the prefix's last token and the continuation's first may join.
        out.append(
            Draft(RolloutKind.hybrid, response, len(prefix), list(sample.logprobs), version, sample.finish_reason,
                  decode(response))
        )
    texts = list(task.demonstration_texts) + [None] * (len(task.demonstrations) - len(task.demonstration_texts))
    for demo, text in zip(task.demonstrations, texts):
        out.append(
            Draft(RolloutKind.demonstration, list(demo), len(demo), [], None, None,
                  text if text is not None else decode(demo))
        )
    return out


def score_items(task: RolloutTask, group: list[Draft]) -> list[ScoreItem]:
    return [
        ScoreItem(id=f"{task.id}:{i}", response=d.text, reference=task.reference, verifier=task.verifier)
        for i, d in enumerate(group)
    ]


def assemble(task: RolloutTask, worker_id: str, group: list[Draft], scores: list[ScoreResult]) -> TrajectoryGroup:
    if len(scores) != len(group):
        raise ValueError(f"{len(scores)} scores for {len(group)} trajectories")
    trajectories = [
        Trajectory(
            kind=d.kind,
            response_token_ids=d.response_token_ids,
            prefix_len=d.prefix_len,
            behaviour_logprobs=d.behaviour_logprobs,
            policy_version=d.policy_version,
            reward=s.reward,
            correct=s.correct,
            score_status=s.status,
            finish_reason=d.finish_reason,
            text=d.text,
        )
        for d, s in zip(group, scores)
    ]
    return TrajectoryGroup(
        id=task.id,
        prompt_id=task.prompt_id,
        issued_at_version=task.issued_at_version,
        step=task.step,
        worker_id=worker_id,
        verifier=task.verifier,
        prompt_token_ids=list(task.prompt_token_ids),
        trajectories=trajectories,
    )
