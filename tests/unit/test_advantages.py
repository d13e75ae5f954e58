import pytest

from services.learner.advantages import group_advantages
from services.learner.algorithm import AlgorithmSettings, Baseline
from shared.messages import RolloutKind, Trajectory, TrajectoryGroup


def _trajectory(kind: RolloutKind, reward: float) -> Trajectory:
    if kind == RolloutKind.demonstration:
        return Trajectory(kind=kind, response_token_ids=[7, 8], prefix_len=2, behaviour_logprobs=[],
                          policy_version=None, reward=reward, correct=reward > 0)
    prefix_len = 1 if kind == RolloutKind.hybrid else 0
    return Trajectory(kind=kind, response_token_ids=[7, 8], prefix_len=prefix_len,
                      behaviour_logprobs=[-0.5] * (2 - prefix_len), policy_version=0, reward=reward,
                      correct=reward > 0)


def _group(*members: tuple[RolloutKind, float]) -> TrajectoryGroup:
    return TrajectoryGroup(id="g", prompt_id="p", issued_at_version=0, step=0, worker_id="w",
                           prompt_token_ids=[1, 2], trajectories=[_trajectory(k, r) for k, r in members])


ON, HY, DEMO = RolloutKind.on_policy, RolloutKind.hybrid, RolloutKind.demonstration


def test_group_baseline_includes_the_hybrid():
    # rewards 1, 0, 0 (on-policy) and 1 (hybrid): mean 2/4 = 0.5
    group = _group((ON, 1.0), (ON, 0.0), (ON, 0.0), (HY, 1.0))
    advantages = group_advantages(group, AlgorithmSettings(baseline=Baseline.group))
    assert advantages == pytest.approx([0.5, -0.5, -0.5, 0.5])


def test_exclude_hybrid_baseline_uses_on_policy_rewards_only():
    # baseline = mean(1, 0, 0) = 1/3; the hybrid is scored against it too
    group = _group((ON, 1.0), (ON, 0.0), (ON, 0.0), (HY, 1.0))
    advantages = group_advantages(group, AlgorithmSettings(baseline=Baseline.exclude_hybrid))
    assert advantages == pytest.approx([2 / 3, -1 / 3, -1 / 3, 2 / 3])


def test_no_std_division():
    # GRPO would divide by std; Dr.GRPO keeps the raw difference: 1 - 1/8 = 0.875, 0 - 1/8 = -0.125
    group = _group((HY, 1.0), *[(ON, 0.0)] * 7)
    advantages = group_advantages(group, AlgorithmSettings())
    assert advantages == pytest.approx([0.875] + [-0.125] * 7)


def test_demonstration_counts_in_the_group_mean_like_a_hybrid():
    # LUFFY: three failed rollouts and a correct demonstration, group mean 0.25
    group = _group((ON, 0.0), (ON, 0.0), (ON, 0.0), (DEMO, 1.0))
    settings = AlgorithmSettings.preset("luffy", n_rollouts=4)
    assert group_advantages(group, settings) == pytest.approx([-0.25, -0.25, -0.25, 0.75])
    excluded = settings.model_copy(update={"baseline": Baseline.exclude_hybrid})
    assert group_advantages(group, excluded) == pytest.approx([0.0, 0.0, 0.0, 1.0])


def test_uniform_rewards_give_zero_advantages():
    group = _group((ON, 1.0), (ON, 1.0), (HY, 1.0))
    assert group_advantages(group, AlgorithmSettings()) == [0.0, 0.0, 0.0]


def test_exclude_hybrid_without_on_policy_rollouts_is_an_error():
    group = _group((HY, 1.0), (HY, 0.0))
    with pytest.raises(ValueError, match="on-policy"):
        group_advantages(group, AlgorithmSettings(baseline=Baseline.exclude_hybrid))
