"""Dr.GRPO advantages: A_i = r_i - baseline of the group, no division by the group's std."""

from __future__ import annotations

from services.learner.algorithm import AlgorithmSettings, Baseline
from shared.messages import RolloutKind, TrajectoryGroup


def group_advantages(group: TrajectoryGroup, settings: AlgorithmSettings) -> list[float]:
    """One advantage per trajectory of ``group``, in the group's order.

    ``Baseline.group``: the mean reward of the whole group (hybrid and demonstration trajectories
    included), the paper's default. ``Baseline.exclude_hybrid``: the mean over the on-policy
    trajectories only; hybrid and demonstration trajectories are still scored against it. A group of
    one trajectory gets advantage 0 under ``Baseline.group`` (it is its own baseline).
    """
    rewards = [t.reward for t in group.trajectories]
    if settings.baseline == Baseline.group:
        reference = rewards
    else:
        reference = [t.reward for t in group.trajectories if t.kind == RolloutKind.on_policy]
        if not reference:
            raise ValueError(f"group {group.id}: baseline 'exclude-hybrid' needs at least one on-policy trajectory")
    baseline = sum(reference) / len(reference)
    return [r - baseline for r in rewards]
