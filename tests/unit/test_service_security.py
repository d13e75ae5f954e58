"""Security defaults of the three services: loopback unless configured; a learner API that changes
nothing but the start of a held learner, and that only with the job's token; constant-time token
comparisons (the rollout service's weight push, the learner's weights)."""

from __future__ import annotations

import pytest

from services.learner.settings import LearnerSettings
from services.reward.settings import RewardSettings
from services.rollout.settings import RolloutSettings
from shared.settings import load_settings

SERVICES = [("reward", RewardSettings), ("rollout", RolloutSettings), ("learner", LearnerSettings)]


@pytest.mark.parametrize("section, cls", SERVICES)
def test_every_service_binds_to_loopback_by_default(section, cls, monkeypatch):
    monkeypatch.delenv("PRFT_CONFIG", raising=False)
    assert load_settings(cls).host == "127.0.0.1"


@pytest.mark.parametrize("section, cls", SERVICES)
def test_all_interfaces_only_when_configured(section, cls, monkeypatch, tmp_path):
    monkeypatch.setenv(f"PRFT_{section.upper()}__HOST", "0.0.0.0")
    assert load_settings(cls).host == "0.0.0.0"
    monkeypatch.delenv(f"PRFT_{section.upper()}__HOST")
    config = tmp_path / "job.yaml"
    config.write_text(f"{section}: {{host: '::'}}\n")
    assert load_settings(cls, config).host == "::"


def test_the_learner_api_mutates_nothing(tmp_path):
    from services.learner.app import StatusSource, create_app
    from services.learner.metrics import StepMetrics
    from services.learner.weights import WeightStore
    from shared.records import metrics_file

    app = create_app(StatusSource(), WeightStore(tmp_path, keep=1), StepMetrics(metrics_file(tmp_path)), "t")
    methods = {m for route in app.routes for m in getattr(route, "methods", set())}
    assert methods <= {"GET", "HEAD"}


def test_a_held_learner_is_let_go_only_with_the_jobs_token(tmp_path):
    import threading

    from fastapi.testclient import TestClient

    from services.learner.app import StatusSource, create_app
    from services.learner.metrics import StepMetrics
    from services.learner.weights import WeightStore
    from shared.records import metrics_file

    gate = threading.Event()
    app = create_app(StatusSource(), WeightStore(tmp_path, keep=1), StepMetrics(metrics_file(tmp_path)), "t", gate)
    mutating = {(route.path, m) for route in app.routes for m in getattr(route, "methods", set())} - {
        (route.path, m) for route in app.routes for m in ("GET", "HEAD")
    }
    assert mutating == {("/v1/start", "POST")}
    client = TestClient(app)
    assert client.post("/v1/start").status_code == 401
    assert client.post("/v1/start", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert not gate.is_set()
    assert client.post("/v1/start", headers={"Authorization": "Bearer t"}).status_code == 200
    assert gate.is_set()


def test_weight_tokens_are_compared_in_constant_time(tmp_path, monkeypatch):
    from fastapi import HTTPException
    from fastapi.testclient import TestClient

    from services.learner.app import StatusSource, create_app
    from services.learner.metrics import StepMetrics
    from services.learner.weights import WeightStore
    from shared.api import weights
    from shared.records import metrics_file

    compared: list[tuple[bytes, bytes]] = []
    real_compare = weights.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(weights.hmac, "compare_digest", spy)
    # The guard both services build: a wrong token is refused after a constant-time comparison.
    guard = weights.bearer_guard("right-token", "weight pushes are disabled: this worker", HTTPException)
    wrong = weights.HTTPAuthorizationCredentials(scheme="Bearer", credentials="wrong-token")
    with pytest.raises(HTTPException) as refused:
        guard(wrong)
    assert refused.value.status_code == 403
    assert compared == [(b"wrong-token", b"right-token")]
    guard(weights.HTTPAuthorizationCredentials(scheme="Bearer", credentials="right-token"))

    # The learner's weight download goes through the same comparison.
    compared.clear()
    app = create_app(StatusSource(), WeightStore(tmp_path, keep=1), StepMetrics(metrics_file(tmp_path)), "t")
    with TestClient(app) as client:
        response = client.get(weights.WEIGHTS_ROUTE.format(version=1), headers={"Authorization": "Bearer nope"})
    assert response.status_code == 403 and compared == [(b"nope", b"t")]


def test_an_empty_token_refuses_every_push_and_a_set_one_never_prints():
    # No token configured means no push is accepted (403), never "anyone may push".
    assert RolloutSettings().auth.token.get_secret_value() == ""
    settings = RolloutSettings(auth={"token": "s3cret-token"})
    assert "s3cret-token" not in repr(settings) and "s3cret-token" not in str(settings.model_dump())
