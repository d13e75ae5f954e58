"""Intake of trajectory groups against a real Redis: duplicates, stale groups, foreign ids, acks
only after the checkpoint, and redelivery of unacknowledged entries after a crash."""

import pytest

from services.learner.consumed import ConsumedIds
from services.learner.intake import GroupIntake
from shared.bus import Keys, TrajectoryStream
from shared.messages import RolloutKind, Trajectory, TrajectoryGroup

pytestmark = pytest.mark.integration


def group(group_id: str, version: int) -> TrajectoryGroup:
    traj = Trajectory(
        kind=RolloutKind.on_policy, response_token_ids=[5, 6], prefix_len=0, behaviour_logprobs=[-1.0, -1.0],
        policy_version=version, reward=1.0, correct=True,
    )
    return TrajectoryGroup(
        id=group_id, prompt_id="p", issued_at_version=version, step=0, worker_id="w", prompt_token_ids=[1],
        trajectories=[traj],
    )


def make_intake(redis_client, namespace, consumed=None):
    queue = TrajectoryStream(redis_client, Keys(namespace))
    queue.ensure_group()
    intake = GroupIntake(queue, "learner-0", max_staleness=1, owns=lambda i: i.startswith("run-"),
                         consumed_ids=ConsumedIds.of(consumed or ()))
    return queue, intake


def test_decisions_and_acks(redis_client, namespace):
    queue, intake = make_intake(redis_client, namespace)
    for gid, version in [("run-1", 3), ("run-2", 1), ("run-1", 3), ("other-9", 3), ("run-3", 2), ("run-4", 3)]:
        queue.append(group(gid, version))
    assert intake.poll(block_ms=100, count=10) == 6
    assert intake.take(4, version=3, step=7) is None  # run-2 (lag 2) is stale: only run-1, run-3, run-4 remain
    assert intake.counts == {"duplicate": 1, "foreign": 1, "stale": 1}
    taken = intake.take(2, version=3, step=7)
    assert [g.id for g in taken] == ["run-1", "run-3"]
    consumed = intake.consumed_ids
    assert len(consumed) == 3 and all(i in consumed for i in ("run-1", "run-2", "run-3")) and "run-4" not in consumed
    events = {e.event: e for e in intake.decisions.events}
    assert events["trained"].ids == ["run-1", "run-3"] and events["trained"].step == 8
    assert events["stale"].ids == ["run-2"] and events["stale"].lags == [2]
    # Nothing is acknowledged before a checkpoint covers it.
    assert queue.pending() == 6
    queue.ack(*intake.decisions.entry_ids)
    assert queue.pending() == 1  # run-4, read but not yet trained


def test_unacknowledged_entries_come_back_after_a_crash(redis_client, namespace):
    queue, intake = make_intake(redis_client, namespace)
    for i in range(4):
        queue.append(group(f"run-{i}", 0))
    intake.poll(block_ms=100, count=10)
    intake.take(2, version=0, step=0)  # trained, then the learner dies before its checkpoint
    # The restarted learner restores consumed ids from its last checkpoint (none here).
    _, restarted = make_intake(redis_client, namespace, consumed=[])
    assert restarted.recover() == 4
    assert [g.id for g in restarted.take(4, version=0, step=0)] == [f"run-{i}" for i in range(4)]
    # Had the checkpoint covered run-0, its redelivery would be a duplicate.
    _, covered = make_intake(redis_client, namespace, consumed=["run-0"])
    covered.recover()
    assert covered.counts["duplicate"] == 1 and [e.message.id for e in covered.ready] == ["run-1", "run-2", "run-3"]
