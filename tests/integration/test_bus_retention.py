"""Redis stays flat, on a real redis-server: after a checkpoint the learner trims what is durably consumed
(trajectories it acknowledged, tasks the workers acknowledged), the append-once ids below the tasks
stream's low water are let go, and a late copy of a settled task's group is still refused."""

from __future__ import annotations

import time

import pytest

from shared.bus import FeederState, Keys, LedgerQueries, TaskStream, TrajectoryStream, footprint, trim_consumed
from shared.messages import RolloutKind, RolloutTask, Trajectory, TrajectoryGroup

pytestmark = pytest.mark.integration


def _task(i: int) -> RolloutTask:
    return RolloutTask(id=f"run-{i:08d}", prompt_id=str(i), issued_at_version=0, step=0, prompt_token_ids=[1, 2],
                       reference="3", n_on_policy=1)


def _group(task: RolloutTask, worker: str = "w") -> TrajectoryGroup:
    trajectory = Trajectory(kind=RolloutKind.on_policy, response_token_ids=[5, 6], prefix_len=0,
                            behaviour_logprobs=[-0.5, -0.25], policy_version=0, reward=1.0, correct=True)
    return TrajectoryGroup(id=task.id, prompt_id=task.prompt_id, issued_at_version=0, step=0, worker_id=worker,
                           prompt_token_ids=task.prompt_token_ids, trajectories=[trajectory])


@pytest.fixture
def bus(redis_client, namespace):
    keys = Keys(namespace)
    tasks, trajectories = TaskStream(redis_client, keys), TrajectoryStream(redis_client, keys)
    tasks.ensure_group()
    trajectories.ensure_group()
    return keys, tasks, trajectories


def _issue(tasks: TaskStream, start: int, n: int) -> None:
    for i in range(start, start + n):
        tasks.issue(_task(i), "run", FeederState(position=i + 1, issued=i + 1))
        time.sleep(0.002)  # one task per millisecond at least, as a learner issues them


def test_only_what_is_acknowledged_is_trimmed(bus, redis_client):
    keys, tasks, trajectories = bus
    _issue(tasks, 0, 6)
    delivered = tasks.read("worker", count=4)
    for entry in delivered[:3]:  # the fourth stays in flight on the worker
        assert trajectories.append_once(_group(entry.message), entry.entry_id)
        tasks.ack(entry.entry_id)
    read = trajectories.read("learner", count=3)
    trajectories.ack(*[e.entry_id for e in read[:2]])  # a checkpoint covered two of the three

    report = trim_consumed(tasks, trajectories)

    assert (report.tasks_deleted, report.trajectories_deleted) == (3, 2)
    left_tasks = [t.id for t in LedgerQueries(redis_client, keys).tasks()]
    assert left_tasks == [f"run-{i:08d}" for i in (3, 4, 5)]  # in flight, and never delivered
    assert [g.id for g in LedgerQueries(redis_client, keys).groups()] == [read[2].message.id]
    # The pending group and the in-flight task are still there to be delivered again.
    assert [e.message.id for e in trajectories.reclaim("learner-2", min_idle_ms=0)] == [read[2].message.id]
    assert [e.message.id for e in tasks.reclaim("worker-2", min_idle_ms=0)] == [delivered[3].message.id]
    # The totals the ledger needs survive the trim.
    queries = LedgerQueries(redis_client, keys)
    assert (queries.tasks_added(), queries.produced_total()) == (6, 3)


def test_nothing_is_trimmed_while_nothing_is_acknowledged(bus):
    _, tasks, trajectories = bus
    _issue(tasks, 0, 3)
    tasks.read("worker", count=3)
    assert trim_consumed(tasks, trajectories).tasks_deleted == 0
    assert tasks.length() == 3


def test_the_watermark_bounds_the_append_once_ids_and_still_refuses_late_copies(bus):
    keys, tasks, trajectories = bus
    _issue(tasks, 0, 5)
    delivered = tasks.read("fast-worker", count=5)
    for entry in delivered[:4]:
        assert trajectories.append_once(_group(entry.message), entry.entry_id)
        tasks.ack(entry.entry_id)

    report = trim_consumed(tasks, trajectories)

    assert report.ids_forgotten == 4 and trajectories.recent_count() == 0
    # A slow worker that held the first task finishes it after its id was let go: refused all the same.
    first = delivered[0]
    assert trajectories.already_produced(first.message.id, first.entry_id)
    assert not trajectories.append_once(_group(first.message, "slow-worker"), first.entry_id)
    assert trajectories.added_total() == 4
    # The task in flight is above the watermark: its group is appended once, a second copy refused.
    last = delivered[4]
    assert not trajectories.already_produced(last.message.id, last.entry_id)
    assert trajectories.append_once(_group(last.message), last.entry_id)
    assert not trajectories.append_once(_group(last.message, "another"), last.entry_id)


def test_the_watermark_never_goes_back(bus):
    _, tasks, trajectories = bus
    trajectories.advance_watermark("5000-0")
    trajectories.advance_watermark("4000-0")
    assert trajectories.watermark() == 5000


def test_redis_stays_flat_over_many_checkpoints(bus, redis_client):
    """Entries issued, produced, consumed and trimmed round after round: what Redis holds stays the same."""
    keys, tasks, trajectories = bus
    sizes = []
    for round_ in range(5):
        _issue(tasks, round_ * 20, 20)
        for entry in tasks.read("worker", count=20):
            trajectories.append_once(_group(entry.message), entry.entry_id)
            tasks.ack(entry.entry_id)
        trajectories.ack(*[e.entry_id for e in trajectories.read("learner", count=20)])
        trim_consumed(tasks, trajectories)
        seen = footprint(redis_client, keys)
        sizes.append((seen.tasks, seen.trajectories, seen.produced_recent))
    assert all(size == sizes[0] for size in sizes), sizes
    assert sizes[0][0] == 0 and sizes[0][1] == 0 and sizes[0][2] <= 1
    assert LedgerQueries(redis_client, keys).produced_total() == 100


def test_a_second_reader_holds_trimming_back_until_it_acknowledges(bus, redis_client):
    keys, tasks, trajectories = bus
    audit = TaskStream(redis_client, keys)
    audit.group = "audit"
    audit.ensure_group()
    _issue(tasks, 0, 3)
    for entry in tasks.read("worker", count=3):
        tasks.ack(entry.entry_id)
    assert trim_consumed(tasks, trajectories).tasks_deleted == 0
    read = audit.read("auditor", count=3)
    audit.ack(*[e.entry_id for e in read[:2]])
    assert trim_consumed(tasks, trajectories).tasks_deleted == 2
    assert [t.id for t in LedgerQueries(redis_client, keys).tasks()] == [read[2].message.id]
