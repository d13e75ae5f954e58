"""A compose project brought up for real on a Docker engine (the tests under tests/compose): a copy of
deploy/ with fresh secrets, under a project name of its own, with the compose files a test picks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

IMAGE = os.environ.get("IMAGE", "prefix-rft:cpu")
# The stand-ins deploy/docker/build-images.sh builds for the Docker Hub images.
REDIS_IMAGE = "prefix-rft/redis:7-bookworm"


def run(argv: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)


def compose_client() -> list[str]:
    """The Go plugin when the docker client has it, else Debian's docker-compose 1.29."""
    if shutil.which("docker") and run(["docker", "compose", "version"]).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed: `make images` installs them")


class Stack:
    """One compose project: a copy of deploy/ with fresh secrets, under its own project name."""

    def __init__(self, root: Path, files: tuple[str, ...] = ("compose.yaml",)):
        self.root = root
        self.compose_dir = root / "deploy" / "compose"
        self.files = files
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
        files = [arg for name in self.files for arg in ("-f", str(self.compose_dir / name))]
        argv = [*self.client, "-p", self.project, *files, *args]
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


def worker_version(url: str) -> int:
    return httpx.get(f"{url}/v1/weights", timeout=10).json()["version"]


def counter_total(url: str, name: str) -> float:
    """A service's Prometheus counter ``name`` (without ``_total``), summed over its labels."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        s.value for family in text_string_to_metric_families(text) if family.name == name
        for s in family.samples if s.name == f"{name}_total"
    )
