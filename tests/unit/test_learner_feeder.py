"""RolloutTask composition: prefix cuts from the shared schedule, the baselines' groups, demo_fraction."""

import random

import pytest

from services.learner.algorithm import AlgorithmSettings
from services.learner.feeder import DataOrder, TaskFactory, keeps_demonstration
from shared.api.rollout import SamplingParams
from shared.datasets.arithmetic import ArithmeticDataset
from shared.modeling import load_tokenizer, prompt_token_ids, response_token_ids


@pytest.fixture(scope="module")
def tokenizer(default_init_dir):
    return load_tokenizer(default_init_dir)


@pytest.fixture(scope="module")
def problems():
    return ArithmeticDataset(train_size=50).problems("train")


def factory(tokenizer, algorithm: AlgorithmSettings) -> TaskFactory:
    return TaskFactory(tokenizer, algorithm, SamplingParams(max_tokens=64), seed=0)


def test_prefix_rft_task_has_one_hybrid_cut_from_the_schedule(tokenizer, problems):
    algo = AlgorithmSettings.preset("prefix-rft")
    for position, problem in enumerate(problems[:20]):
        task = factory(tokenizer, algo).make(f"r-{position}", problem, position, step=0, version=3)
        demo = response_token_ids(tokenizer, problem.demonstrations[0])
        assert task.prompt_token_ids == prompt_token_ids(tokenizer, problem.prompt)
        assert task.n_on_policy == 7 and len(task.hybrid_prefixes) == 1 and task.group_size == 8
        prefix = task.hybrid_prefixes[0]
        assert demo[: len(prefix)] == prefix and 1 <= len(prefix) <= len(demo) - 1
        # At step 0 the cosine schedule gives l ~ U[0.95, 0.95]: nearly the whole demonstration.
        assert len(prefix) == algo.schedule.cut(0.95, len(demo))
        assert task.issued_at_version == 3 and task.reference == problem.answer


def test_prefix_cuts_follow_the_step_and_are_reproducible(tokenizer, problems):
    algo = AlgorithmSettings.preset("prefix-rft")
    make = factory(tokenizer, algo).make
    late = [len(make("x", p, i, step=500, version=0).hybrid_prefixes[0]) for i, p in enumerate(problems)]
    again = [len(make("x", p, i, step=500, version=0).hybrid_prefixes[0]) for i, p in enumerate(problems)]
    assert late == again  # a pure function of (seed, position, step)
    demo_lens = [len(response_token_ids(tokenizer, p.demonstrations[0])) for p in problems]
    ratios = [cut / n for cut, n in zip(late, demo_lens)]
    assert min(ratios) < 0.5 < max(ratios)  # after the decay l ~ U[0.05, 0.95]


def test_the_problems_verifier_travels_with_its_task(tokenizer, problems):
    make = factory(tokenizer, AlgorithmSettings.preset("prefix-rft")).make
    assert make("a", problems[0], 0, step=0, version=0).verifier == "math"  # none named: the default
    named = problems[0].model_copy(update={"verifier": "within_one"})
    assert make("b", named, 0, step=0, version=0).verifier == "within_one"


@pytest.mark.parametrize(
    ("name", "n_on_policy", "n_hybrid", "n_demo"),
    [("rft", 8, 0, 0), ("luffy", 7, 0, 1), ("prefix-rft-frozen-prefix", 7, 1, 0), ("sft-then-rft", 8, 0, 0)],
)
def test_baselines_groups(tokenizer, problems, name, n_on_policy, n_hybrid, n_demo):
    task = factory(tokenizer, AlgorithmSettings.preset(name)).make("x", problems[0], 0, step=0, version=0)
    assert (task.n_on_policy, len(task.hybrid_prefixes), len(task.demonstrations)) == (n_on_policy, n_hybrid, n_demo)
    if n_demo:
        assert task.demonstrations[0] == response_token_ids(tokenizer, problems[0].demonstrations[0])
        assert task.demonstration_texts == [problems[0].demonstrations[0]]


def test_prompts_without_demonstration_get_all_rollouts_on_policy(tokenizer, problems):
    algo = AlgorithmSettings.preset("prefix-rft", demo_fraction=0.1)
    tasks = [factory(tokenizer, algo).make("x", p, i, 0, 0) for i, p in enumerate(problems)]
    with_demo = [t for t in tasks if t.hybrid_prefixes]
    assert 0 < len(with_demo) < len(tasks) // 2
    assert all(t.n_on_policy == 8 for t in tasks if not t.hybrid_prefixes)
    assert all(t.group_size == 8 for t in tasks)
    # The choice is per prompt id and seed, so every run with this seed keeps the same prompts.
    assert [t.prompt_id for t in with_demo] == [p.id for p in problems if keeps_demonstration(p.id, 0.1, 0)]


def test_data_order_is_a_seeded_permutation_per_epoch(problems):
    order = DataOrder(problems, seed=1)
    first = [order.at(i).id for i in range(len(problems))]
    second = [order.at(len(problems) + i).id for i in range(len(problems))]
    assert sorted(first) == sorted(p.id for p in problems) == sorted(second)
    assert first != second
    assert [DataOrder(problems, seed=1).at(i).id for i in random.Random(0).sample(range(200), 20)] == [
        order.at(i).id for i in random.Random(0).sample(range(200), 20)
    ]
