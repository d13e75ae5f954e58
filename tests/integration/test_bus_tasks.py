"""The tasks stream on a real redis-server: issue with the feeder state, hand-back, keep-alive, reclaim,
dead letters, leaving the group."""

from __future__ import annotations

import time

import pytest

from shared.bus import FeederState, Keys, TaskStream
from shared.messages import RolloutTask

pytestmark = pytest.mark.integration


def task(task_id: str) -> RolloutTask:
    return RolloutTask(id=task_id, prompt_id="p", issued_at_version=0, step=0, prompt_token_ids=[2, 3], reference="1",
                       n_on_policy=1)


@pytest.fixture
def tasks(redis_client, namespace) -> TaskStream:
    stream = TaskStream(redis_client, Keys(namespace))
    stream.ensure_group()
    return stream


def test_issue_records_the_feeder_state_with_the_task(tasks):
    assert tasks.feeder_state("run") is None
    tasks.issue(task("run-0"), "run", FeederState(position=3, issued=1))
    tasks.issue(task("run-1"), "run", FeederState(position=4, issued=2))
    assert tasks.feeder_state("run") == FeederState(position=4, issued=2)
    assert tasks.feeder_state("other") is None
    assert [e.message.id for e in tasks.read("w", count=10)] == ["run-0", "run-1"]


def test_released_tasks_are_reclaimed_at_once_and_kept_alive_ones_are_not(tasks):
    for i in range(3):
        tasks.append(task(f"t{i}"))
    taken = tasks.read("a", 3, block_ms=100)
    assert [e.message.id for e in taken] == ["t0", "t1", "t2"]
    time.sleep(0.3)
    tasks.keepalive("a", [taken[0].entry_id])  # still working on t0
    tasks.release("a", [taken[1].entry_id])  # handed back t1
    # t2 is idle 300 ms, t0 was just refreshed, t1 is released.
    assert [e.message.id for e in tasks.reclaim("b", min_idle_ms=60_000, count=10)] == ["t1"]
    assert [e.message.id for e in tasks.reclaim("b", min_idle_ms=200, count=10)] == ["t2"]
    assert tasks.deliveries(taken[1].entry_id) == 2
    # A restarted "a" finds what is still pending on it.
    assert [e.message.id for e in tasks.read_own_pending("a", 10)] == ["t0"]
    assert [p.entry_id for p in tasks.pending_entries("b")] == [taken[1].entry_id, taken[2].entry_id]


def test_dead_letters_keep_the_task_and_stop_redelivery(tasks):
    tasks.append(task("bad"))
    (entry,) = tasks.read("a", 1, block_ms=100)
    tasks.dead_letter(entry, "prompt too long")
    assert tasks.pending() == 0
    (dead,) = tasks.read_dead_letters()
    assert dead.error == "prompt too long"
    assert dead.task.id == "bad"
    assert tasks.read_dead_letters(after=dead.entry_id) == []


def test_a_consumer_leaves_the_group_only_with_nothing_pending(tasks):
    tasks.append(task("t"))
    (entry,) = tasks.read("a", 1)
    tasks.leave_group("a")  # "a" still holds t: it stays, so its entry can be found and reclaimed
    assert "a" in tasks.consumers()
    tasks.ack(entry.entry_id)
    tasks.leave_group("a")
    assert "a" not in tasks.consumers()
