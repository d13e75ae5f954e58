"""A task's verifier travels with it: a rollout worker (real vLLM) takes tasks naming a pip-installed
plug-in verifier and a module:function path, the real reward service scores every response with them,
and the trajectory groups carry those scores (partial credit no built-in verifier gives)."""

from __future__ import annotations

import json
import sys

import pytest

from launcher.processes import free_port, start_process, wait_http_ready
from shared.api.rollout import SamplingParams
from shared.bus import Keys, TaskStream, WeightsRecordStore
from shared.datasets.arithmetic import ArithmeticDataset
from shared.messages import RolloutKind, RolloutTask, WeightsRecord
from shared.modeling import load_tokenizer, prompt_token_ids, response_token_ids
from tests.helpers.plugins import ENTRY_POINT, PATH, install_plugin
from tests.helpers.workers import groups_in, start_worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_groups_are_scored_by_the_verifier_their_task_names(
    tmp_path, default_init_dir, redis_url, redis_client, namespace
):
    keys = Keys(namespace)
    site = install_plugin(tmp_path / "plugin")
    port = free_port()
    env = {"PYTHONPATH": str(site), "PRFT_REWARD__WORKERS": "1", "PRFT_REWARD__VERIFIER_PATHS": json.dumps([PATH])}
    reward = start_process("reward", [sys.executable, "-m", "services.reward", "--port", str(port)],
                           tmp_path / "reward.log", env=env)
    tokenizer = load_tokenizer(default_init_dir)
    WeightsRecordStore(redis_client, keys).set(WeightsRecord(version=0, uri=default_init_dir.as_uri()))
    worker, url = start_worker(tmp_path, "worker", default_init_dir, redis_url, namespace, f"http://127.0.0.1:{port}")
    try:
        wait_http_ready(reward, f"http://127.0.0.1:{port}/healthz", timeout=120)
        wait_http_ready(worker, f"{url}/readyz", timeout=480)  # vLLM starts slowly on a shared machine
        problem = ArithmeticDataset().problems("warmup")[0]
        demo_text = problem.demonstrations[0]
        demo = response_token_ids(tokenizer, demo_text)

        def task(task_id: str, reference: str, verifier: str) -> RolloutTask:
            return RolloutTask(
                id=task_id, prompt_id=problem.id, issued_at_version=0, step=0,
                prompt_token_ids=prompt_token_ids(tokenizer, problem.prompt), reference=reference, verifier=verifier,
                n_on_policy=3, demonstrations=[demo], demonstration_texts=[demo_text],
                sampling=SamplingParams(temperature=1.0, max_tokens=48, seed=1),
            )

        # within_one: the demonstration states the answer, one away from this reference -> 0.5.
        one_off = task("one-off", str(int(problem.answer) + 1), ENTRY_POINT)
        # strict_length (by its path): correct when the response is as long as the reference says.
        length = task("length", str(len(demo_text)), PATH)
        tasks = TaskStream(redis_client, keys)
        tasks.append(one_off)
        tasks.append(length)
        wait_for(lambda: len(groups_in(redis_client, keys)) == 2, 180, "both groups", (worker, reward))
        groups = {g.id: g for g in groups_in(redis_client, keys)}

        demo_one_off = groups["one-off"].trajectories[-1]
        assert demo_one_off.kind == RolloutKind.demonstration
        assert (demo_one_off.reward, demo_one_off.correct) == (0.5, False)
        assert {t.reward for t in groups["one-off"].trajectories} <= {0.0, 0.5, 1.0}
        demo_length = groups["length"].trajectories[-1]
        assert (demo_length.reward, demo_length.correct) == (1.0, True)  # math would give 0 for this reference
        for trajectory in groups["length"].trajectories[:-1]:
            assert trajectory.correct == (len(trajectory.text) == len(demo_text))
    finally:
        worker.stop()
        reward.stop()
