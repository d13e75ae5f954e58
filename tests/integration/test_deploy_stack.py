"""The compose deployment, run for real without a Docker engine: redis-server with the ACL file
deploy/make-secrets.sh writes, and every service started the way its container starts it
(deploy/docker/entrypoint.sh, then `prefix-rft <compose command>`, with the compose environment and
secret files). Only what a container network gives for free is translated: service names and
fixed ports become loopback and free ports. Then the deployment's promises: the health checks
pass, a worker that joins is picked up by the running learner and one that leaves is not missed,
and a restarted learner continues from its checkpoint.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import yaml

from launcher.processes import ManagedProcess, free_port, redis_server_binary, start_process, wait_http_ready
from shared.api.http import RetryPolicy, ServiceUnavailable
from shared.api.learner import LearnerClient
from shared.api.rollout import RolloutClient
from shared.bus import Keys, WorkerRegistry
from shared.records import LearnerStatus
from tests.helpers.deploy import load_compose, prepared_checkout

pytestmark = pytest.mark.integration

PREFIX_RFT = str(Path(sys.executable).parent / "prefix-rft")
HEALTHCHECK = Path(__file__).resolve().parents[2] / "deploy" / "docker" / "healthcheck.py"
DEFAULT_PORTS = {"rollout": 8000, "reward": 8001, "learner": 8002}
SMALL_JOB = {
    "PRFT_LEARNER__BATCH_PROMPTS": "4",
    "PRFT_LEARNER__MINI_BATCH_PROMPTS": "4",
    "PRFT_LEARNER__SAMPLING__MAX_TOKENS": "96",
}


class ComposeOnLoopback:
    """Starts compose services as local processes; see the module docstring for what is translated."""

    def __init__(self, root: Path):
        self.root = root
        self.compose_dir = root / "deploy" / "compose"
        self.model = load_compose(self.compose_dir, ("compose.yaml",))
        self.logs = root / "logs"
        self.redis_port = free_port()
        self.ports = {name: free_port() for name in DEFAULT_PORTS}
        self.processes: list[ManagedProcess] = []
        self.secrets = {name: self.compose_dir / s["file"] for name, s in self.model["secrets"].items()}
        # The Redis URL secret names the compose service "redis"; here it is loopback.
        url = self.secrets["redis_url"].read_text().strip().replace("@redis:6379", f"@127.0.0.1:{self.redis_port}")
        self.secrets["redis_url"] = root / "redis_url.local"
        self.secrets["redis_url"].write_text(url + "\n")
        self.redis_url = url

    def translate(self, value: str, replica: str, port: int) -> str:
        for name, default in DEFAULT_PORTS.items():
            value = value.replace(f"http://{name}:{default}", f"http://127.0.0.1:{self.ports[name]}")
        # Each replica is its own container, with its own address and host name.
        value = value.replace(f"{{hostname}}:{DEFAULT_PORTS['rollout']}", f"127.0.0.1:{port}")
        return value.replace("{hostname}", replica)

    def start_redis(self) -> ManagedProcess:
        command = list(self.model["services"]["redis"]["command"])
        acl = self.model["services"]["redis"]["secrets"][0]
        argv = [redis_server_binary() if a == "redis-server" else a for a in command]
        argv = [str(self.secrets[acl]) if a == f"/run/secrets/{acl}" else a for a in argv]
        data = self.root / "redis-data"
        data.mkdir()
        argv += ["--bind", "127.0.0.1", "--port", str(self.redis_port), "--dir", str(data), "--daemonize", "no"]
        process = start_process("redis", argv, self.logs / "redis.log")
        self.processes.append(process)
        client = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + 20
        while True:
            process.check_alive()
            try:
                client.ping()
                return process
            except redis.ConnectionError:
                assert time.monotonic() < deadline, process.log_tail()
                time.sleep(0.1)

    def start(self, service: str, replica: str | None = None, port: int | None = None) -> ManagedProcess:
        replica = replica or service
        spec = self.model["services"][service]
        port = port or self.ports[service]
        env = {}
        for key, value in spec["environment"].items():
            value = str(value)
            if key.endswith("_FILE"):
                value = str(self.secrets[value.removeprefix("/run/secrets/")])
            env[key] = self.translate(value, replica, port)
        env[f"PRFT_{service.upper()}__PORT"] = str(port)
        if service == "learner":
            env["PRFT_LEARNER__RUN_DIR"] = str(self.root / "learner-runs" / "learner")
            # A smaller job than the compose default, so that steps take seconds on two cores.
            env.update(SMALL_JOB)
        if service == "rollout":
            # Containers have their own file systems; processes sharing one need their own RPC paths.
            env["VLLM_RPC_BASE_PATH"] = str(self.root / f"vllm-rpc-{replica}")
        argv = list(spec["command"])
        config = next(
            v for v in spec["volumes"] if isinstance(v, dict) and v["target"] == argv[argv.index("--config") + 1]
        )
        argv[argv.index("--config") + 1] = str((self.compose_dir / config["source"]).resolve())
        # The image's ENTRYPOINT is `tini -- prft-entrypoint prefix-rft`.
        entrypoint = self.root / "deploy" / "docker" / "entrypoint.sh"
        process = start_process(replica, ["sh", str(entrypoint), PREFIX_RFT, *argv], self.logs / f"{replica}.log", env)
        self.processes.append(process)
        return process

    def url(self, service: str, port: int | None = None) -> str:
        return f"http://127.0.0.1:{port or self.ports[service]}"

    def stop(self, name: str | None = None, timeout: float = 60) -> int | None:
        """Stop one process (it leaves the stack) or, without a name, all of them."""
        if name is not None:
            process = next(p for p in self.processes if p.name == name)
            self.processes.remove(process)
            return process.stop(timeout=timeout)
        for process in reversed(self.processes):
            process.stop(timeout=timeout)
        return None


def healthcheck(url: str) -> int:
    return subprocess.run([sys.executable, str(HEALTHCHECK), url], capture_output=True, timeout=30).returncode


def learner_status(stack: ComposeOnLoopback) -> LearnerStatus:
    async def status() -> LearnerStatus:
        async with LearnerClient(stack.url("learner"), timeout_s=10) as learner:
            return await learner.status()

    return asyncio.run(status())


def wait_for(predicate, timeout: float, stack: ComposeOnLoopback, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in stack.processes:
            process.check_alive()
        value = predicate()
        if value:
            return value
        time.sleep(1)
    tails = "\n".join(f"--- {p.name}\n{p.log_tail(15)}" for p in stack.processes)
    raise TimeoutError(f"{what} not within {timeout:.0f} s\n{tails}")


def registered_urls(stack: ComposeOnLoopback) -> set[str]:
    """The addresses in the workers registry: where the learner will push weights."""
    config = yaml.safe_load((stack.compose_dir / "../k8s/base/config.yaml").read_text())
    keys = Keys(config["redis"]["namespace"])
    client = redis.Redis.from_url(stack.redis_url)
    try:
        return {info.url for info in WorkerRegistry(client, keys).all().values()}
    finally:
        client.close()


def worker_version(url: str) -> int:
    async def version() -> int:
        async with RolloutClient(url, timeout_s=5, retry=RetryPolicy(retries=0)) as worker:
            return await worker.version()

    try:
        return asyncio.run(version())
    except ServiceUnavailable:
        return -1


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (make install)")
    stack = ComposeOnLoopback(prepared_checkout(tmp_path_factory.mktemp("compose")))
    try:
        yield stack
    finally:
        stack.stop()


def test_redis_runs_with_the_generated_acl_and_aof(stack):
    stack.start_redis()
    client = redis.Redis(host="127.0.0.1", port=stack.redis_port)
    with pytest.raises(redis.AuthenticationError):
        client.ping()
    # The health-check user can answer PING and nothing else.
    health = redis.Redis(host="127.0.0.1", port=stack.redis_port, username="healthcheck", password="-")
    assert health.ping()
    with pytest.raises(redis.exceptions.NoPermissionError):
        health.get("x")
    authed = redis.Redis.from_url(stack.redis_url)
    assert authed.config_get("appendonly") == {"appendonly": "yes"}
    # compose's health check command, pointed at this server's port.
    kind, command = stack.model["services"]["redis"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    command = command.replace("redis-cli ", f"redis-cli -p {stack.redis_port} ", 1)
    assert subprocess.run(["sh", "-c", command], timeout=30).returncode == 0


def test_services_start_from_the_compose_commands_and_pass_their_health_checks(stack):
    reward = stack.start("reward")
    wait_http_ready(reward, f"{stack.url('reward')}/healthz", timeout=120)
    rollout = stack.start("rollout", replica="rollout-0", port=stack.ports["rollout"])
    learner = stack.start("learner")
    wait_http_ready(rollout, f"{stack.url('rollout')}/readyz", timeout=300)
    wait_http_ready(learner, f"{stack.url('learner')}/healthz", timeout=300)
    for service, path in (("reward", "/healthz"), ("rollout", "/readyz"), ("learner", "/healthz")):
        assert healthcheck(f"{stack.url(service)}{path}") == 0, service


def test_learner_trains_with_the_worker_that_registered_itself(stack):
    wait_for(lambda: (learner_status(stack).version or 0) >= 1, 600, stack, "the first trained version")
    # The worker registered the address its compose environment gives (PRFT_ROLLOUT__PUBLIC_URL),
    # and the learner's push reached it there.
    assert registered_urls(stack) == {stack.url("rollout")}
    status = learner_status(stack)
    wait_for(lambda: worker_version(stack.url("rollout")) >= status.version, 120, stack, "the push to rollout-0")


def test_a_worker_that_joins_is_picked_up_and_one_that_leaves_is_not_missed(stack):
    port = free_port()
    joined = stack.start("rollout", replica="rollout-1", port=port)
    wait_http_ready(joined, f"{stack.url('rollout', port)}/readyz", timeout=300)
    wait_for(lambda: stack.url("rollout", port) in registered_urls(stack), 60, stack, "rollout-1 registering")
    joined_at = learner_status(stack).version
    # A version trained after it joined reaches it: the running learner found it.
    wait_for(lambda: worker_version(stack.url("rollout", port)) > joined_at, 600, stack, "a push to rollout-1")

    assert stack.stop("rollout-0", timeout=90) == 0, "rollout-0 did not stop cleanly on SIGTERM"
    wait_for(
        lambda: registered_urls(stack) == {stack.url("rollout", port)}, 60, stack, "rollout-0 leaving the registry"
    )
    left_at = learner_status(stack).step
    # Training goes on with the remaining worker.
    wait_for(lambda: learner_status(stack).step >= left_at + 2, 600, stack, "two steps after rollout-0 left")


def test_a_restarted_learner_continues_from_its_checkpoint(stack):
    # SIGTERM: the learner checkpoints at the next step boundary, then exits.
    assert stack.stop("learner", timeout=300) == 0, "the learner did not stop cleanly on SIGTERM"
    checkpoints = list((stack.root / "learner-runs" / "learner" / "checkpoints").iterdir())
    assert checkpoints, "no checkpoint after SIGTERM"
    restarted = stack.start("learner")  # the same command: `learner --config ... --resume`
    wait_http_ready(restarted, f"{stack.url('learner')}/healthz", timeout=300)
    status = wait_for(lambda: (s := learner_status(stack)).step and s, 300, stack, "the resumed status")
    assert status.step > 0
