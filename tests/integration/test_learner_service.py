"""The learner as a real process against a real redis-server.

Trajectory groups come from :class:`DemoProducer`, a stand-in for the rollout workers that turns
every issued RolloutTask into a scored TrajectoryGroup without a model (the continuations are random
tokens, the rewards hand-made); a few groups are tagged with old weight versions so that some are
dropped as stale. Weight pushes go to a real HTTP endpoint registered as a worker.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import torch
import yaml
from safetensors.torch import load_file

from launcher.processes import free_port, start_process, wait_http_ready
from shared.api.learner import LearnerClient
from shared.bus import Keys, LedgerQueries, TaskStream, TrajectoryStream, WeightsRecordStore, connect
from shared.messages import RolloutKind, RolloutTask, Trajectory, TrajectoryGroup
from shared.modeling import load_tokenizer
from shared.records import FinalRecord, LearnerStatus, ledger_file, metrics_file
from tests.helpers.rollout import TOKEN
from tests.helpers.workers import register, served_version, weight_swaps

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


class DemoProducer(threading.Thread):
    def __init__(self, redis_url: str, namespace: str, eos_id: int, lagged_every: int = 5):
        super().__init__(daemon=True)
        self.client = connect(redis_url)
        self.keys = Keys(namespace)
        self.eos_id = eos_id
        self.lagged_every = lagged_every
        self.produced: list[str] = []
        self.gate = threading.Event()  # cleared: pause production
        self.gate.set()
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            tasks = TaskStream(self.client, self.keys)
            tasks.ensure_group()
            out = TrajectoryStream(self.client, self.keys)
            while not self.stopping.is_set():
                if not self.gate.is_set():
                    time.sleep(0.05)
                    continue
                for entry in tasks.read("producer", count=4, block_ms=100):
                    group = self.make(entry.message)
                    out.append(group)
                    tasks.ack(entry.entry_id)
                    self.produced.append(group.id)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def make(self, task: RolloutTask) -> TrajectoryGroup:
        record = WeightsRecordStore(self.client, self.keys).get()
        current = record.version if record else 0
        # Every few groups pretend a worker lagged three versions behind.
        version = max(0, current - 3) if len(self.produced) % self.lagged_every == 0 else current
        rng = random.Random(task.id)

        def sampled(prefix: list[int], kind: RolloutKind, reward: float) -> Trajectory:
            continuation = [rng.randrange(4, 300) for _ in range(rng.randint(3, 20))] + [self.eos_id]
            return Trajectory(
                kind=kind, response_token_ids=prefix + continuation, prefix_len=len(prefix),
                behaviour_logprobs=[-3.0] * len(continuation), policy_version=version,
                reward=reward, correct=reward > 0,
            )

        trajectories = [sampled(prefix, RolloutKind.hybrid, 1.0) for prefix in task.hybrid_prefixes]
        trajectories += [
            Trajectory(kind=RolloutKind.demonstration, response_token_ids=demo, prefix_len=len(demo),
                       behaviour_logprobs=[], policy_version=None, reward=1.0, correct=True)
            for demo in task.demonstrations
        ]
        trajectories += [
            sampled([], RolloutKind.on_policy, float(rng.random() < 0.3)) for _ in range(task.n_on_policy)
        ]
        return TrajectoryGroup(
            id=task.id, prompt_id=task.prompt_id, issued_at_version=task.issued_at_version, step=task.step,
            worker_id="demo-producer", prompt_token_ids=task.prompt_token_ids, trajectories=trajectories,
        )

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


def write_config(tmp_path: Path, redis_url: str, namespace: str, model_dir: Path, **learner) -> Path:
    section = {
        "model": str(model_dir),
        "dataset": {"train_size": 200},
        "algorithm": {"name": "prefix-rft", "n_rollouts": 4},
        "sampling": {"max_tokens": 32},
        "batch_prompts": 4,
        "mini_batch_prompts": 2,
        "micro_batch": 8,
        "optimizer": {"lr": 1e-3},
        "max_staleness": 1,
        "run_dir": str(tmp_path / "learner"),
        "port": free_port(),
        "worker_ttl_s": 600,
        "push_retries": 1,
        **learner,
    }
    document = {"redis": {"url": redis_url, "namespace": namespace}, "auth": {"token": TOKEN}, "learner": section}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _phase(base: str) -> str:
    return LearnerStatus.model_validate(httpx.get(f"{base}/v1/status").json()).phase


async def _start_learner(base: str) -> None:
    async with LearnerClient(base) as client:
        await client.start(TOKEN)


def wait_until(predicate, timeout: float, process=None, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None:
            process.check_alive()
        if time.monotonic() > deadline:
            tail = process.log_tail(40) if process is not None else ""
            raise TimeoutError(f"{what} not reached after {timeout:.0f} s\n{tail}")
        time.sleep(0.1)


def wait_starved(base: str, process, timeout: float = 60) -> LearnerStatus:
    """The learner's status once it has been waiting for groups at the same step for a second."""
    deadline = time.monotonic() + timeout
    previous = None
    while time.monotonic() < deadline:
        process.check_alive()
        status = LearnerStatus.model_validate(httpx.get(f"{base}/v1/status").json())
        if status.phase == "waiting" and previous is not None and previous.step == status.step:
            return status
        previous = status if status.phase == "waiting" else None
        time.sleep(1.0)
    raise TimeoutError(f"the learner kept training after production stopped\n{process.log_tail(40)}")


