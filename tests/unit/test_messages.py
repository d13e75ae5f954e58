import pytest
from pydantic import ValidationError

from shared.api.reward import ScoreRequest
from shared.api.rollout import GenerateRequest, Sample, WeightUpdate
from shared.messages import RolloutKind, Trajectory


def test_generate_request_needs_exactly_one_prompt():
    with pytest.raises(ValidationError, match="exactly one"):
        GenerateRequest()
    with pytest.raises(ValidationError, match="exactly one"):
        GenerateRequest(prompt="a", prompt_token_ids=[1])
    with pytest.raises(ValidationError, match="empty"):
        GenerateRequest(prompt_token_ids=[])


def test_a_client_that_sends_every_field_gets_its_request_back():
    # Clients dump the whole model (defaults included); that must validate on the server again.
    for request in (GenerateRequest(prompt_token_ids=[1, 2]), GenerateRequest(prompt="a", chat_template=False)):
        assert GenerateRequest.model_validate_json(request.model_dump_json()) == request


def test_chat_template_is_for_text_prompts_only():
    with pytest.raises(ValidationError, match="text 'prompt' only"):
        GenerateRequest(prompt_token_ids=[1], chat_template=True)


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
