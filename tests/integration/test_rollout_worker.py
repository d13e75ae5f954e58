"""Rollout workers as real processes on one tasks stream, with the real reward service and Redis: they
share the tasks, a worker killed with SIGKILL mid-task has its tasks finished by the other (no group
lost or duplicated) and leaves no engine process behind, a worker loads the weights recorded in Redis
when it starts, and SIGTERM drains."""

from __future__ import annotations

import shutil
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from launcher.processes import free_port, start_process, wait_http_ready
from shared.api.rollout import SamplingParams
from shared.api.weights import WEIGHTS_FILE
from shared.bus import Keys, LedgerQueries, TaskStream, WeightsRecordStore, WorkerRegistry
from shared.datasets.arithmetic import ArithmeticDataset
from shared.messages import RolloutKind, RolloutTask, TrajectoryGroup, WeightsRecord, WorkerInfo
from shared.modeling import load_tokenizer, prompt_token_ids, response_token_ids
from shared.weights.manifest import write_manifest
from tests.helpers.workers import groups_in, start_worker, started_processes, still_running, wait_for

pytestmark = pytest.mark.integration

RECORDED_VERSION = 3
N_ON_POLICY = 3


def start_reward(tmp: Path, port: int):
    argv = [sys.executable, "-m", "services.reward", "--port", str(port)]
    process = start_process("reward", argv, tmp / "reward.log", env={"PRFT_REWARD__WORKERS": "1"})
    wait_http_ready(process, f"http://127.0.0.1:{port}/healthz", timeout=120)
    return process




