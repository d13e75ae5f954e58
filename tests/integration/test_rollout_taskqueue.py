"""The worker's Redis operations on a real redis-server: idempotent append, hand-back, keep-alive, reclaim."""

from __future__ import annotations

import time

import pytest

from services.rollout.taskqueue import TaskQueue
from shared.codec import decode, decode_value, encode_value
from shared.messages import RolloutKind, RolloutTask, Trajectory, TrajectoryGroup, WeightsRecord, WorkerInfo
from shared.streams import TASKS_GROUP, Keys, StreamQueue

pytestmark = pytest.mark.integration


def task(task_id: str) -> RolloutTask:
    return RolloutTask(id=task_id, prompt_id="p", issued_at_version=0, step=0, prompt_token_ids=[2, 3], reference="1",
                n_on_policy=1)


def group(task_id: str, worker: str) -> TrajectoryGroup:
    trajectory = Trajectory(kind=RolloutKind.on_policy, response_token_ids=[5, 1], prefix_len=0,
                            behaviour_logprobs=[-0.1, -0.2], policy_version=0, reward=1.0, correct=True)
    return TrajectoryGroup(id=task_id, prompt_id="p", issued_at_version=0, step=0, worker_id=worker,
                           prompt_token_ids=[2, 3], trajectories=[trajectory])


@pytest.fixture
def queues(redis_client, namespace):
    keys = Keys(namespace)
    a, b = TaskQueue(redis_client, keys, "a"), TaskQueue(redis_client, keys, "b")
    a.ensure_group()
    producer = StreamQueue(redis_client, keys.tasks, TASKS_GROUP, RolloutTask)
    return keys, producer, a, b


def test_a_group_is_appended_once(redis_client, queues):
    keys, _, a, b = queues
    assert a.append_once(group("t1", "a"))
    assert not b.append_once(group("t1", "b"))
    assert a.already_produced("t1") and not a.already_produced("t2")
    entries = redis_client.xrange(keys.trajectories)
    assert len(entries) == 1
    assert decode(TrajectoryGroup, entries[0][1]).worker_id == "a"


def test_released_tasks_are_reclaimed_at_once_and_kept_alive_ones_are_not(queues):
    _, producer, a, b = queues
    for i in range(3):
        producer.append(task(f"t{i}"))
    taken = a.read_new(3, block_ms=100)
    assert [e.message.id for e in taken] == ["t0", "t1", "t2"]
    time.sleep(0.3)
    a.keepalive([taken[0].entry_id])  # still working on t0
    a.release([taken[1].entry_id])  # handed back t1
    # t2 is idle 300 ms, t0 was just refreshed, t1 is released.
    assert [e.message.id for e in b.reclaim(min_idle_ms=60_000, count=10)] == ["t1"]
    assert [e.message.id for e in b.reclaim(min_idle_ms=200, count=10)] == ["t2"]
    assert b.deliveries(taken[1].entry_id) == 2
    # A restarted "a" finds what is still pending on it.
    assert [e.message.id for e in a.read_own_pending(10)] == ["t0"]


def test_dead_letters_keep_the_task_and_stop_redelivery(redis_client, queues):
    keys, producer, a, _ = queues
    producer.append(task("bad"))
    (entry,) = a.read_new(1, block_ms=100)
    a.dead_letter(entry, "prompt too long")
    assert producer.pending() == 0
    (dead,) = redis_client.xrange(keys.dead_letters(keys.tasks))
    assert dead[1][b"error"] == b"prompt too long"
    assert decode(RolloutTask, dead[1]).id == "bad"


def test_registry_and_weights_record(redis_client, queues):
    keys, _, a, _ = queues
    assert a.weights_record() is None
    redis_client.set(keys.weights, encode_value(WeightsRecord(version=4, uri="file:///w")))
    assert a.weights_record() == WeightsRecord(version=4, uri="file:///w")
    a.heartbeat("worker-a", "http://127.0.0.1:1", 4)
    info = decode_value(WorkerInfo, redis_client.hget(keys.workers, "worker-a"))
    assert info.version == 4 and info.url == "http://127.0.0.1:1" and time.time() - info.heartbeat_at < 5
    a.deregister("worker-a")
    assert redis_client.hget(keys.workers, "worker-a") is None
    a.leave_group()  # nothing pending on "a": the consumer goes away
    assert all(c["name"] != b"a" for c in redis_client.xinfo_consumers(keys.tasks, TASKS_GROUP))
