"""The consumed-ids watermark answers exactly as the set of every decided id would, in bounded memory."""

import random

from services.learner.consumed import ConsumedIds, ConsumedState


def ids(numbers):
    return [f"run-{n:08d}" for n in numbers]


def test_answers_like_a_set_whatever_the_order_and_repeats():
    rng = random.Random(0)
    numbers = list(range(2_048))
    # Decided roughly in issue order: shuffled within windows of 64, some decided twice.
    order = [n for start in range(0, 2_048, 64) for n in rng.sample(numbers[start:start + 64], 64)]
    order += rng.sample(numbers, 100)
    decided = set()
    consumed = ConsumedIds()
    for group_id in ids(order[:1_500]):
        consumed.add(group_id)
        decided.add(group_id)
    assert len(consumed) == len(decided)
    for group_id in ids(range(2_100)):
        assert (group_id in consumed) == (group_id in decided), group_id


def test_memory_stays_bounded_over_a_long_run():
    rng = random.Random(1)
    consumed = ConsumedIds()
    largest = 0
    for start in range(0, 102_400, 128):  # 102,400 groups, each window of 128 decided out of order
        window = list(range(start, start + 128))
        rng.shuffle(window)
        for group_id in ids(window):
            consumed.add(group_id)
            largest = max(largest, consumed.remembered())
    assert len(consumed) == 102_400 and consumed.floor == 102_400
    assert largest < 128  # never more than one window's worth, where a set held them all


def test_a_dead_lettered_task_does_not_stall_the_watermark_and_is_not_decided():
    consumed = ConsumedIds()
    consumed.add("run-00000000")
    consumed.dead("run-00000001")  # a worker gave up on it: no group will come
    for group_id in ids(range(2, 50)):
        consumed.add(group_id)
    assert consumed.floor == 50 and consumed.remembered() == 1  # the one hole
    assert "run-00000001" not in consumed and len(consumed) == 49
    consumed.add("run-00000001")  # its group came after all: decided, counted once
    consumed.add("run-00000001")
    assert "run-00000001" in consumed and len(consumed) == 50 and consumed.remembered() == 0


def test_the_checkpoint_state_restores_the_same_answers():
    consumed = ConsumedIds.of(ids([0, 1, 2, 5, 9]) + ["seed-group"])
    consumed.dead("run-00000003")
    restored = ConsumedIds(ConsumedState.model_validate_json(consumed.state().model_dump_json()))
    for group_id in ids(range(12)) + ["seed-group", "other"]:
        assert (group_id in restored) == (group_id in consumed), group_id
    assert len(restored) == len(consumed) == 6