def wait_exit(process, timeout: float) -> int:
    process.popen.wait(timeout)
    return process.popen.returncode


def test_sigkill_between_checkpoints_then_resume_trains_every_group_once(
    tmp_path, redis_url, redis_client, namespace, default_init_dir, rollout_worker
):
    keys = Keys(namespace)
    config = write_config(tmp_path, redis_url, namespace, default_init_dir, total_steps=12, checkpoint_every=4)
    settings = yaml.safe_load(config.read_text())["learner"]
    run_dir = Path(settings["run_dir"])
    base = f"http://127.0.0.1:{settings['port']}"
    producer = DemoProducer(redis_url, namespace, load_tokenizer(default_init_dir).eos_token_id)
    producer.start()
    register(redis_client, keys, "worker", rollout_worker)  # a real rollout service takes the pushes
    swaps_at_start = weight_swaps(rollout_worker)
    argv = [sys.executable, "-m", "services.learner", "--config", str(config)]
    log_path = tmp_path / "learner.log"

    learner = start_process("learner", argv, log_path, cwd=REPO)
    try:
        wait_http_ready(learner, f"{base}/v1/status", timeout=120)
        metrics = metrics_file(run_dir)
        wait_until(lambda: any(r.step >= 5 for r in metrics.read()), 180, learner, "step 5")
        producer.gate.clear()  # the learner runs dry within the staleness window, before step 8
        status = wait_starved(base, learner)
        assert 5 <= status.step < 8, status
        assert "learner_loss" in httpx.get(f"{base}/metrics").text
        version = status.version
        assert httpx.get(f"{base}/v1/weights/{version}").status_code == 401  # the model needs the token
        served = httpx.get(f"{base}/v1/weights/{version}", headers={"Authorization": f"Bearer {TOKEN}"})
        assert served.status_code == 200 and served.content == (run_dir / "weights" / f"v{version}" /
                                                                "model.safetensors").read_bytes()
        assert (run_dir / "checkpoints" / "committed").read_text() == "step00000004"
        wait_until(lambda: served_version(rollout_worker) == version, 60, learner, f"the worker at v{version}")
        swaps_before_crash = weight_swaps(rollout_worker)
        learner.kill()  # SIGKILL: no chance to checkpoint
        killed_at = status.step
    finally:
        learner.kill()

    # Resume; stop with SIGTERM between checkpoints: it checkpoints the current step and exits cleanly.
    resumed = start_process("learner-resumed", argv + ["--resume"], log_path, cwd=REPO)
    try:
        producer.gate.set()
        wait_until(lambda: any(r.step >= 9 for r in metrics.read()), 180, resumed, "step 9")
        producer.gate.clear()
        stopped_at = wait_starved(base, resumed).step
        assert resumed.stop(timeout=60) == 0, resumed.log_tail(40)  # SIGTERM
        assert (run_dir / "checkpoints" / "committed").read_text() == f"step{stopped_at:08d}"
    finally:
        resumed.kill()

    final_run = start_process("learner-final", argv + ["--resume"], log_path, cwd=REPO)
    try:
        producer.gate.set()
        assert wait_exit(final_run, timeout=240) == 0, final_run.log_tail(40)
    finally:
        final_run.kill()
        producer.stop()
    assert producer.error is None, producer.error

    # ---- the ledger: every group produced was trained exactly once or dropped as stale
    ledger = ledger_file(run_dir).read()
    trained = [i for e in ledger if e.event == "trained" for i in e.ids]
    stale = [i for e in ledger if e.event == "stale" for i in e.ids]
    duplicates = [i for e in ledger if e.event == "duplicate" for i in e.ids]
    trained_count, stale_count = Counter(trained), Counter(stale)
    produced = set(producer.produced)
    assert len(produced) == len(producer.produced)  # the feeder never issued a task twice
    assert all(n == 1 for n in trained_count.values()), "a group was trained twice"
    assert all(n == 1 for n in stale_count.values()), "a group was dropped twice"
    assert not set(trained) & set(stale)
    assert set(trained) | set(stale) <= produced
    assert len(trained) == 12 * 4  # 12 steps of 4 groups
    # What was produced but neither trained nor dropped is still in the stream for a later run:
    # read and pending on the learner, or never delivered.
    leftover = produced - set(trained) - set(stale)
    queries = LedgerQueries(redis_client, keys)
    still_queued = queries.undecided_trajectories(queries.trajectory_ids())
    for group_id in leftover:
        assert group_id in still_queued, group_id
    print(
        f"\nkilled at step {killed_at} (checkpoint at 4), SIGTERM at step {stopped_at}; "
        f"produced {len(produced)} groups: trained once {len(trained)}, dropped as stale {len(stale)}, "
        f"still queued {len(leftover)}, duplicate deliveries recognised {len(duplicates)}"
    )
    assert stale, "the producer's lagged groups should have been dropped"

    # ---- metrics, weights, final state
    records = metrics.read()
    assert [m.step for m in records] == list(range(1, 13))  # the lost steps' lines were cut
    last = records[-1]
    assert last.dropped_stale_total == len(stale)
    assert last.trained_groups_total == 48
    # Every figure of a trained RL step is there (a record's other fields are required).
    for value in (last.loss, last.reward_on_policy, last.reward_hybrid, last.prefix_token_share, last.staleness_hist):
        assert value is not None, last
    final = FinalRecord.read(run_dir)
    assert final.step == 12
    # Versions keep rising across the crash (a worker refuses an older version than it serves, so a
    # reused number would fail the pushes), and the worker ends on the final one.
    assert swaps_before_crash > swaps_at_start
    assert final.version > version
    wait_until(lambda: served_version(rollout_worker) == final.version, 60, None, "the worker at the final version")
    assert weight_swaps(rollout_worker) > swaps_before_crash


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_two_ranks_train_and_publish_whole_weights(tmp_path, redis_url, namespace, default_init_dir, zero_stage):
    # SFT for two steps (demonstrations from the learner's data, no tasks), then RFT. Held at the start
    # (as the launcher starts it) until POST /v1/start: both ranks wait, and nothing is issued or published.
    config = write_config(
        tmp_path, redis_url, namespace, default_init_dir, total_steps=4, checkpoint_every=2,
        deepspeed={"zero_stage": zero_stage}, algorithm={"name": "sft-then-rft", "sft_steps": 2, "n_rollouts": 4},
        start_on_request=True,
    )
    learner_section = yaml.safe_load(config.read_text())["learner"]
    run_dir, base = Path(learner_section["run_dir"]), f"http://127.0.0.1:{learner_section['port']}"
    producer = DemoProducer(redis_url, namespace, load_tokenizer(default_init_dir).eos_token_id, lagged_every=10**9)
    producer.start()
    argv = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
        "-m", "services.learner", "--config", str(config),
    ]
    learner = start_process("learner-2ranks", argv, tmp_path / "learner.log", cwd=REPO)
    try:
        wait_http_ready(learner, f"{base}/v1/status", timeout=120)
        wait_until(lambda: _phase(base) == "held", 120, learner, "the held phase")
        time.sleep(2)  # idle rounds between the ranks
        assert _phase(base) == "held" and not metrics_file(run_dir).read()
        assert not WeightsRecordStore(connect(redis_url), Keys(namespace)).get()  # v0 not published yet
        assert httpx.post(f"{base}/v1/start").status_code == 401  # the job's token is needed
        asyncio.run(_start_learner(base))
        assert wait_exit(learner, timeout=240) == 0, learner.log_tail(60)
    finally:
        learner.kill()
        producer.stop()
    final = FinalRecord.read(run_dir)
    # v0 at the start, then one version per step; the last step's is not published a second time.
    assert final.step == 4 and final.version == 4
    if zero_stage == 2:  # every rank holds the whole model: they must agree
        print(f"\nrank weight digests after {final.step} steps: {final.rank_digests}")
        assert len(final.rank_digests) == 2 and final.rank_digests[0] == final.rank_digests[1]
    # What the workers load: every tensor whole (under ZeRO-3 gathered from both ranks' partitions),
    # and trained away from the initial weights.
    published = load_file(run_dir / "weights" / f"v{final.version}" / "model.safetensors")
    initial = load_file(default_init_dir / "model.safetensors")
    assert {k: v.shape for k, v in published.items()} == {k: v.shape for k, v in initial.items()}
    assert not torch.equal(published["model.embed_tokens.weight"], initial["model.embed_tokens.weight"])
    ledger = ledger_file(run_dir).read()
    assert sum(len(e.ids) for e in ledger if e.event == "trained") == 8  # the two RFT steps
    assert [m.sft for m in metrics_file(run_dir).read()] == [True, True, False, False]
