"""A real deployment trained to its end while a watcher records, for each version every worker serves,
greedy completions of fixed prompts (the response names the version that produced it); afterwards
they are compared with transformers on that version's folder, so the comparison costs the deployment
no CPU. Used by the weights deployment tests (tests/e2e/test_weights_deployment*.py)."""

from __future__ import annotations

import os
import secrets
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from launcher.deployment import LocalDeployment
from shared.api.rollout import GenerateRequest, GenerateResponse, SamplingParams, WeightsStatus
from shared.datasets.arithmetic import ArithmeticDataset
from shared.modeling import load_tokenizer, prompt_token_ids
from shared.records import FinalRecord
from tests.helpers.faults import reconciled, wait_for
from tests.helpers.jobs import deployment_job
from tests.helpers.reference import hf_greedy
from tests.helpers.workers import served_version, wait_served

MAX_TOKENS = 12  # greedy continuation compared token by token with transformers
PROMPTS = 2


@dataclass
class Observation:
    worker: str
    version: int  # as the generate response names it
    prompt: list[int]
    tokens: list[int]


class Watcher(threading.Thread):
    """Polls every worker's served version; on a new one, records its greedy output for each prompt."""

    def __init__(self, deployment: LocalDeployment, prompts: list[list[int]]):
        super().__init__(daemon=True, name="greedy-watcher")
        self.deployment = deployment
        self.prompts = prompts
        self.observations: list[Observation] = []
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.seen: dict[str, set[int]] = {}

    def run(self) -> None:
        with httpx.Client(timeout=60) as client:
            # Every version is served for at least one task's generation, reward and training step
            # (the job runs at max_staleness 0): polling at a fraction of that sees each one.
            while not self.stopping.wait(0.05):
                for url in list(self.deployment.rollout_urls):
                    try:
                        self.observe(client, url)
                    except httpx.HTTPError:
                        continue  # still starting, or stopping: the next poll tries again

    def observe(self, client: httpx.Client, url: str) -> None:
        status = WeightsStatus.model_validate_json(client.get(f"{url}/v1/weights").content)
        seen = self.seen.setdefault(url, set())
        if status.version in seen:
            return
        greedy = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)
        for prompt in self.prompts:
            body = GenerateRequest(prompt_token_ids=prompt, sampling=greedy).model_dump(mode="json")
            reply = client.post(f"{url}/v1/generate", json=body)
            if reply.status_code == 503:  # a joiner's engine still loading: the next poll asks again
                return
            if reply.status_code != 200:
                self.errors.append(f"{url}: {reply.status_code} {reply.text}")
                return
            answer = GenerateResponse.model_validate_json(reply.content)
            self.observations.append(Observation(url, answer.model_version, prompt, answer.samples[0].token_ids))
            seen.add(answer.model_version)

    def catch_up(self) -> None:
        """One more look at every worker (after the run: each serves the final version)."""
        with httpx.Client(timeout=60) as client:
            for url in self.deployment.rollout_urls:
                self.observe(client, url)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=120)

    def versions(self, url: str) -> set[int]:
        return {o.version for o in self.observations if o.worker == url}


@dataclass
class Finished:
    deployment: LocalDeployment
    watcher: Watcher
    final: FinalRecord
    initial: list[str]  # the workers started with the learner
    joiner: str | None
    joined_at: int | None  # the newest version served when the joiner started

    @property
    def weights(self) -> Path:
        return self.deployment.run_dir / "learner" / "weights"


def train_job(
    tmp: Path, model: Path, steps: int, weights: dict, workers: int, join: bool, env: dict[str, str] | None = None
) -> Finished:
    """A job run to its end: ``workers`` workers start with the learner and, with ``join``, a third starts
    once the learner has published v1 (the learner is held stopped meanwhile, so the job is still running
    when the new worker is ready, however slow its engine is to start)."""
    run_dir = tmp
    namespace = f"deploy-{secrets.token_hex(4)}"
    config = run_dir / "job.yaml"
    publishing = {
        "publish_every": 1,
        "keep_weights": 1000,  # every version's folder stays, for the comparison at the end
        "checkpoint_every": steps,
        "weights": weights,
        # Synchronous: a task issued after version N is generated on N (a worker loads it first), so
        # every version is served until a group made on it is trained, and the watcher can see each one.
        "max_staleness": 0,
    }
    job = deployment_job(secrets.token_urlsafe(24), namespace, model, run_dir, steps, learner=publishing)
    config.write_text(yaml.safe_dump(job))
    deployment = LocalDeployment(run_dir=run_dir, config_path=config)
    tokenizer = load_tokenizer(model)
    problems = ArithmeticDataset().problems("warmup")[:PROMPTS]
    watcher = Watcher(deployment, [prompt_token_ids(tokenizer, p.prompt) for p in problems])
    joiner = joined_at = None
    try:
        deployment.start_redis()
        deployment.start_reward(workers=1, wait=False)
        for index in range(workers):
            deployment.start_rollout_worker(model, index, env=env, wait=False)
        deployment.start_learner(env=env, wait=False)
        deployment.wait_ready()
        initial = list(deployment.rollout_urls)
        watcher.start()
        if join:
            # v1 released (recorded and pushed): a worker serves it.
            wait_for(lambda: max(served_version(url) for url in initial) >= 1, 600, deployment, "v1 served")
            learner = deployment.process("learner")
            os.killpg(learner.pid, signal.SIGSTOP)
            try:
                joined_at = max(served_version(url) for url in initial)
                joiner = deployment.start_rollout_worker(model, workers, env=env)
            finally:
                os.killpg(learner.pid, signal.SIGCONT)
        learner_dir = run_dir / "learner"
        wait_for(lambda: FinalRecord.read(learner_dir) is not None, 900, deployment, "the job to finish",
                 allow_exited=("learner",))
        learner = deployment.process("learner")
        assert learner.popen.wait(120) == 0, learner.log_tail()
        final = FinalRecord.read(learner_dir)
        # What `prefix-rft run` waits for before its final evaluation: every worker on the last version.
        for url in deployment.rollout_urls:
            wait_served(url, final.version, timeout=120)
        watcher.stop()
        watcher.catch_up()
        return Finished(deployment, watcher, final, initial, joiner, joined_at)
    except BaseException:
        watcher.stopping.set()
        deployment.stop()
        raise


def assert_greedy_is_transformers(run: Finished, versions: set[int]) -> None:
    eos = load_tokenizer(run.weights / f"v{run.final.version}").eos_token_id
    checked = [o for o in run.watcher.observations if o.version in versions]
    assert {o.version for o in checked} == versions, "a version no worker was seen serving"
    for o in sorted(checked, key=lambda o: o.version):
        folder = run.weights / f"v{o.version}"
        assert o.tokens == hf_greedy(folder, o.prompt, MAX_TOKENS, eos), (
            f"{o.worker} on v{o.version}: greedy output differs from transformers on {folder}"
        )


def assert_reconciles(run: Finished, steps: int) -> None:
    ledger = reconciled(run.deployment.run_dir, run.deployment.redis_url, "the finished run", attempts=1)
    assert ledger.ok, ledger.problems
    assert len(ledger.trained) == steps * 2  # batch_prompts groups per step, each once
    assert ledger.tasks_dead == 0
