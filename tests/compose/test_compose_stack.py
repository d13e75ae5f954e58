"""`docker compose up`, for real: the images `make images` builds, the stack of deploy/compose/
brought up with fresh secrets, the default job trained through the containers, a second rollout
worker added with `--scale`, the reward container restarted mid-run, and everything torn down.

Needs a Docker engine and the images: `make test` runs `make images` first (which installs and
starts the engine when it is missing, as root can); the fixture below repeats it, which reuses the
cached layers (seconds) and rebuilds only what changed since.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.deploy import prepared_checkout

# A cold build (no image, no layer cache) takes far longer than the suite's 600 s per test; this
# limit is for the stack itself: start-up, training, scaling, restarts.
pytestmark = [pytest.mark.compose, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("IMAGE", "prefix-rft:cpu")
# The stand-ins deploy/docker/build-images.sh builds for the Docker Hub images.
REDIS_IMAGE = "prefix-rft/redis:7-bookworm"
STEPS = 2


def run(argv: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)


def compose_client() -> list[str]:
    """The Go plugin when the docker client has it, else Debian's docker-compose 1.29."""
    if shutil.which("docker") and run(["docker", "compose", "version"]).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed: `make images` installs them")


@pytest.fixture(scope="session")
def images() -> None:
    # This interpreter's CLI builds the default model on the host (or finds it in the cache the
    # other tests fill), for the image to copy instead of training its own.
    env = {"PREFIX_RFT": f"{sys.executable} -m launcher.cli", **os.environ}
    result = run(["make", "-s", "images"], cwd=REPO, timeout=3600, env=env)
    assert result.returncode == 0, f"make images failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


class Stack:
    """One compose project: a copy of deploy/ with fresh secrets, under its own project name."""

    def __init__(self, root: Path):
        self.root = root
        self.compose_dir = root / "deploy" / "compose"
        self.project = f"prft-test-{uuid.uuid4().hex[:8]}"
        self.client = compose_client()
        self.env = {
            **os.environ,
            "PREFIX_RFT_IMAGE": IMAGE,
            "PREFIX_RFT_REDIS_IMAGE": REDIS_IMAGE,
            # Port 0: Docker picks free host ports, so a stack already on 8001/8002 does not collide.
            "PREFIX_RFT_REWARD_PORT": "0",
            "PREFIX_RFT_LEARNER_PORT": "0",
        }
        self.up_at: float | None = None

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        argv = [*self.client, "-p", self.project, "-f", str(self.compose_dir / "compose.yaml"), *args]
        result = run(argv, timeout=timeout, cwd=self.compose_dir, env=self.env)
        if check:
            assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        return result

    def container_ids(self, service: str | None = None) -> list[str]:
        return self.compose("ps", "-q", *([service] if service else [])).stdout.split()

    def health(self, service: str) -> list[str]:
        states = []
        for container in self.container_ids(service):
            state = json.loads(run(["docker", "inspect", "--format", "{{json .State}}", container]).stdout)
            states.append(state["Health"]["Status"] if state.get("Health") else state["Status"])
        return states

    def url(self, service: str, port: int, index: int = 1) -> str:
        # `port` prints the host address of the container port: 127.0.0.1:49153.
        address = self.compose("port", "--index", str(index), service, str(port)).stdout.strip()
        return f"http://{address}"

    def learner_status(self) -> dict:
        return httpx.get(f"{self.url('learner', 8002)}/v1/status", timeout=10).json()

    def learner_step(self) -> int:
        # While the learner starts, its status has a phase and no step yet.
        return self.learner_status()["step"] or 0

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "40", check=False).stdout[-12000:]

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = predicate()
            except (httpx.HTTPError, KeyError, AssertionError):
                value = None
            if value:
                return value
            time.sleep(2)
        raise TimeoutError(f"{what}: not within {timeout:.0f} s\n{self.logs()}")

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={self.project}"
        return {
            kind: run(["docker", *command, "--filter", label]).stdout.split()
            for kind, command in {
                "containers": ["ps", "-aq"],
                "volumes": ["volume", "ls", "-q"],
                "networks": ["network", "ls", "-q"],
            }.items()
        }


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


def worker_version(url: str) -> int:
    return httpx.get(f"{url}/v1/weights", timeout=10).json()["version"]


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
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        s.value for family in text_string_to_metric_families(text) if family.name == "reward_items"
        for s in family.samples if s.name == "reward_items_total"
    )


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
