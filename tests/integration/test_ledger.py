"""The reconciliation of a run's books, on a real redis-server with hand-made streams and ledger lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.ledger import reconcile
from shared.api.rollout import SamplingParams
from shared.bus import FeederState, Keys, LedgerQueries, TaskStream, TrajectoryStream, trim_consumed
from shared.messages import RolloutTask, Trajectory, TrajectoryGroup
from shared.records import Decision, LedgerEvent, ledger_file

pytestmark = pytest.mark.integration


def _task(i: int) -> RolloutTask:
    return RolloutTask(
        id=f"run-{i:08d}",
        prompt_id=str(i),
        issued_at_version=0,
        step=0,
        prompt_token_ids=[1, 2],
        reference="3",
        n_on_policy=1,
        sampling=SamplingParams(),
    )


def _group(i: int) -> TrajectoryGroup:
    trajectory = Trajectory(
        kind="on_policy",
        response_token_ids=[5],
        prefix_len=0,
        behaviour_logprobs=[-0.1],
        policy_version=0,
        reward=1.0,
        correct=True,
    )
    return TrajectoryGroup(
        id=f"run-{i:08d}",
        prompt_id=str(i),
        issued_at_version=0,
        step=0,
        worker_id="w",
        prompt_token_ids=[1, 2],
        trajectories=[trajectory],
    )


def _books(client, namespace: str, learner: Path, tasks: int, produced: int, events: list[Decision]) -> Keys:
    keys = Keys(namespace)
    task_queue = TaskStream(client, keys)
    task_queue.ensure_group()
    trajectories = TrajectoryStream(client, keys)
    trajectories.ensure_group()
    for i in range(tasks):
        task_queue.issue(_task(i), "run", FeederState(position=i + 1, issued=i + 1))
    delivered = task_queue.read("w", count=produced)
    for i in range(produced):
        assert trajectories.append_once(_group(i), delivered[i].entry_id)
    task_queue.ack(*[e.entry_id for e in delivered])
    decided = {gid for e in events for gid in e.ids}
    for entry in trajectories.read("learner-0", count=100):
        if entry.message.id in decided:
            trajectories.ack(entry.entry_id)
    ledger = ledger_file(learner)
    for event in events:
        ledger.append(LedgerEvent(commit=1, **event.model_dump(exclude_unset=True)))
    return keys


def test_books_that_balance_reconcile(redis_client, namespace, tmp_path):
    events = [
        Decision(event="trained", ids=["run-00000000", "run-00000001"]),
        Decision(event="stale", ids=["run-00000002"]),
    ]
    keys = _books(redis_client, namespace, tmp_path, tasks=6, produced=4, events=events)
    ledger = reconcile(LedgerQueries(redis_client, keys), tmp_path)
    assert ledger.ok, ledger.problems
    assert (ledger.issued, ledger.produced, len(ledger.trained), len(ledger.stale), len(ledger.queued)) == (
        6,
        4,
        2,
        1,
        1,
    )
    assert ledger.tasks_waiting == 2 and ledger.tasks_dead == 0
    assert "reconciles: yes" in ledger.render()


def test_a_group_trained_twice_is_reported(redis_client, namespace, tmp_path):
    events = [Decision(event="trained", ids=["run-00000000"]), Decision(event="trained", ids=["run-00000000"])]
    keys = _books(redis_client, namespace, tmp_path, tasks=1, produced=1, events=events)
    ledger = reconcile(LedgerQueries(redis_client, keys), tmp_path)
    assert not ledger.ok and "trained more than once" in ledger.problems[0]


def test_a_group_acknowledged_but_never_decided_is_reported_lost(redis_client, namespace, tmp_path):
    keys = _books(redis_client, namespace, tmp_path, tasks=2, produced=2, events=[])
    first_id, _ = LedgerQueries(redis_client, keys).trajectory_ids()[0]  # read by the learner, then acknowledged
    TrajectoryStream(redis_client, keys).ack(first_id)
    ledger = reconcile(LedgerQueries(redis_client, keys), tmp_path)
    assert any("lost" in p for p in ledger.problems), ledger.problems


def test_a_group_decided_but_never_produced_is_reported(redis_client, namespace, tmp_path):
    events = [Decision(event="trained", ids=["run-00000000", "run-00000099"])]
    keys = _books(redis_client, namespace, tmp_path, tasks=1, produced=1, events=events)
    ledger = reconcile(LedgerQueries(redis_client, keys), tmp_path)
    assert any("never produced" in p for p in ledger.problems), ledger.problems


def test_books_still_balance_once_the_consumed_entries_are_trimmed(redis_client, namespace, tmp_path):
    """After a checkpoint the learner trims what it consumed: the counts come from the streams' counters."""
    events = [
        Decision(event="trained", ids=["run-00000000", "run-00000001"]),
        Decision(event="stale", ids=["run-00000002"]),
    ]
    keys = _books(redis_client, namespace, tmp_path, tasks=6, produced=4, events=events)
    report = trim_consumed(TaskStream(redis_client, keys), TrajectoryStream(redis_client, keys))
    assert report.tasks_deleted == 4 and report.trajectories_deleted == 3
    ledger = reconcile(LedgerQueries(redis_client, keys), tmp_path)
    assert ledger.ok, ledger.problems
    books = (ledger.issued, ledger.produced, len(ledger.trained), len(ledger.stale), len(ledger.queued))
    assert books == (6, 4, 2, 1, 1) and ledger.tasks_waiting == 2
    # A queued group acknowledged without a decision is still caught after the trim.
    (entry_id, _), = LedgerQueries(redis_client, keys).trajectory_ids()
    TrajectoryStream(redis_client, keys).ack(entry_id)
    trim_consumed(TaskStream(redis_client, keys), TrajectoryStream(redis_client, keys))
    assert any("lost" in p for p in reconcile(LedgerQueries(redis_client, keys), tmp_path).problems)
