"""The rollout client: the weight push under the retry policy (with the bearer token, retried while the
worker fails, never when it refuses), the wait for a version the worker applies in the background, and
the replies it reads."""

import asyncio
import json
import logging

import httpx
import pytest

from shared.api.http import RetryPolicy, ServiceRefused, ServiceUnavailable
from shared.api.rollout import GenerateRequest, RolloutClient, WeightsAccepted, WeightsUpdateFailed, WeightUpdate

UPDATE = WeightUpdate(version=3, uri="http://learner/v1/weights/3")


def answering(replies: list):
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        reply = replies[min(len(calls), len(replies)) - 1]
        if isinstance(reply, Exception):
            raise reply
        return reply

    return httpx.MockTransport(handler), calls


def call(transport, method: str, *args, retries: int = 3):
    async def run():
        retry = RetryPolicy(retries=retries, backoff_s=0.001)
        async with RolloutClient("http://worker", "s3cret", retry=retry, name="w1", transport=transport) as client:
            return await getattr(client, method)(*args)

    return asyncio.run(run())


def test_a_push_carries_the_token_and_is_retried_until_the_worker_takes_it():
    transport, calls = answering(
        [
            httpx.ConnectError("down"),
            httpx.Response(503, text="loading"),
            httpx.Response(202, json={"version": 3, "outcome": "queued"}),
        ]
    )
    assert call(transport, "push_weights", UPDATE) == WeightsAccepted(version=3, outcome="queued")
    assert len(calls) == 3
    last = calls[-1]
    assert (last.method, str(last.url)) == ("POST", "http://worker/v1/weights")
    assert last.headers["authorization"] == "Bearer s3cret"
    assert json.loads(last.content) == {"version": 3, "uri": "http://learner/v1/weights/3"}


def test_a_refused_push_is_not_retried(caplog):
    transport, calls = answering([httpx.Response(403, json={"detail": "wrong token"})])
    with caplog.at_level(logging.WARNING), pytest.raises(ServiceRefused) as refused:
        call(transport, "push_weights", UPDATE)
    assert str(refused.value).startswith("push of v3 to w1 refused (HTTP 403")
    assert refused.value.status == 403 and len(calls) == 1
    assert "attempt" not in caplog.text


def test_every_failed_attempt_is_logged_and_the_last_one_gives_up(caplog):
    transport, calls = answering([httpx.ConnectError("connection refused")])
    with caplog.at_level(logging.WARNING), pytest.raises(ServiceUnavailable, match="after 3 attempts"):
        call(transport, "push_weights", UPDATE, retries=2)
    assert len(calls) == 3
    for attempt in (1, 2, 3):
        assert f"push of v3 to w1 failed (attempt {attempt}/3): ConnectError" in caplog.text
    assert caplog.text.count("retrying in") == 2


def status(version, update=None, queued=None, failure=None) -> httpx.Response:
    body = {"version": version, "update": update, "queued": queued, "last_failure": failure}
    return httpx.Response(200, json=body)


def test_waiting_for_a_version_polls_until_the_worker_serves_it():
    fetching = {"version": 3, "phase": "fetching", "buckets_done": 1, "buckets_total": 4, "bytes_done": 16,
                "bytes_total": 64}
    transport, calls = answering([status(2, update=fetching), status(2, update=fetching | {"phase": "swapping"}),
                                  status(3)])
    assert call(transport, "wait_for_version", 3, 10.0, 0.001).version == 3
    assert len(calls) == 3 and all(c.method == "GET" for c in calls)


def test_waiting_for_a_version_the_worker_failed_to_load_says_why():
    failure = {"version": 3, "reason": "WeightsError: weights do not fit the served model"}
    transport, _ = answering([status(2, failure=failure)])
    with pytest.raises(WeightsUpdateFailed, match="w1 could not load v3: WeightsError: weights do not fit"):
        call(transport, "wait_for_version", 3, 10.0, 0.001)
    # A failed version with a newer one still on its way: the wait goes on.
    transport, calls = answering([status(2, queued=4, failure=failure), status(4)])
    assert call(transport, "wait_for_version", 3, 10.0, 0.001).version == 4


def test_a_wait_that_times_out_says_where_the_worker_is():
    fetching = {"version": 3, "phase": "fetching", "buckets_done": 1, "buckets_total": 4, "bytes_done": 0,
                "bytes_total": 64 << 20}
    transport, _ = answering([status(2, update=fetching, queued=4)])
    with pytest.raises(TimeoutError, match=r"w1 does not serve v3 after 0 s: it serves v2, updating to v3 "
                                           r"\(fetching, 1/4 buckets, 0/64 MiB\), v4 queued"):
        call(transport, "wait_for_version", 3, 0.05, 0.01)


def test_generate_and_version_read_the_replies():
    sample = {"token_ids": [5, 6], "logprobs": [-0.1, -0.2], "text": "56", "finish_reason": "length"}
    body = {"model_version": 2, "prompt_token_ids": [1], "prefix_token_ids": [], "samples": [sample]}
    transport, calls = answering([httpx.Response(200, json=body)])
    response = call(transport, "generate", GenerateRequest(prompt_token_ids=[1]))
    assert response.model_version == 2 and response.samples[0].token_ids == [5, 6]
    assert json.loads(calls[0].content)["prompt_token_ids"] == [1]
    transport, _ = answering([httpx.Response(200, json={"version": 7})])
    assert call(transport, "version") == 7


def test_a_bad_request_is_refused_at_once():
    transport, calls = answering([httpx.Response(400, json={"detail": "prompt too long"})])
    with pytest.raises(ServiceRefused, match="prompt too long"):
        call(transport, "generate", GenerateRequest(prompt_token_ids=[1]))
    assert len(calls) == 1


def test_a_metric_is_found_by_name_and_labels_and_summed_over_the_others():
    exposition = (
        "# TYPE rollout_weight_swaps counter\n"
        'rollout_weight_swaps_total{outcome="ok"} 2.0\n'
        'rollout_weight_swaps_total{outcome="failed"} 1.0\n'
    )
    transport, _ = answering([httpx.Response(200, text=exposition)])

    async def read():
        async with RolloutClient("http://worker", transport=transport) as client:
            return [
                await client.metric("rollout_weight_swaps_total", outcome="failed"),
                await client.metric("rollout_weight_swaps_total", outcome="ok"),
                await client.metric("rollout_weight_swaps_total"),
                await client.metric("rollout_nothing_total"),
            ]

    assert asyncio.run(read()) == [1.0, 2.0, 3.0, None]


def test_a_seed_that_would_overflow_for_the_last_sample_is_refused():
    from pydantic import ValidationError

    from shared.api.rollout import SEED_MAX, GenerateRequest

    GenerateRequest(prompt_token_ids=[1], n=3, sampling={"seed": SEED_MAX - 2})
    with pytest.raises(ValidationError, match="seed \\+ n - 1"):
        GenerateRequest(prompt_token_ids=[1], n=3, sampling={"seed": SEED_MAX - 1})
