"""From a task to its trajectory group: engine requests, order, prefixes, demonstrations, scores."""

import pytest

from services.rollout.group import assemble, drafts, plan_group, score_items
from shared.api.reward import ScoreResult, ScoreStatus
from shared.api.rollout import Sample, SamplingParams
from shared.messages import RolloutKind, RolloutTask

EOS = 1


def make_task(**kwargs) -> RolloutTask:
    fields = dict(
        id="t1", prompt_id="p1", issued_at_version=4, step=9, prompt_token_ids=[2, 10, 11, 3], reference="7",
        n_on_policy=2, hybrid_prefixes=[[20, 21], [30], [20, 21]], demonstrations=[[20, 21, 22, EOS]],
        demonstration_texts=["demo"], sampling=SamplingParams(temperature=1.0, max_tokens=8, seed=3),
    )
    fields.update(kwargs)
    return RolloutTask(**fields)


def sample(tokens, finish="stop"):
    return Sample(token_ids=tokens, logprobs=[-0.5] * len(tokens), text="", finish_reason=finish)


def decode(ids):
    return " ".join(map(str, ids))


def test_equal_prefixes_share_one_request_and_keep_their_places():
    task = make_task()
    plan = plan_group(task)
    shapes = [(r.prefix_token_ids, r.n) for r in plan.requests]
    assert shapes == [([], 2), ([20, 21], 2), ([30], 1)]
    assert all(r.prompt_token_ids == task.prompt_token_ids and r.sampling == task.sampling for r in plan.requests)
    assert plan.on_policy_request == 0
    assert plan.hybrid_slots == [(1, 0), (2, 0), (1, 1)]


def test_group_order_prefixes_logprobs_and_versions():
    task = make_task()
    plan = plan_group(task)
    results = [[sample([5, EOS]), sample([6, 7], "length")], [sample([40, EOS]), sample([41, 42, EOS])], [sample([50])]]
    group = drafts(task, plan, 4, results, decode)
    kinds = [RolloutKind.on_policy] * 2 + [RolloutKind.hybrid] * 3 + [RolloutKind.demonstration]
    assert [d.kind for d in group] == kinds
    on_policy, hybrids, demo = group[:2], group[2:5], group[5]
    assert on_policy[0].response_token_ids == [5, EOS] and on_policy[0].prefix_len == 0
    assert on_policy[1].finish_reason == "length"
    assert [h.response_token_ids for h in hybrids] == [[20, 21, 40, EOS], [30, 50], [20, 21, 41, 42, EOS]]
    assert [h.prefix_len for h in hybrids] == [2, 1, 2]
    assert [len(h.behaviour_logprobs) for h in hybrids] == [2, 1, 3]  # continuation only
    assert hybrids[0].text == "20 21 40 1"  # prefix and continuation decoded together
    assert {d.policy_version for d in group[:5]} == {4}
    assert demo.response_token_ids == [20, 21, 22, EOS] and demo.prefix_len == 4
    assert demo.behaviour_logprobs == [] and demo.policy_version is None and demo.text == "demo"

    items = score_items(task, group)
    assert [i.id for i in items] == [f"t1:{i}" for i in range(6)]
    assert {i.reference for i in items} == {"7"}
    scores = [ScoreResult(id=i.id, reward=float(n % 2), correct=bool(n % 2)) for n, i in enumerate(items)]
    scores[1] = ScoreResult(id=items[1].id, reward=0.0, correct=False, status=ScoreStatus.timeout)
    result = assemble(task, "w1", group, scores)
    assert result.id == "t1" and result.worker_id == "w1" and result.step == 9 and result.issued_at_version == 4
    assert [t.reward for t in result.trajectories] == [0.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    assert result.trajectories[1].score_status is ScoreStatus.timeout
    assert result.oldest_policy_version == 4
    assert result.verifier == task.verifier  # what the rewards mean travels with them


def test_demonstration_without_text_is_decoded_and_pure_rft_has_no_hybrid():
    task = make_task(hybrid_prefixes=[], demonstration_texts=[], n_on_policy=3)
    plan = plan_group(task)
    assert [(r.prefix_token_ids, r.n) for r in plan.requests] == [([], 3)]
    group = drafts(task, plan, 0, [[sample([5]), sample([6]), sample([7])]], decode)
    assert group[-1].text == decode([20, 21, 22, EOS])
    only_demo = make_task(n_on_policy=0, hybrid_prefixes=[])
    assert plan_group(only_demo).requests == []


def test_scores_must_match_the_group():
    task = make_task(hybrid_prefixes=[], demonstrations=[], demonstration_texts=[], n_on_policy=1)
    group = drafts(task, plan_group(task), 0, [[sample([5])]], decode)
    with pytest.raises(ValueError, match="1 trajectories"):
        assemble(task, "w", group, [])
