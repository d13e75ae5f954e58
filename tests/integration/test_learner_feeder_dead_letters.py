"""A task that a worker dead-letters never produces a group: the learner gives its place in the staleness
window back, so lost tasks cannot stall training (on a real redis-server)."""

from __future__ import annotations

import pytest

from services.learner.algorithm import AlgorithmSettings
from services.learner.consumed import ConsumedIds
from services.learner.feeder import DataOrder, Feeder, TaskFactory
from shared.api.rollout import SamplingParams
from shared.bus import Keys, TaskStream
from shared.datasets.arithmetic import ArithmeticDataset
from shared.modeling import load_tokenizer

pytestmark = pytest.mark.integration


def _feeder(redis_client, namespace, tokenizer, run_id="run") -> Feeder:
    tasks = TaskStream(redis_client, Keys(namespace))
    tasks.ensure_group()  # as the learner does before its feeder issues a task
    factory = TaskFactory(tokenizer, AlgorithmSettings.preset("prefix-rft"), SamplingParams(max_tokens=16), seed=0)
    problems = ArithmeticDataset(train_size=20).problems("train")
    return Feeder(tasks, run_id, DataOrder(problems, 0), factory, window=4, batch_prompts=2)


def _dead_letter_the_next_task(tasks: TaskStream):
    # What a rollout worker does with a task that can never produce a group.
    (entry,) = tasks.read("worker", count=1)
    tasks.dead_letter(entry, "refused")
    return entry.message


def test_a_dead_lettered_task_frees_its_place_in_the_window(redis_client, namespace, default_init_dir):
    feeder = _feeder(redis_client, namespace, load_tokenizer(default_init_dir))
    keys = Keys(namespace)
    assert feeder.fill(step=0, version=0, consumed_ids=ConsumedIds()) == 4
    assert feeder.fill(step=0, version=0, consumed_ids=ConsumedIds()) == 0  # the window is full
    first = _dead_letter_the_next_task(feeder.tasks)
    assert first.id == "run-00000000"
    redis_client.xadd(keys.dead_tasks, {b"junk": b"1"})  # unreadable (no code of the project writes it): ignored
    assert feeder.fill(step=0, version=0, consumed_ids=ConsumedIds()) == 1
    assert feeder.outstanding(set()) == 4
    # The same task both dead-lettered and consumed (a second copy produced it) frees one place only.
    assert feeder.outstanding({first.id}) == 4
    # A restarted learner finds the dead letters again.
    again = _feeder(redis_client, namespace, load_tokenizer(default_init_dir))
    again.catch_up()
    assert again.fill(step=0, version=0, consumed_ids=ConsumedIds()) == 0 and again.dead_ids == {first.id}


def test_another_runs_dead_letters_free_nothing(redis_client, namespace, default_init_dir):
    tokenizer = load_tokenizer(default_init_dir)
    other = _feeder(redis_client, namespace, tokenizer, run_id="other")
    other.fill(step=0, version=0, consumed_ids=ConsumedIds())
    _dead_letter_the_next_task(other.tasks)
    mine = _feeder(redis_client, namespace, tokenizer)
    assert mine.fill(step=0, version=0, consumed_ids=ConsumedIds()) == 4 and mine.dead_ids == set()
