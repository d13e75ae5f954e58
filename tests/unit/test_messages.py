import pytest
from pydantic import ValidationError

from shared.messages import GenerateRequest, RolloutKind, Sample, ScoreRequest, Trajectory, WeightUpdate


def test_generate_request_needs_exactly_one_prompt():
    with pytest.raises(ValidationError, match="exactly one"):
        GenerateRequest()
    with pytest.raises(ValidationError, match="exactly one"):
        GenerateRequest(prompt="a", prompt_token_ids=[1])
    with pytest.raises(ValidationError, match="empty"):
        GenerateRequest(prompt_token_ids=[])


def test_unknown_fields_are_refused():
    with pytest.raises(ValidationError, match="temprature"):
        GenerateRequest(prompt="a", sampling={"temprature": 0.5})


def test_sample_has_one_logprob_per_token():
    with pytest.raises(ValidationError, match="2 logprobs for 3 tokens"):
        Sample(token_ids=[1, 2, 3], logprobs=[-1.0, -1.0], text="", finish_reason="stop")


def test_trajectory_behaviour_logprobs_cover_the_continuation_only():
    t = Trajectory(
        kind=RolloutKind.hybrid, response_token_ids=[1, 2, 3, 4], prefix_len=3,
        behaviour_logprobs=[-0.5], policy_version=0, reward=1.0, correct=True,
    )
    assert t.prefix_mask == [True, True, True, False]
    with pytest.raises(ValidationError, match="2 behaviour logprobs for 1 continuation tokens"):
        Trajectory(
            kind=RolloutKind.hybrid, response_token_ids=[1, 2, 3, 4], prefix_len=3,
            behaviour_logprobs=[-0.5, -0.5], policy_version=0, reward=1.0, correct=True,
        )


def test_weight_update_uri_scheme():
    WeightUpdate(version=1, uri="http://127.0.0.1:8002/v1/weights/1")
    with pytest.raises(ValidationError):
        WeightUpdate(version=1, uri="s3://bucket/w")


def test_score_request_needs_items():
    with pytest.raises(ValidationError):
        ScoreRequest(items=[])
