"""The weights contract: where the learner serves a version, the bearer check of a push, and the
learner client against the learner's own app (in process)."""

import asyncio

import httpx
import pytest

from services.learner.app import create_app
from services.learner.metrics import StepMetrics
from services.learner.weights import WeightStore
from shared.api.http import RetryPolicy, ServiceRefused
from shared.api.learner import LearnerClient
from shared.api.weights import WEIGHTS_FILE, auth_header, auth_refusal, bucket_url, manifest_url, swarm_url, weights_url
from shared.records import LearnerStatus, metrics_file


def test_a_version_has_one_url():
    assert weights_url("http://learner:8002/", 7) == "http://learner:8002/v1/weights/7"
    # A version's buckets and swarm offer are addressed from its manifest's URL (what the record holds).
    manifest = manifest_url("http://learner:8002", 7)
    assert bucket_url(manifest, 3) == "http://learner:8002/v1/weights/7/buckets/3"
    assert swarm_url(manifest) == "http://learner:8002/v1/weights/7/swarm"
    with pytest.raises(ValueError, match="not a manifest URL"):
        swarm_url("http://learner:8002/v1/weights/7")


def test_the_bearer_check():
    assert auth_header("t0k") == {"Authorization": "Bearer t0k"}
    assert auth_header(None) == {} and auth_header("") == {}
    assert auth_refusal("Bearer", "t0k", "t0k") is None
    assert auth_refusal("bearer", "t0k", "t0k") is None  # the scheme is case-insensitive
    assert auth_refusal(None, "", "t0k")[0] == 401
    assert auth_refusal("Basic", "t0k", "t0k")[0] == 401
    assert auth_refusal("Bearer", "nope", "t0k") == (403, "wrong token")
    # No token configured: every push is refused, an empty one included.
    assert auth_refusal("Bearer", "", "")[0] == 403


def test_the_learner_client_against_the_learner_app(tmp_path):
    store = WeightStore(tmp_path / "weights", keep=2)
    store.directory(4).mkdir()
    store.file(4).write_bytes(b"weights of v4" * 1000)
    served = LearnerStatus(phase="training", step=9, version=4)
    app = create_app(lambda: served, store, StepMetrics(metrics_file(tmp_path)), "t0k")

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with LearnerClient("http://learner", retry=RetryPolicy(retries=0), transport=transport) as client:
            status = await client.status()
            path = await client.download_weights(4, tmp_path / WEIGHTS_FILE, "t0k")
            with pytest.raises(ServiceRefused, match="404") as missing:
                await client.download_weights(3, tmp_path / "none.safetensors", "t0k")
            return status, path, missing.value

    status, path, missing = asyncio.run(run())
    assert status == served
    assert path.read_bytes() == store.file(4).read_bytes()
    assert "GET http://learner/v1/weights/3" in str(missing) and "kept: [4]" in str(missing)


def _learner_app(tmp_path, token: str):
    store = WeightStore(tmp_path / "weights", keep=2)
    store.directory(4).mkdir()
    store.file(4).write_bytes(b"weights of v4")
    return create_app(lambda: LearnerStatus(phase="training"), store, StepMetrics(metrics_file(tmp_path)), token)


def test_the_learner_serves_weights_only_with_the_token(tmp_path):
    async def get(app, headers):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://learner") as client:
            return await client.get(weights_url("http://learner", 4), headers=headers)

    app = _learner_app(tmp_path, "t0k")
    missing = asyncio.run(get(app, {}))
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert b"weights of v4" not in missing.content
    wrong = asyncio.run(get(app, auth_header("nope")))
    assert wrong.status_code == 403 and "wrong token" in wrong.text
    assert asyncio.run(get(app, auth_header("t0k"))).content == b"weights of v4"
    # A learner with no token configured serves the weights to nobody, rather than to anyone.
    closed = asyncio.run(get(_learner_app(tmp_path / "closed", ""), auth_header("")))
    assert closed.status_code == 401
    closed = asyncio.run(get(_learner_app(tmp_path / "closed2", ""), auth_header("anything")))
    assert closed.status_code == 403 and "the learner has no token configured" in closed.text
    # The status stays open: a supervisor's probe carries no token.
    async def status():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://learner") as client:
            return await client.get("/v1/status")

    assert asyncio.run(status()).status_code == 200


def test_the_downloader_reports_a_refused_token(tmp_path):
    app = _learner_app(tmp_path, "t0k")

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with LearnerClient("http://learner", retry=RetryPolicy(retries=0), transport=transport) as client:
            with pytest.raises(ServiceRefused, match="401"):
                await client.download_weights(4, tmp_path / "a.safetensors")
            with pytest.raises(ServiceRefused, match="403"):
                await client.download_weights(4, tmp_path / "b.safetensors", "nope")

    asyncio.run(run())
