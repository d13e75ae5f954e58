"""The bus codec's schema 2: token ids and log-probs leave the JSON body as little-endian arrays, every
message comes back exactly, entries the JSON codec (schema 1) wrote still read, and damaged arrays are
refused with a CodecError instead of a wrong message."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared.bus import codec
from shared.messages import RolloutKind, RolloutTask, Trajectory, TrajectoryGroup


def _group(logprobs: list[float]) -> TrajectoryGroup:
    trajectory = Trajectory(kind=RolloutKind.hybrid, response_token_ids=[70_000, 3, 151_000, 9], prefix_len=1,
                            behaviour_logprobs=logprobs, policy_version=2, reward=1.0, correct=True, text="ab")
    demo = Trajectory(kind=RolloutKind.demonstration, response_token_ids=[4, 5], prefix_len=2, behaviour_logprobs=[],
                      policy_version=None, reward=0.0, correct=False)
    return TrajectoryGroup(id="run-00000001", prompt_id="p", issued_at_version=1, step=3, worker_id="w",
                           prompt_token_ids=[1, 2, 3], trajectories=[trajectory, demo])


FLOAT32 = [float(np.float32(v)) for v in (-0.1, -2.5, -1e-3)]


@pytest.mark.parametrize("logprobs", [FLOAT32, [-0.1, -0.2, -0.3]], ids=["float32 values", "float64 values"])
def test_a_group_round_trips_exactly(logprobs):
    group = _group(logprobs)
    assert codec.decode(TrajectoryGroup, codec.encode(group)) == group


def test_numbers_travel_as_arrays_not_json():
    fields = codec.encode(_group(FLOAT32))
    body = json.loads(fields[b"d"])
    assert body["trajectories"][0]["response_token_ids"] == {codec.ARRAY: ["<i4", 4]}
    assert body["trajectories"][0]["behaviour_logprobs"] == {codec.ARRAY: ["<f4", 3]}
    assert body["prompt_token_ids"] == {codec.ARRAY: ["<u1", 3]}
    assert body["id"] == "run-00000001"  # the ledger reads the id from the JSON body alone
    # prompt 3 x 1 B, response 4 x 4 B, log-probs 3 x 4 B, demonstration 2 x 1 B
    assert len(fields[b"a"]) == 3 + 16 + 12 + 2


def test_nested_lists_of_token_ids_round_trip():
    task = RolloutTask(id="t", prompt_id="p", issued_at_version=0, step=0, prompt_token_ids=[1, 2], reference="3",
                       n_on_policy=1, hybrid_prefixes=[[1, 2], [300]], demonstrations=[[1, 2, 3]],
                       demonstration_texts=["x"])
    assert codec.decode(RolloutTask, codec.encode(task)) == task


def test_an_entry_of_the_json_codec_still_reads():
    group = _group([-0.1, -0.2, -0.3])
    old = {b"v": b"1", b"t": b"TrajectoryGroup", b"d": group.model_dump_json(exclude_defaults=True).encode()}
    assert codec.decode(TrajectoryGroup, old) == group


def test_a_response_of_a_few_hundred_tokens_takes_less_than_half_the_bytes():
    ids = list(range(1000, 1300))
    logprobs = [float(np.float32(-x / 300)) for x in range(300)]
    trajectory = Trajectory(kind=RolloutKind.on_policy, response_token_ids=ids, prefix_len=0,
                            behaviour_logprobs=logprobs, policy_version=0, reward=0.0, correct=False)
    group = TrajectoryGroup(id="g", prompt_id="p", issued_at_version=0, step=0, worker_id="w",
                            prompt_token_ids=[1, 2], trajectories=[trajectory] * 8)
    old = len(group.model_dump_json(exclude_defaults=True))
    assert sum(map(len, codec.encode(group).values())) < old / 2


@pytest.mark.parametrize("damage", ["truncated", "extra"])
def test_damaged_arrays_are_refused(damage):
    fields = codec.encode(_group(FLOAT32))
    fields[b"a"] = fields[b"a"][:-1] if damage == "truncated" else fields[b"a"] + b"\0"
    with pytest.raises(codec.CodecError):
        codec.decode(TrajectoryGroup, fields)
