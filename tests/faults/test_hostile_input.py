"""Hostile input against the real reward and rollout services: schemathesis fuzzing of their OpenAPI
specs (no 5xx, no hang), body size limits, oversized generation requests, and the weight-push token.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from launcher.deployment import LocalDeployment
from shared.api.rollout import WeightsUpdateFailed
from tests.helpers.workers import wait_served

pytestmark = [pytest.mark.faults, pytest.mark.integration]

BODY_LIMIT = 1024 * 1024
MAX_N = 4
MAX_TOKENS = 16
EXAMPLES = 60  # per generation mode and service: bounded in count
CALL_TIMEOUT_S = 30.0  # a request that takes longer counts as a hang
FUZZ_BUDGET_S = 150.0  # and in time


@dataclass
class Services:
    reward: str
    rollout: str
    token: str
    deployment: LocalDeployment


@pytest.fixture(scope="module")
def services(tmp_path_factory, default_base_dir) -> Services:
    run_dir = tmp_path_factory.mktemp("hostile")
    token = secrets.token_urlsafe(24)
    config = run_dir / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "auth": {"token": token},
                "reward": {"workers": 1, "item_timeout_s": 2.0, "max_body_bytes": BODY_LIMIT},
                "rollout": {"max_n": MAX_N, "max_tokens": MAX_TOKENS, "max_body_bytes": BODY_LIMIT},
            }
        )
    )
    deployment = LocalDeployment(run_dir=run_dir, config_path=config)
    try:
        reward = deployment.start_reward(workers=1, wait=False)
        rollout = deployment.start_rollout_worker(default_base_dir, 0, consume_tasks=False, wait=False)
        deployment.wait_ready()
        yield Services(reward, rollout, token, deployment)
    finally:
        deployment.stop()


def _fuzz(base_url: str, examples: int = EXAMPLES) -> Counter[str]:
    """Valid and invalid requests generated from the service's own OpenAPI document; every answer must
    come within CALL_TIMEOUT_S and be below 500. Returns the count of answers by operation and status."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    calls: Counter[str] = Counter()
    deadline = time.monotonic() + FUZZ_BUDGET_S
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @given(case=schema.as_strategy(generation_mode=mode))
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case):
            if time.monotonic() > deadline:
                return
            response = case.call(base_url=base_url, timeout=CALL_TIMEOUT_S)
            calls[f"{case.method} {case.path} {response.status_code}"] += 1
            assert response.status_code < 500, (
                f"{case.method} {case.path} answered {response.status_code}: {response.text[:300]}\n"
                f"{case.as_curl_command()}"
            )

        check()
    return calls


def test_reward_api_fuzzed_answers_no_5xx_and_never_hangs(services):
    calls = _fuzz(services.reward)
    print(f"\nreward service, answers to generated requests: {dict(sorted(calls.items()))}")
    assert calls["POST /v1/score 200"] > 0 and calls["POST /v1/score 422"] > 0
    assert httpx.get(f"{services.reward}/healthz").status_code == 200


def test_rollout_api_fuzzed_answers_no_5xx_and_never_hangs(services):
    calls = _fuzz(services.rollout)
    print(f"\nrollout service, answers to generated requests: {dict(sorted(calls.items()))}")
    assert sum(n for key, n in calls.items() if key.startswith("POST /v1/generate 4")) > 0
    assert calls["POST /v1/weights 401"] > 0
    assert httpx.get(f"{services.rollout}/readyz").status_code == 200


# Requests the schema allows and the limits let through, with edge values: the schema-driven fuzzing
# above rarely gets past the limits (n, max_tokens) to the engine itself.
_sampling = st.fixed_dictionaries(
    {"max_tokens": st.integers(1, MAX_TOKENS)},
    optional={
        "temperature": st.floats(0.0, 2.0),
        "top_p": st.floats(1e-6, 1.0),
        "seed": st.integers(-(2**63), 2**64 - 1),
        "stop": st.lists(st.text(min_size=1, max_size=8), max_size=16),
    },
)
_generate = st.fixed_dictionaries(
    {"n": st.integers(1, MAX_N), "sampling": _sampling},
    optional={"prefix_token_ids": st.lists(st.integers(0, 383), max_size=8)},
).flatmap(
    lambda body: st.one_of(
        st.text(min_size=1, max_size=200).map(lambda text: {**body, "prompt": text}),
        st.lists(st.integers(0, 383), min_size=1, max_size=64).map(lambda ids: {**body, "prompt_token_ids": ids}),
    )
)


