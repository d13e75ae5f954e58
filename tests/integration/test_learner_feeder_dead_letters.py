"""A task that a worker dead-letters never produces a group: the learner gives its place in the staleness
window back, so lost tasks cannot stall training (on a real redis-server)."""

from __future__ import annotations

import pytest

from services.learner.algorithm import AlgorithmSettings
from services.learner.feeder import DataOrder, Feeder, TaskFactory
from shared.api.rollout import SamplingParams
from shared.codec import decode, encode
from shared.datasets.arithmetic import ArithmeticDataset
from shared.messages import RolloutTask
from shared.modeling import load_tokenizer
from shared.streams import Keys

pytestmark = pytest.mark.integration


def _feeder(redis_client, namespace, tokenizer, run_id="run") -> Feeder:
    factory = TaskFactory(tokenizer, AlgorithmSettings.preset("prefix-rft"), SamplingParams(max_tokens=16), seed=0)
    problems = ArithmeticDataset(train_size=20).problems("train")
    return Feeder(redis_client, Keys(namespace), run_id, DataOrder(problems, 0), factory, window=4, batch_prompts=2)


def _dead_letter(redis_client, keys: Keys, task: RolloutTask) -> None:
    # What a rollout worker does (services/rollout/taskqueue.py): the task, the reason, its entry id.
    redis_client.xadd(keys.dead_letters(keys.tasks), {**encode(task), b"error": b"refused", b"entry_id": b"1-0"})


def test_a_dead_lettered_task_frees_its_place_in_the_window(redis_client, namespace, default_init_dir):
    feeder = _feeder(redis_client, namespace, load_tokenizer(default_init_dir))
    keys = Keys(namespace)
    assert feeder.fill(step=0, version=0, consumed_ids=set()) == 4
    assert feeder.fill(step=0, version=0, consumed_ids=set()) == 0  # the window is full
    first = decode(RolloutTask, redis_client.xrange(keys.tasks, count=1)[0][1])
    _dead_letter(redis_client, keys, first)
    redis_client.xadd(keys.dead_letters(keys.tasks), {b"junk": b"1"})  # unreadable: ignored
    assert feeder.fill(step=0, version=0, consumed_ids=set()) == 1
    assert feeder.outstanding(set()) == 4
    # The same task both dead-lettered and consumed (a second copy produced it) frees one place only.
    assert feeder.outstanding({first.id}) == 4
    # A restarted learner finds the dead letters again.
    again = _feeder(redis_client, namespace, load_tokenizer(default_init_dir))
    again.catch_up()
    assert again.fill(step=0, version=0, consumed_ids=set()) == 0 and again.dead_ids == {first.id}


def test_another_runs_dead_letters_free_nothing(redis_client, namespace, default_init_dir):
    tokenizer = load_tokenizer(default_init_dir)
    other = _feeder(redis_client, namespace, tokenizer, run_id="other")
    other.fill(step=0, version=0, consumed_ids=set())
    keys = Keys(namespace)
    _dead_letter(redis_client, keys, decode(RolloutTask, redis_client.xrange(keys.tasks, count=1)[0][1]))
    mine = _feeder(redis_client, namespace, tokenizer)
    assert mine.fill(step=0, version=0, consumed_ids=set()) == 4 and mine.dead_ids == set()
