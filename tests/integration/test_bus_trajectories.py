"""The trajectories stream on a real redis-server: each task's group is appended once, whichever worker
finishes it, and a redelivered entry is the same group."""

from __future__ import annotations

import time

import pytest

from shared.bus import Keys, LedgerQueries, TrajectoryStream
from shared.messages import RolloutKind, Trajectory, TrajectoryGroup

pytestmark = pytest.mark.integration

TASK_ENTRY = "1000-0"  # the task's entry in the tasks stream (its millisecond scores the append-once id)


def group(group_id: str, worker: str = "w") -> TrajectoryGroup:
    trajectory = Trajectory(kind=RolloutKind.on_policy, response_token_ids=[5, 1], prefix_len=0,
                            behaviour_logprobs=[-0.1, -0.2], policy_version=0, reward=1.0, correct=True)
    return TrajectoryGroup(id=group_id, prompt_id="p", issued_at_version=0, step=0, worker_id=worker,
                           prompt_token_ids=[2, 3], trajectories=[trajectory])


def test_a_group_is_appended_once(redis_client, namespace):
    keys = Keys(namespace)
    stream = TrajectoryStream(redis_client, keys)
    assert stream.append_once(group("t1", "a"), TASK_ENTRY)
    assert not stream.append_once(group("t1", "b"), TASK_ENTRY)
    assert stream.already_produced("t1", TASK_ENTRY) and not stream.already_produced("t2", TASK_ENTRY)
    (appended,) = LedgerQueries(redis_client, keys).groups()
    assert appended.worker_id == "a"


def test_duplicate_detection_by_id(redis_client, namespace):
    stream = TrajectoryStream(redis_client, Keys(namespace))
    assert stream.append_once(group("g-1"), TASK_ENTRY) is True
    assert stream.append_once(group("g-2"), TASK_ENTRY) is True
    assert stream.append_once(group("g-1"), TASK_ENTRY) is False
    assert stream.already_produced("g-1", TASK_ENTRY) and not stream.already_produced("g-3", TASK_ENTRY)
    assert stream.recent_count() == 2
    assert stream.length() == 2


def test_at_least_once_delivery_trains_each_group_once(redis_client, namespace):
    """A redelivered entry (consumer died after using it, before acking) comes back as the same group, and
    a second worker finishing the same task (it was reclaimed from a slow one) appends no second copy."""
    stream = TrajectoryStream(redis_client, Keys(namespace))
    stream.ensure_group()
    assert stream.append_once(group("g-1"), TASK_ENTRY)

    first = stream.read("learner-1", count=1)
    time.sleep(0.05)  # learner-1 dies without acking
    again = stream.reclaim("learner-2", min_idle_ms=10)
    assert [e.message.id for e in again] == [first[0].message.id]
    assert not stream.append_once(group("g-1", "another worker"), TASK_ENTRY)
    assert stream.backlog() == 0 and stream.length() == 1
    assert stream.pending() == 1
    assert stream.ack(again[0].entry_id) == 1 and stream.pending() == 0
