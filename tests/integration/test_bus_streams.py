"""The bus's codec and the delivery rules every stream shares (shared/bus/stream.py), on a real redis-server."""

import time

import pytest

from shared.api.reward import ScoreItem, ScoreRequest, ScoreResponse, ScoreResult, ScoreStatus
from shared.api.rollout import GenerateRequest, GenerateResponse, Sample, SamplingParams, WeightUpdate
from shared.bus import Keys, LedgerQueries, MessageStream, codec
from shared.messages import RolloutKind, RolloutTask, Trajectory, TrajectoryGroup, WeightsRecord, WorkerInfo

pytestmark = pytest.mark.integration


def _trajectory_group() -> TrajectoryGroup:
    return TrajectoryGroup(
        id="task-1",
        prompt_id="p-1",
        issued_at_version=3,
        step=7,
        worker_id="w-a",
        prompt_token_ids=[5, 6, 7],
        trajectories=[
            Trajectory(
                kind=RolloutKind.on_policy, response_token_ids=[8, 9], prefix_len=0,
                behaviour_logprobs=[-0.5, -1.25], policy_version=3, reward=1.0, correct=True,
                finish_reason="stop", text="ab",
            ),
            Trajectory(
                kind=RolloutKind.hybrid, response_token_ids=[10, 11, 12], prefix_len=2,
                behaviour_logprobs=[-0.75], policy_version=3, reward=0.0, correct=False,
                score_status=ScoreStatus.timeout, finish_reason="length",
            ),
            Trajectory(
                kind=RolloutKind.demonstration, response_token_ids=[13, 14], prefix_len=2,
                behaviour_logprobs=[], policy_version=None, reward=1.0, correct=True,
            ),
        ],
    )


EVERY_MESSAGE = [
    GenerateRequest(prompt_token_ids=[1, 2], prefix_token_ids=[3], n=4, sampling=SamplingParams(seed=1, stop=["x"])),
    GenerateRequest(prompt="What is 1+1?"),
    GenerateResponse(
        model_version=2, prompt_token_ids=[1], prefix_token_ids=[],
        samples=[Sample(token_ids=[4, 5], logprobs=[-0.1, -0.2], text="hi", finish_reason="stop")],
    ),
    WeightUpdate(version=3, uri="file:///tmp/w/model.safetensors"),
    ScoreRequest(items=[ScoreItem(id="a", response="\\boxed{2}", reference="2")]),
    ScoreResponse(results=[ScoreResult(id="a", reward=1.0, correct=True, extracted="2")]),
    RolloutTask(
        id="t-1", prompt_id="p-1", issued_at_version=0, step=0, prompt_token_ids=[1, 2, 3],
        reference="5", n_on_policy=7, hybrid_prefixes=[[4, 5]], demonstrations=[[4, 5, 6]],
        demonstration_texts=["x"], sampling=SamplingParams(temperature=0.7, max_tokens=64),
    ),
    _trajectory_group(),
    WeightsRecord(version=4, uri="http://127.0.0.1:8002/v1/weights/4"),
    WorkerInfo(worker_id="w", url="http://127.0.0.1:8000", version=1, heartbeat_at=1.5),
]


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_a_stream(message, redis_client, namespace):
    queue = MessageStream(redis_client, f"{namespace}:roundtrip", "g", type(message))
    queue.ensure_group()
    queue.append(message)
    (entry,) = queue.read("c1", count=10)
    assert entry.message == message
    assert type(entry.message) is type(message)


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_as_a_plain_value(message, redis_client, namespace):
    redis_client.set(f"{namespace}:value", codec.encode_value(message))
    assert codec.decode_value(type(message), redis_client.get(f"{namespace}:value")) == message


def test_derived_fields_survive_the_round_trip(redis_client, namespace):
    queue = MessageStream(redis_client, f"{namespace}:t", "g", TrajectoryGroup)
    queue.ensure_group()
    queue.append(_trajectory_group())
    group = queue.read("c", count=1)[0].message
    assert group.trajectories[1].prefix_mask == [True, True, False]
    assert group.trajectories[1].continuation_token_ids == [12]
    assert group.oldest_policy_version == 3


def test_a_decoded_message_of_the_wrong_type_is_refused():
    with pytest.raises(codec.CodecError, match="expected a RolloutTask"):
        codec.decode(RolloutTask, codec.encode(WeightsRecord(version=1, uri="file:///x")))
    fields = codec.encode(WeightsRecord(version=1, uri="file:///x"))
    fields[b"v"] = b"99"
    with pytest.raises(codec.CodecError, match="schema version 99"):
        codec.decode(WeightsRecord, fields)


def test_unreadable_entries_go_to_dead_letters_not_lost(redis_client, namespace):
    keys = Keys(namespace)
    queue = MessageStream(redis_client, keys.tasks, "rollout", RolloutTask)
    queue.ensure_group()
    redis_client.xadd(keys.tasks, {b"garbage": b"1"})  # what no code of the project writes
    assert queue.read("c", count=5) == []
    assert LedgerQueries(redis_client, keys).dead_task_count() == 1
    assert queue.pending() == 0


def test_consumers_of_one_group_share_entries(redis_client, namespace):
    queue = MessageStream(redis_client, Keys(namespace).tasks, "rollout", WeightsRecord)
    queue.ensure_group()
    for version in range(6):
        queue.append(WeightsRecord(version=version, uri="file:///x"))
    first = queue.read("a", count=3)
    second = queue.read("b", count=10)
    versions = sorted(e.message.version for e in first + second)
    assert versions == list(range(6))
    assert len(first) == 3 and len(second) == 3


def test_pending_entries_of_a_dead_consumer_are_reclaimed(redis_client, namespace):
    queue = MessageStream(redis_client, Keys(namespace).tasks, "rollout", WeightsRecord)
    queue.ensure_group()
    ids = [queue.append(WeightsRecord(version=v, uri="file:///x")) for v in range(3)]
    taken = queue.read("dead-consumer", count=3)
    assert [e.entry_id for e in taken] == ids
    assert queue.ack(ids[0]) == 1  # the dead consumer finished one entry before dying

    assert queue.reclaim("live", min_idle_ms=60_000) == []  # not idle long enough yet
    time.sleep(0.15)
    reclaimed = queue.reclaim("live", min_idle_ms=100)
    assert [e.entry_id for e in reclaimed] == ids[1:]
    assert [e.message.version for e in reclaimed] == [1, 2]
    assert queue.ack(*ids[1:]) == 2
    assert queue.pending() == 0
