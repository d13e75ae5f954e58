"""The reward client: retries with backoff while the service fails, gives up on a refused request; and
against the reward service's own app, in process."""

import asyncio

import httpx
import pytest

from shared.api.http import RetryPolicy, ServiceRefused, ServiceUnavailable
from shared.api.reward import RewardClient, ScoreItem

ITEMS = [ScoreItem(id="t:0", response="\\boxed{2}", reference="2"), ScoreItem(id="t:1", response="x", reference="2")]


def answering(replies: list):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        reply = replies[min(len(calls), len(replies)) - 1]
        if isinstance(reply, Exception):
            raise reply
        return reply

    return httpx.MockTransport(handler), calls


def ok() -> httpx.Response:
    results = [
        {"id": "t:0", "reward": 1.0, "correct": True, "status": "ok"},
        {"id": "t:1", "reward": 0.0, "correct": False, "status": "ok"},
    ]
    return httpx.Response(200, json={"results": results})


def score(transport, retries=3):
    async def run():
        client = RewardClient("http://reward", 5.0, RetryPolicy(retries=retries, backoff_s=0.001), transport=transport)
        try:
            return await client.score(ITEMS)
        finally:
            await client.close()

    return asyncio.run(run())


def test_retries_until_the_service_answers():
    transport, calls = answering([httpx.ConnectError("down"), httpx.Response(503, text="busy"), ok()])
    results = score(transport)
    assert [r.reward for r in results] == [1.0, 0.0]
    assert len(calls) == 3 and calls[0].url == "http://reward/v1/score"


def test_gives_up_after_the_retries():
    transport, calls = answering([httpx.ConnectError("down")])
    with pytest.raises(ServiceUnavailable, match="3 attempts"):
        score(transport, retries=2)
    assert len(calls) == 3


def test_a_refused_request_is_not_retried():
    transport, calls = answering([httpx.Response(413, text="too large")])
    with pytest.raises(ServiceRefused, match="413"):
        score(transport)
    assert len(calls) == 1


def test_results_must_answer_the_items_in_order():
    transport, _ = answering([httpx.Response(200, json={"results": [{"id": "t:1", "reward": 0.0, "correct": False}]})])
    with pytest.raises(ServiceUnavailable, match="answered ids"):
        score(transport, retries=0)


def test_items_refused_together_are_scored_alone_and_a_bad_one_scores_zero_as_an_error():
    transport, calls = answering(
        [
            httpx.Response(422, text="text too long"),  # both items together
            httpx.Response(200, json={"results": [{"id": "t:0", "reward": 1.0, "correct": True}]}),
            httpx.Response(422, text="text too long"),  # t:1 alone
        ]
    )

    async def run():
        client = RewardClient("http://reward", 5.0, RetryPolicy(retries=3, backoff_s=0.001), transport=transport)
        try:
            with pytest.raises(ServiceRefused):
                await client.score(ITEMS)
            return await client.score_alone(ITEMS)
        finally:
            await client.close()

    results = asyncio.run(run())
    assert [(r.id, r.reward, r.correct, r.status.value) for r in results] == [
        ("t:0", 1.0, True, "ok"),
        ("t:1", 0.0, False, "error"),
    ]
    assert "422" in results[1].detail and len(calls) == 3


def test_the_client_against_the_reward_app():
    from services.reward.app import create_app
    from services.reward.settings import RewardSettings

    app = create_app(RewardSettings(workers=1))
    unknown = ScoreItem(id="t:2", response="\\boxed{2}", reference="2", verifier="chemistry")

    async def run():
        async with app.router.lifespan_context(app):  # the verifier worker pool
            transport = httpx.ASGITransport(app=app)
            async with RewardClient("http://reward", retry=RetryPolicy(retries=0), transport=transport) as client:
                scored = await client.score(ITEMS)
                with pytest.raises(ServiceRefused, match="unknown verifier") as refused:
                    await client.score([*ITEMS, unknown])
                alone = await client.score_alone([*ITEMS, unknown])
                return scored, refused.value.status, alone, await client.health()

    scored, status, alone, health = asyncio.run(run())
    assert [(r.id, r.correct) for r in scored] == [("t:0", True), ("t:1", False)]
    assert status == 422
    assert [(r.id, r.correct, r.status.value) for r in alone] == [("t:0", True, "ok"), ("t:1", False, "ok"),
                                                                 ("t:2", False, "error")]
    assert health.workers == 1 and len(health.worker_pids) == 1
