"""Faults on one real local deployment (redis-server with AOF, reward, vLLM workers, DeepSpeed learner),
injected one after the other while it trains. After each the run goes on, and the ledger reconciles:
groups produced = trained + dropped as stale + still queued, no id trained twice, no task lost.

Run with ``pytest -s tests/faults`` to see the ledger after each fault.
"""

from __future__ import annotations

import asyncio
import http.server
import secrets
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from launcher.deployment import LocalDeployment
from shared.api.http import RetryPolicy, ServiceRefused, ServiceUnavailable
from shared.api.reward import RewardClient, ScoreItem
from shared.api.rollout import GenerateRequest, GenerateResponse, RolloutClient, SamplingParams, WeightsUpdateFailed
from shared.bus import Keys, LedgerQueries, Redis, connect
from shared.records import FinalRecord, metrics_file
from tests.helpers.faults import Auditor, learner_step, metric, reconciled, wait_for, wait_for_step
from tests.helpers.jobs import deployment_job
from tests.helpers.workers import wait_served

pytestmark = [pytest.mark.faults, pytest.mark.integration]
INCREMENTAL = True

TOTAL_STEPS = 12
ALLOWED = ("rollout-0", "rollout-1")  # killed in the first scenario, on purpose
CHECKPOINT_EVERY = 2
MAX_TEXT_BYTES = 64


@dataclass
class Run:
    deployment: LocalDeployment
    token: str
    namespace: str
    model: Path
    metrics_seen: dict[str, str]  # each service's /metrics, read while it ran
    auditor: Auditor  # a copy of every task and group: the learner trims the streams as it goes

    @property
    def run_dir(self) -> Path:
        return self.deployment.run_dir

    @property
    def redis_url(self) -> str:
        return self.deployment.redis_url

    def worker(self) -> str:
        return self.deployment.rollout_urls[-1]

    def start_worker(self, index: int) -> str:
        return self.deployment.start_rollout_worker(self.model, index)


def _job(token: str, namespace: str, model: Path, run_dir: Path) -> dict:
    return deployment_job(
        token, namespace, model, run_dir, TOTAL_STEPS,
        # A standing fault: the reward service refuses (422) every request holding a response over 64
        # bytes, as it would an over-long one; workers then score item by item, and lose no group.
        reward={"max_text_bytes": MAX_TEXT_BYTES},
        rollout={"reclaim_idle_ms": 3000},  # a dead worker's tasks go to another after 3 s
        learner={
            "checkpoint_every": CHECKPOINT_EVERY,
            "worker_ttl_s": 5,  # SIGKILLed workers stay registered: stop pushing to them soon
            "push_retries": 1,
            "push_timeout_s": 20,
        },
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory, default_base_dir) -> Run:
    run_dir = tmp_path_factory.mktemp("fault-run")
    token = secrets.token_urlsafe(24)
    namespace = f"faults-{secrets.token_hex(4)}"
    config = run_dir / "job.yaml"
    config.write_text(yaml.safe_dump(_job(token, namespace, default_base_dir, run_dir)))
    deployment = LocalDeployment(run_dir=run_dir, config_path=config)
    auditor = None
    try:
        auditor = Auditor(deployment.start_redis(), namespace)
        auditor.start()
        deployment.start_reward(workers=1, wait=False)  # the three start in parallel
        deployment.start_rollout_worker(default_base_dir, 0, wait=False)
        deployment.start_learner(wait=False)
        deployment.wait_ready()
        yield Run(deployment, token, namespace, default_base_dir, {}, auditor)
    finally:
        if auditor is not None:
            auditor.stop()
        deployment.stop()


def _redis(run: Run) -> Redis:
    return connect(run.redis_url, reconnect=False)


def _task_in_flight(run: Run) -> bool:
    return metric(run.worker(), "rollout_inflight_tasks") > 0


