"""What the fault-injection suite uses: waiting on a live deployment, reading its metrics and ledger."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from launcher.deployment import LocalDeployment
from launcher.ledger import Ledger, reconcile_run
from shared.api.http import RetryPolicy
from shared.api.rollout import RolloutClient
from shared.bus import Keys, MessageStream, RedisError, connect
from shared.messages import RolloutTask, TrajectoryGroup
from shared.records import metrics_file

AUDIT_GROUP = "audit"


class Auditor(threading.Thread):
    """A second reader of both streams, in its own consumer group: keeps a copy of every task and group
    as they are appended and acknowledges them, so the learner still trims what is consumed while a test
    can look at the whole history afterwards. Rides over a redis-server restart."""

    def __init__(self, redis_url: str, namespace: str, poll_s: float = 0.5):
        super().__init__(daemon=True)
        self.client = connect(redis_url)
        keys = Keys(namespace)
        self.streams = (
            MessageStream(self.client, keys.tasks, AUDIT_GROUP, RolloutTask),
            MessageStream(self.client, keys.trajectories, AUDIT_GROUP, TrajectoryGroup),
        )
        for stream in self.streams:
            stream.ensure_group()  # before anything is appended: the audit sees every entry
        self.tasks: dict[str, RolloutTask] = {}
        self.groups: list[TrajectoryGroup] = []
        self.poll_s = poll_s
        self.stopping = threading.Event()
        self._lock = threading.Lock()  # a test may catch up while the thread polls

    def run(self) -> None:
        while not self.stopping.wait(self.poll_s):
            try:
                self.catch_up()
            except RedisError:
                continue  # redis-server restarting: read on at the next poll

    def catch_up(self) -> None:
        tasks, groups = self.streams
        with self._lock:
            while entries := tasks.read("auditor", count=1000):
                self.tasks.update((e.message.id, e.message) for e in entries)
                tasks.ack(*[e.entry_id for e in entries])
            while entries := groups.read("auditor", count=1000):
                self.groups.extend(e.message for e in entries)
                groups.ack(*[e.entry_id for e in entries])

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)
        self.client.close()


def learner_step(deployment: LocalDeployment) -> int:
    last = metrics_file(deployment.run_dir / "learner").last()
    return last.step if last is not None else 0


def wait_for(predicate, timeout: float, deployment: LocalDeployment, what: str, allow_exited=()) -> None:
    """Poll ``predicate``; fail at once, naming it, if a process of the deployment died."""
    deadline = time.monotonic() + timeout
    while not predicate():
        deployment.check(allow_exited=allow_exited)
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.3)


def wait_for_step(deployment: LocalDeployment, step: int, timeout: float = 240.0) -> None:
    wait_for(lambda: learner_step(deployment) >= step, timeout, deployment, f"learner step {step}")


def metric(url: str, name: str, **labels: str) -> float:
    """A rollout worker's samples of ``name`` with these labels, summed (0 when absent)."""

    async def read() -> float:
        async with RolloutClient(url, timeout_s=10, retry=RetryPolicy(retries=0)) as worker:
            return await worker.metric(name, **labels) or 0.0

    return asyncio.run(read())


def reconciled(run_dir: Path, redis_url: str, label: str, attempts: int = 10) -> Ledger:
    """The run's ledger, printed. While the run goes on the snapshot of Redis and of ledger.jsonl may be
    taken either side of a checkpoint; a real loss persists over every attempt, such a race does not."""
    for _ in range(attempts):
        ledger = reconcile_run(run_dir, redis_url)
        if ledger.ok:
            break
        time.sleep(1.0)
    print(f"\n--- ledger after {label} ---\n{ledger.render()}")
    return ledger