def test_rollout_generate_with_edge_values_the_limits_allow_never_fails(services):
    answers: Counter[int] = Counter()

    @given(body=_generate)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(body):
        reply = httpx.post(f"{services.rollout}/v1/generate", json=body, timeout=CALL_TIMEOUT_S)
        answers[reply.status_code] += 1
        assert reply.status_code < 500, f"{body} -> {reply.status_code}: {reply.text[:300]}"

    check()
    print(f"\nrollout service, answers to edge-value generate requests: {dict(answers)}")
    assert answers[200] > 0


@pytest.mark.parametrize("service, path", [("reward", "/v1/score"), ("rollout", "/v1/generate")])
def test_bodies_over_the_limit_are_refused_before_parsing(services, service, path):
    url = getattr(services, service) + path
    big = b'{"x": "' + b"a" * (BODY_LIMIT + 1) + b'"}'
    declared = httpx.post(url, content=big, headers={"Content-Type": "application/json"}, timeout=30)
    assert declared.status_code == 413 and "limit" in declared.json()["detail"]

    def streamed():  # no Content-Length: counted as it arrives
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    chunked = httpx.post(url, content=streamed(), headers={"Content-Type": "application/json"}, timeout=30)
    assert chunked.status_code == 413


def test_a_request_for_a_million_tokens_or_ten_thousand_samples_is_refused_with_a_reason(services):
    url = f"{services.rollout}/v1/generate"
    tokens = httpx.post(url, json={"prompt": "1+1=", "sampling": {"max_tokens": 10**6}}, timeout=30)
    assert tokens.status_code == 400 and "max_tokens=1000000 exceeds the limit" in tokens.json()["detail"]
    samples = httpx.post(url, json={"prompt": "1+1=", "n": 10**4}, timeout=30)
    assert samples.status_code == 400 and "n=10000 exceeds the limit" in samples.json()["detail"]
    items = [{"id": str(i), "response": "1", "reference": "1"} for i in range(10**4)]
    scores = httpx.post(f"{services.reward}/v1/score", json={"items": items}, timeout=30)
    assert scores.status_code == 422 and "at most" in scores.text


def test_the_default_limits_refuse_them_too():
    from services.reward.settings import RewardSettings
    from services.rollout.settings import RolloutSettings

    rollout, reward = RolloutSettings(), RewardSettings()
    assert rollout.max_tokens < 10**6 and rollout.max_n < 10**4 and reward.max_items_per_request < 10**4
    assert rollout.max_body_bytes <= 64 * 2**20 and reward.max_body_bytes <= 64 * 2**20


def test_a_weight_push_needs_the_right_bearer_token(services):
    url = f"{services.rollout}/v1/weights"
    body = {"version": 10**6, "uri": "file:///nonexistent/model.safetensors"}
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, headers={"Authorization": "Basic " + services.token}).status_code == 401
    wrong = services.token[:-1] + ("a" if services.token[-1] != "a" else "b")
    assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {wrong}"}).status_code == 403
    right = httpx.post(url, json=body, headers={"Authorization": f"Bearer {services.token}"})
    assert right.status_code == 202  # past the token check: queued, then refused for the missing file
    with pytest.raises(WeightsUpdateFailed, match="does not exist"):
        wait_served(services.rollout, 10**6, timeout=60)
    assert httpx.get(url).json()["version"] == 0


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on ``port`` (from /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.is_file():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, state = fields[1], fields[3]
            host_hex, port_hex = address.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(host_hex)
                if len(raw) == 4:
                    found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def test_services_started_with_default_settings_listen_on_loopback_only(services):
    for url in (services.reward, services.rollout):
        port = int(url.rpartition(":")[2])
        assert _listening_addresses(port) == {"127.0.0.1"}, url