def test_rollout_workers_killed_mid_task_twice_and_a_new_one_later(run):
    wait_for_step(run.deployment, 1)
    run.metrics_seen["rollout"] = httpx.get(f"{run.worker()}/metrics").text
    run.metrics_seen["learner"] = httpx.get(f"{run.deployment.learner_url}/metrics").text
    for index in (0, 1):
        killed = tuple(f"rollout-{i}" for i in range(index))
        wait_for(lambda: _task_in_flight(run), 120, run.deployment, f"a task in flight on rollout-{index}", killed)
        run.deployment.process(f"rollout-{index}").kill()
        if index == 0:
            run.start_worker(1)
    time.sleep(2.0)  # no worker at all for a while
    step = learner_step(run.deployment)
    newcomer = run.start_worker(2)
    wait_for(
        lambda: metric(newcomer, "rollout_tasks_total") > 0, 120, run.deployment, "the new worker's first task", ALLOWED
    )
    wait_for(lambda: learner_step(run.deployment) >= step + 1, 240, run.deployment, "training to go on", ALLOWED)
    assert _reclaimed(run) > 0, "no worker reclaimed the tasks of the killed ones"
    with _redis(run) as client:
        assert LedgerQueries(client, Keys(run.namespace)).dead_task_count() == 0
    assert reconciled(run.run_dir, run.redis_url, "two workers killed mid-task").ok


def _reclaimed(run: Run) -> float:
    total = 0.0
    for url in run.deployment.rollout_urls[1:]:
        try:
            total += metric(url, "rollout_tasks_total", outcome="reclaimed")
        except ServiceUnavailable:
            pass  # a killed worker
    return total


def test_reward_service_restarted_during_the_run(run):
    step = learner_step(run.deployment)
    reward = run.deployment.process("reward")
    port = int(run.deployment.reward_url.rpartition(":")[2])
    run.metrics_seen["reward"] = httpx.get(f"{run.deployment.reward_url}/metrics").text
    log = run.deployment.process("rollout-2").log_path
    retries_before = log.read_text().count("scoring failed")
    reward.kill()
    wait_for(  # a worker meets connection refused and backs off
        lambda: log.read_text().count("scoring failed") > retries_before,
        120,
        run.deployment,
        "a scoring retry",
        ALLOWED + ("reward",),
    )
    run.deployment.start_reward(workers=1, port=port)
    wait_for(
        lambda: learner_step(run.deployment) >= step + 1, 240, run.deployment, "training after the restart", ALLOWED
    )
    assert metric(run.worker(), "rollout_tasks_total", outcome="dead_letter") == 0
    assert reconciled(run.run_dir, run.redis_url, "reward service restarted").ok


def test_redis_server_restarted_with_aof_during_the_run(run):
    step = learner_step(run.deployment)
    with _redis(run) as client:
        produced_before = LedgerQueries(client, Keys(run.namespace)).produced_total()
    run.deployment.restart_redis()
    with _redis(run) as client:
        assert LedgerQueries(client, Keys(run.namespace)).produced_total() >= produced_before, "the AOF lost groups"
    wait_for(
        lambda: learner_step(run.deployment) >= step + 1, 240, run.deployment, "training after redis restarted", ALLOWED
    )
    assert reconciled(run.run_dir, run.redis_url, "redis-server restarted (AOF)").ok


def test_learner_killed_between_checkpoints_resumes(run):
    # Just after a step that is not a checkpoint: the next one is at least a step away.
    wait_for(
        lambda: learner_step(run.deployment) % CHECKPOINT_EVERY == 1,
        240,
        run.deployment,
        "a step between checkpoints",
        ALLOWED,
    )
    killed_at = learner_step(run.deployment)
    run.deployment.process("learner").kill()
    # Groups the dead learner read or trained after its last checkpoint are still pending, not lost.
    assert reconciled(run.run_dir, run.redis_url, f"learner killed after step {killed_at}").ok
    run.deployment.start_learner(resume=True)
    learner_dir = run.run_dir / "learner"
    wait_for(lambda: FinalRecord.read(learner_dir) is not None, 400, run.deployment, "the resumed run to finish",
             ALLOWED + ("learner",))
    learner = run.deployment.process("learner")
    learner.popen.wait(60)
    assert learner.popen.returncode == 0, learner.log_tail()
    steps = [record.step for record in metrics_file(learner_dir).read()]
    assert steps == list(range(1, TOTAL_STEPS + 1)), f"steps logged {steps} (killed after step {killed_at})"
    assert FinalRecord.read(learner_dir).step == TOTAL_STEPS