def make_tasks(tokenizer, count: int, offset: int = 0, max_tokens: int = 64) -> list[RolloutTask]:
    problems = ArithmeticDataset().problems("warmup")[offset : offset + count]
    tasks = []
    for i, problem in enumerate(problems):
        demo_text = problem.demonstrations[0]
        demo = response_token_ids(tokenizer, demo_text)
        tasks.append(
            RolloutTask(
                id=f"task-{offset + i}",
                prompt_id=problem.id,
                issued_at_version=RECORDED_VERSION,
                step=0,
                prompt_token_ids=prompt_token_ids(tokenizer, problem.prompt),
                reference=problem.answer,
                n_on_policy=N_ON_POLICY,
                hybrid_prefixes=[demo[: len(demo) // 2]],
                demonstrations=[demo],
                demonstration_texts=[demo_text],
                sampling=SamplingParams(temperature=1.0, max_tokens=max_tokens, seed=i),
            )
        )
    return tasks




def pending_on(redis_client, keys: Keys, consumer: str) -> list[str]:
    return [p.entry_id for p in TaskStream(redis_client, keys).pending_entries(consumer, count=1000)]




def check_group(group: TrajectoryGroup, task: RolloutTask, eos: int) -> None:
    kinds = [t.kind for t in group.trajectories]
    assert kinds == [RolloutKind.on_policy] * N_ON_POLICY + [RolloutKind.hybrid, RolloutKind.demonstration]
    assert group.prompt_token_ids == task.prompt_token_ids and group.prompt_id == task.prompt_id
    generated = [t for t in group.trajectories if t.kind is not RolloutKind.demonstration]
    assert {t.policy_version for t in generated} == {RECORDED_VERSION}  # one version per group
    for trajectory in generated:
        continuation = trajectory.continuation_token_ids
        assert 0 < len(continuation) <= task.sampling.max_tokens
        assert len(trajectory.behaviour_logprobs) == len(continuation)
        assert all(lp <= 0.0 for lp in trajectory.behaviour_logprobs)
        if trajectory.finish_reason == "stop":
            assert continuation[-1] == eos
        assert trajectory.reward in (0.0, 1.0)
    hybrid = group.trajectories[N_ON_POLICY]
    prefix = task.hybrid_prefixes[0]
    assert hybrid.prefix_len == len(prefix) and hybrid.response_token_ids[: len(prefix)] == prefix
    demo = group.trajectories[-1]
    assert demo.response_token_ids == task.demonstrations[0] and demo.prefix_len == len(demo.response_token_ids)
    assert demo.behaviour_logprobs == [] and demo.policy_version is None
    assert demo.correct and demo.reward == 1.0  # scored by the reward service: the demonstration is right


def test_workers_share_tasks_and_finish_the_work_of_a_killed_one(
    tmp_path, default_init_dir, redis_url, redis_client, namespace
):
    keys = Keys(namespace)
    reward_port = free_port()
    reward_url = f"http://127.0.0.1:{reward_port}"  # not up yet: the workers must wait for it
    reward = None
    tokenizer = load_tokenizer(default_init_dir)
    # Published weights: the workers must load them (and tag samples with their version) on start, as the
    # learner publishes them (a manifest of verified buckets, here through the file transport), from memory.
    published = tmp_path / "published" / f"v{RECORDED_VERSION}"
    published.mkdir(parents=True)
    shutil.copy(default_init_dir / WEIGHTS_FILE, published / WEIGHTS_FILE)
    manifest = write_manifest(published / WEIGHTS_FILE, RECORDED_VERSION, 1 << 20)
    WeightsRecordStore(redis_client, keys).set(WeightsRecord(
        version=RECORDED_VERSION, uri=(published / WEIGHTS_FILE).as_uri(), manifest=manifest.as_uri(), transport="file"
    ))
    a, url_a = start_worker(tmp_path, "worker-a", default_init_dir, redis_url, namespace, reward_url)
    b, url_b = start_worker(tmp_path, "worker-b", default_init_dir, redis_url, namespace, reward_url)
    engine_a = []
    try:
        for process, url in ((a, url_a), (b, url_b)):
            wait_http_ready(process, f"{url}/readyz", timeout=240)

        def registered() -> dict[str, WorkerInfo]:
            return WorkerRegistry(redis_client, keys).all()

        wait_for(lambda: set(registered()) == {"worker-a", "worker-b"}, 60, "both workers to register", (a, b))
        assert {info.version for info in registered().values()} == {RECORDED_VERSION}
        assert {info.url for info in registered().values()} == {url_a, url_b}
        status = httpx.get(f"{url_a}/v1/weights").json()
        assert status["version"] == RECORDED_VERSION and status["last_failure"] is None

        first = make_tasks(tokenizer, 4)
        producer = TaskStream(redis_client, keys)
        for task in first:
            producer.append(task)

        # The reward service is down: groups are generated but nothing is appended or acknowledged.
        wait_for(lambda: producer.pending() >= 4, 60, "the workers to take the tasks", (a, b))
        time.sleep(2.0)
        assert groups_in(redis_client, keys) == []
        assert producer.pending() == 4
        reward = start_reward(tmp_path, reward_port)
        wait_for(lambda: len(groups_in(redis_client, keys)) == 4, 60, "the first groups", (a, b))
        # Each worker held two tasks while the reward service was down: both produce groups.
        assert {g.worker_id for g in groups_in(redis_client, keys)} == {"worker-a", "worker-b"}

        # Kill worker-a as soon as it holds tasks of a second, longer batch: SIGKILL to its own process
        # only (as the OOM killer does), not its process group.
        second = make_tasks(tokenizer, 8, offset=4, max_tokens=128)
        for task in second:
            producer.append(task)
        wait_for(lambda: pending_on(redis_client, keys, "worker-a"), 60, "worker-a to take a task", (a, b))
        orphaned = pending_on(redis_client, keys, "worker-a")
        engine_a = started_processes(a)
        a.popen.kill()
        assert orphaned
        # Its vLLM engine core does not live on as an orphan holding the model.
        wait_for(lambda: not still_running(engine_a), 10, "worker-a's engine process to end", (b,))
        tasks = first + second

        wait_for(lambda: len(groups_in(redis_client, keys)) >= len(tasks), 180, "every group", (b,))
        time.sleep(1.0)  # a late duplicate would show up now
        groups = groups_in(redis_client, keys)
        ids = [g.id for g in groups]
        assert sorted(ids) == sorted(t.id for t in tasks), "a group was lost or duplicated"
        assert producer.pending() == 0
        by_id = {t.id: t for t in tasks}
        for group in groups:
            check_group(group, by_id[group.id], tokenizer.eos_token_id)
        workers = {g.worker_id for g in groups}
        assert workers == {"worker-a", "worker-b"}, f"tasks were not shared: {workers}"
        task_of = dict(LedgerQueries(redis_client, keys).task_ids())
        orphaned_ids = {task_of[entry_id] for entry_id in orphaned}
        assert all(g.worker_id == "worker-b" for g in groups if g.id in orphaned_ids)

        # worker-a left a stale registry entry (the learner ignores it once its heartbeat is old).
        assert time.time() - registered()["worker-a"].heartbeat_at > 1.0
        assert time.time() - registered()["worker-b"].heartbeat_at < 3.0

        # SIGTERM with tasks in flight: worker-b finishes them, deregisters and exits 0.
        more = make_tasks(tokenizer, 3, offset=12)
        for task in more:
            producer.append(task)
        wait_for(lambda: pending_on(redis_client, keys, "worker-b"), 60, "worker-b to take new tasks", (b,))
        b.popen.send_signal(signal.SIGTERM)
        assert b.popen.wait(90) == 0, b.log_tail()
        finished = {g.id for g in groups_in(redis_client, keys)}
        assert len(groups_in(redis_client, keys)) == len(finished)
        # Every new task was finished (those in flight, within the drain timeout), handed back (read
        # as the worker stopped: pending, but idle enough for any worker's next reclaim), or never
        # delivered. None was acknowledged without its group.
        rows = producer.pending_entries(count=100)
        assert all(row.idle_ms > 10**9 for row in rows), rows
        left = [t.id for t in more if t.id not in finished]
        assert len(rows) + producer.backlog() == len(left)
        assert "worker-b" not in registered()
    finally:
        a.kill()
        for leftover in still_running(engine_a):
            leftover.kill()
        b.stop()
        if reward is not None:
            reward.stop()
