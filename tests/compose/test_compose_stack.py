"""`docker compose up`, for real: the images `make images` builds, the stack of deploy/compose/
brought up with fresh secrets, the default job trained through the containers, a second rollout
worker added with `--scale`, the reward container restarted mid-run, and everything torn down.

Needs a Docker engine and the images: `make test` runs `make images` first (which installs and
starts the engine when it is missing, as root can); the `images` fixture (conftest.py) repeats it,
which reuses the cached layers (seconds) and rebuilds only what changed since.
"""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.compose_stack import Stack, counter_total, worker_version
from tests.helpers.deploy import prepared_checkout

# A cold build (no image, no layer cache) takes far longer than the suite's 600 s per test; this
# limit is for the stack itself: start-up, training, scaling, restarts.
pytestmark = [pytest.mark.compose, pytest.mark.timeout(1800)]

STEPS = 2


@pytest.fixture(scope="module")
def stack(images, tmp_path_factory):
    stack = Stack(prepared_checkout(tmp_path_factory.mktemp("compose")))
    try:
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", timeout=900, check=False)


def worker_tasks(url: str) -> float:
    """Tasks this worker has produced (its Prometheus counter)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "rollout_tasks":
            return sum(s.value for s in family.samples if s.labels.get("outcome") == "produced")
    return 0.0


def test_the_stack_comes_up_healthy_with_fresh_secrets(stack):
    # The image's secrets are this run's, written by deploy/make-secrets.sh into the copy.
    secrets = stack.compose_dir / "secrets"
    assert len((secrets / "prft_token").read_text().strip()) == 64
    stack.up_at = time.monotonic()
    stack.compose("up", "-d", "--no-build")
    for service in ("redis", "reward", "rollout", "learner"):
        stack.wait_for(lambda s=service: stack.health(s) == ["healthy"], 900, f"{service} healthy")
    # The Redis URL secret carries the password: without it, the server refuses.
    refused = stack.compose("exec", "-T", "redis", "redis-cli", "get", "x", check=False)
    assert "NOAUTH" in refused.stdout + refused.stderr


def test_the_default_job_trains_through_the_containers(stack):
    first = stack.wait_for(lambda: stack.learner_step() >= 1, 900, "the first trained step")
    print(f"up -> first trained step: {time.monotonic() - stack.up_at:.0f} s")
    assert first
    status = stack.wait_for(lambda: stack.learner_step() >= STEPS and stack.learner_status(), 900, f"{STEPS} steps")
    assert status["phase"] in ("waiting", "training") and status["version"] >= STEPS
    # The learner pushed what it trained to the worker, over the compose network.
    rollout = stack.url("rollout", 8000)
    stack.wait_for(lambda: worker_version(rollout) >= status["version"], 300, "the push to the first worker")


def reward_items(url: str) -> float:
    """Items this reward service has scored since it started (its Prometheus counter)."""
    return counter_total(url, "reward_items")


def test_training_goes_on_across_a_reward_restart(stack):
    # The second worker of the next test starts first: its engine loads for minutes, and this
    # test's restart and step happen meanwhile instead of after it.
    stack.compose("up", "-d", "--no-build", "--no-recreate", "--scale", "rollout=2")
    before = stack.learner_step()
    stack.compose("restart", "reward")
    stack.wait_for(lambda: stack.health("reward") == ["healthy"], 300, "reward healthy again")
    reward = stack.url("reward", 8001)
    # The restarted service's counters start at 0: what it scored, it scored after the restart.
    stack.wait_for(lambda: reward_items(reward) > 0, 900, "items scored by the restarted reward service")
    status = stack.wait_for(
        lambda: stack.learner_step() >= before + 1 and stack.learner_status(), 900, "a step after the restart"
    )
    assert status["phase"] in ("waiting", "training")
    assert all(state == "healthy" for state in stack.health("learner"))


def test_a_scaled_worker_takes_tasks_and_receives_weights(stack):
    stack.wait_for(lambda: stack.health("rollout") == ["healthy", "healthy"], 900, "the second worker healthy")
    second = stack.url("rollout", 8000, index=2)
    assert second != stack.url("rollout", 8000, index=1)
    joined_at = stack.learner_status()["version"]
    stack.wait_for(lambda: worker_tasks(second) >= 1, 900, "the second worker producing a task")
    stack.wait_for(lambda: worker_version(second) > joined_at, 900, "a weight push to the second worker")


def test_teardown_leaves_nothing_behind(stack):
    stack.compose("down", "--volumes", "--remove-orphans", timeout=900)
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}