def test_the_finished_run_reconciles_exactly(run):
    ledger = reconciled(run.run_dir, run.redis_url, "the finished run", attempts=1)
    assert ledger.ok, ledger.problems
    assert len(ledger.trained) == TOTAL_STEPS * 2  # batch_prompts groups per step, each once
    assert ledger.tasks_dead == 0
    assert metric(run.worker(), "rollout_tasks_total", outcome="reward_refused") > 0, "no request was refused"
    command = [sys.executable, "-m", "launcher.cli", "ledger", str(run.run_dir), "--redis-url", run.redis_url]
    printed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0 and "reconciles: yes" in printed.stdout, printed.stdout + printed.stderr


def test_no_group_was_scored_twice_as_different_values(run):
    """Rescore every trajectory ever appended (the auditor's copy: the streams are trimmed as the learner
    consumes them), each alone: the verifier is deterministic, so a group scored (or appended) twice with
    different rewards would show up as a mismatch or a second copy. A response the service refuses must
    have been stored as an error scoring 0."""
    run.auditor.catch_up()
    tasks, groups = run.auditor.tasks, run.auditor.groups
    with _redis(run) as client:
        assert len(groups) == LedgerQueries(client, Keys(run.namespace)).produced_total()
    assert len({g.id for g in groups}) == len(groups)

    async def rescore() -> int:
        refused = 0
        async with RewardClient(run.deployment.reward_url, timeout_s=60) as reward:
            for group in groups:
                task = tasks[group.id]
                for i, t in enumerate(group.trajectories):
                    item = ScoreItem(id=f"{group.id}:{i}", response=t.text, reference=task.reference,
                                     verifier=task.verifier)
                    try:
                        [again] = await reward.score([item])
                    except ServiceRefused as exc:
                        assert exc.status == 422, exc
                        refused += 1
                        assert (t.reward, t.correct, t.score_status.value) == (0.0, False, "error"), item
                    else:
                        assert (again.reward, again.correct) == (t.reward, t.correct), item
        return refused

    assert asyncio.run(rescore()) > 0


def _greedy(url: str) -> dict:
    request = GenerateRequest(prompt="What is 12 + 30?", n=1, sampling=SamplingParams(temperature=0.0, max_tokens=16))

    async def generate() -> GenerateResponse:
        async with RolloutClient(url, timeout_s=60, retry=RetryPolicy(retries=0)) as worker:
            return await worker.generate(request)

    answer = asyncio.run(generate())
    return {"version": answer.model_version, "tokens": answer.samples[0].token_ids}


class _HalfServer(http.server.BaseHTTPRequestHandler):
    """Announces the whole file, sends half of it, and hangs up."""

    payload = b""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload[: len(self.payload) // 2])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_a_weight_push_that_fails_half_way_leaves_the_old_version_serving(run, tmp_path):
    url = run.worker()
    before = _greedy(url)
    weights = sorted((run.run_dir / "learner" / "weights").glob("v*/model.safetensors"))[-1]
    cut = tmp_path / "cut" / "model.safetensors"
    cut.parent.mkdir()
    data = weights.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # a copy that stopped half-way: whole header, half the tensors
    _HalfServer.payload = data
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HalfServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    auth = {"Authorization": f"Bearer {run.token}"}
    try:
        for uri in (cut.as_uri(), f"http://127.0.0.1:{server.server_address[1]}/model.safetensors"):
            reply = httpx.post(
                f"{url}/v1/weights", json={"version": before["version"] + 1, "uri": uri}, headers=auth, timeout=60
            )
            assert reply.status_code == 202, reply.text  # queued; the worker finds the fault in the background
            with pytest.raises(WeightsUpdateFailed):
                wait_served(url, before["version"] + 1, timeout=120)
            assert httpx.get(f"{url}/readyz").status_code == 200
            assert httpx.get(f"{url}/v1/weights").json()["version"] == before["version"]
            assert _greedy(url) == before  # the same weights: same greedy tokens, same version tag
    finally:
        server.shutdown()
    shutil.rmtree(cut.parent)


def test_no_secret_in_logs_files_or_metrics(run):
    token = run.token.encode()
    leaks = [
        str(path)
        for path in run.run_dir.rglob("*")
        if path.is_file() and path.name != "job.yaml" and token in path.read_bytes()
    ]
    assert leaks == []
    for url in (run.worker(), run.deployment.reward_url):
        run.metrics_seen[url] = httpx.get(f"{url}/metrics").text
    assert [name for name, text in run.metrics_seen.items() if run.token in text] == []
    assert set(run.metrics_seen) >= {"rollout", "learner", "reward"}
