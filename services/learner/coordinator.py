"""Rank 0's side of the learner: feeding, intake, the plan of each step, publishing, bookkeeping.

Every rank executes the same sequence of :class:`Plan` objects, which rank 0 makes and broadcasts;
only rank 0 talks to Redis, to the workers and to HTTP clients.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

from services.learner.batching import TrainBatch, collate, sft_batch
from services.learner.checkpoint import LearnerState, write_atomic
from services.learner.feeder import DataOrder, Feeder, FeederState, TaskFactory
from services.learner.intake import GroupIntake
from services.learner.metrics import JsonlLog, StepMetrics, batch_stats
from services.learner.settings import LearnerSettings
from services.learner.weights import Publisher, WeightStore
from shared.api.weights import weights_url
from shared.messages import RolloutTask, TrajectoryGroup
from shared.modeling import prompt_token_ids
from shared.problems import Problem
from shared.streams import TASKS_GROUP, TRAJECTORIES_GROUP, Keys, StreamQueue, connect

log = logging.getLogger(__name__)

# While rank 0 waits for trajectory groups it sends the other ranks a no-op this often, so their
# collective calls never reach the process group's timeout.
IDLE_HEARTBEAT_S = 10.0


@dataclass
class Plan:
    kind: Literal["train", "idle", "publish", "stop"]
    step: int  # optimizer steps completed before this plan
    batch: TrainBatch | None = None
    sft: bool = False
    publish: bool = False  # publish a new weight version after the step
    checkpoint: bool = False
    save_engine: bool = True  # False: the last checkpoint is at this step already
    final: bool = False


@dataclass
class Timings:
    started: float = field(default_factory=time.monotonic)
    wait_s: float = 0.0


def load_problems_for(settings: LearnerSettings) -> list[Problem]:
    if settings.data is None:
        return settings.dataset.problems("train")
    from shared.data import load_problems

    return load_problems(settings.data)


class Coordinator:
    def __init__(
        self,
        settings: LearnerSettings,
        tokenizer,
        state: LearnerState,
        metrics: StepMetrics,
        store: WeightStore,
        world_size: int,
        stop_event: threading.Event,
        max_len: int | None = None,
    ):
        self.settings = settings
        self.max_len = max_len
        self.tokenizer = tokenizer
        self.state = state
        self.metrics = metrics
        self.store = store
        self.world_size = world_size
        self.stop_event = stop_event
        self.phase = "starting"
        self.keys = Keys(settings.redis.namespace)
        self.client = connect(settings.redis.url)
        self.tasks = StreamQueue(self.client, self.keys.tasks, TASKS_GROUP, RolloutTask)
        self.tasks.ensure_group()
        self.trajectories = StreamQueue(self.client, self.keys.trajectories, TRAJECTORIES_GROUP, TrajectoryGroup)
        self.trajectories.ensure_group()
        self.feeder = Feeder(
            self.client,
            self.keys,
            state.run_id,
            DataOrder(load_problems_for(settings), settings.seed),
            TaskFactory(tokenizer, settings.algorithm, settings.sampling, settings.seed),
            window=settings.window,
            batch_prompts=settings.batch_prompts,
            state=FeederState(position=state.position, issued=state.issued),
        )
        self.intake = GroupIntake(
            self.trajectories,
            settings.consumer,
            settings.max_staleness,
            owns=self.feeder.owns,
            consumed_ids=set(state.consumed_ids),
        )
        self.intake.counts.update({k: int(v) for k, v in state.totals.items()})
        self.publisher = Publisher(
            self.client,
            self.keys,
            settings.auth.token.get_secret_value(),
            settings.worker_ttl_s,
            settings.push_retries,
            settings.push_timeout_s,
        )
        self.ledger = JsonlLog(settings.run_dir / "ledger.jsonl")
        self.published_step: int | None = None
        self.checkpoint_step: int | None = None
        self.timings = Timings()
        self._idle = False
        self._groups: list[TrajectoryGroup] = []
        self._batch_version = state.version
        self._stale_before = self.intake.counts["stale"]

    # ------------------------------------------------------------------ start-up

    def resumed(self, from_checkpoint: bool) -> None:
        """After restoring a checkpoint (or none, when the run died before its first): drop the lost
        steps' log lines, continue after the tasks already issued, take back pending groups."""
        cut = self.ledger.truncate_after(self.state.commit, key="commit")
        cut_metrics = self.metrics.log.truncate_after(self.state.step)
        if cut or cut_metrics:
            log.info("cut %d ledger and %d metrics lines written after the checkpoint", cut, cut_metrics)
        self.feeder.catch_up()
        self.intake.recover()
        # Versions published after the checkpoint are gone with the crash; never reuse their numbers.
        self.state.version = max(self.state.version, self.publisher.published_version() or 0) + 1
        if from_checkpoint:
            self.checkpoint_step = self.state.step

    def fresh_start(self) -> None:
        self.ledger.truncate_after(0, key="commit")  # lines of an earlier run in this directory
        self.metrics.log.truncate_after(0)
        published = self.publisher.published_version()
        if published is not None:
            log.warning("namespace %s already holds weights v%d: numbering continues after it",
                        self.keys.namespace, published)
            self.state.version = published + 1

    def first_plan(self, resumed: bool) -> Plan | None:
        """Publish the starting weights: version 0 on a fresh start, a new number after a resume."""
        if resumed or self.settings.publish_initial:
            return Plan("publish", step=self.state.step, publish=True)
        return None

    # ------------------------------------------------------------------ plans

    def next_plan(self) -> Plan:
        state = self.state
        if self.stop_event.is_set():
            return self._stop_plan(final=False)
        if state.step >= self.settings.total_steps:
            return self._stop_plan(final=True)
        if not self._idle:  # the wait for this step's groups may span several idle plans
            self.timings = Timings()
        self._idle = False
        if self.settings.algorithm.is_sft_step(state.step):
            return self._plan_for(self._sft_batch(), sft=True)
        self.phase = "waiting"
        deadline = time.monotonic() + IDLE_HEARTBEAT_S
        while True:
            self.feeder.fill(state.step, state.version, self.intake.consumed_ids)
            groups = self.intake.take(self.settings.batch_prompts, state.version, state.step)
            if groups is not None:
                break
            if self.stop_event.is_set():
                return self._stop_plan(final=False)
            if self.world_size > 1 and time.monotonic() > deadline:
                self._idle = True
                return Plan("idle", step=state.step)
            self.intake.poll(self.settings.read_block_ms, count=self.settings.batch_prompts)
        self.timings.wait_s = time.monotonic() - self.timings.started
        self._groups = groups
        self._batch_version = state.version
        batch = collate(groups, self.settings.algorithm, self.tokenizer.pad_token_id, self.max_len)
        return self._plan_for(batch, sft=False)

    def _plan_for(self, batch: TrainBatch, sft: bool) -> Plan:
        if sft:
            self._groups = []
            self.timings.wait_s = 0.0
        self.phase = "training"
        done = self.state.step + 1
        return Plan(
            "train",
            step=self.state.step,
            batch=batch,
            sft=sft,
            publish=done % self.settings.publish_every == 0 or done == self.settings.total_steps,
            checkpoint=done % self.settings.checkpoint_every == 0 or done == self.settings.total_steps,
        )

    def _stop_plan(self, final: bool) -> Plan:
        return Plan(
            "stop",
            step=self.state.step,
            publish=final and self.published_step != self.state.step,
            checkpoint=True,
            save_engine=self.checkpoint_step != self.state.step,
            final=final,
        )

    def _sft_batch(self) -> TrainBatch:
        examples = self.feeder.draw_demonstrations(self.settings.batch_prompts)
        pairs = [(prompt_token_ids(self.tokenizer, problem.prompt), demo_ids) for problem, demo_ids in examples]
        return sft_batch(pairs, self.settings.algorithm, self.tokenizer.pad_token_id, self.max_len)

    # ------------------------------------------------------------------ after each step

    def step_done(self, plan: Plan, train_metrics: dict, train_s: float, publish_s: float | None) -> None:
        state = self.state
        state.step = plan.step + 1
        step_s = time.monotonic() - self.timings.started
        tokens = int(plan.batch.attention_mask.sum()) if plan.batch is not None else 0
        low, high = self.settings.algorithm.schedule.bounds(plan.step)
        counts = self.intake.counts
        dropped_stale, self._stale_before = counts["stale"] - self._stale_before, counts["stale"]
        record = {
            "step": state.step,
            "version": state.version,
            "sft": plan.sft,
            **train_metrics,
            **(batch_stats(self._groups, self._batch_version) if self._groups else {}),
            "prefix_ratio_low": low,
            "prefix_ratio_high": high,
            "tokens": tokens,
            "tokens_per_s": tokens / train_s if train_s > 0 else 0.0,  # prompt + response, training only
            "step_time_s": step_s,  # wait for groups + training + publishing
            "train_s": train_s,
            "wait_s": self.timings.wait_s,
            "dropped_stale": dropped_stale,
            "publish_s": publish_s,
            "weight_push_s": self.publisher.last_report.seconds if self.publisher.last_report else None,
            "dropped_stale_total": counts["stale"],
            "dropped_duplicate_total": counts["duplicate"],
            "dropped_foreign_total": counts["foreign"],
            "trained_groups_total": counts["trained"],
            "issued_total": self.feeder.state.issued,
            "outstanding": self.feeder.outstanding(self.intake.consumed_ids),
            "time": time.time(),
        }
        self.metrics.record(record)
        log.info(
            "step %d v%d loss %.4f reward %s stale-dropped %d (%.2f s, waited %.2f s)",
            state.step, state.version, record.get("loss", float("nan")), _fmt(record.get("reward_mean")),
            counts["stale"], step_s, self.timings.wait_s,
        )

    def publish_weights(self, module, state_dict, initial: bool) -> float:
        started = time.monotonic()
        if not initial:
            self.state.version += 1
        version = self.state.version
        path = self.store.save(module, state_dict, version)
        if self.settings.weights_uri == "file":
            uri = path.resolve().as_uri()
        else:
            uri = weights_url(self.settings.weights_base_url(), version)
        self.publisher.publish(version, uri)
        self.published_step = self.state.step
        return time.monotonic() - started

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_state(self) -> LearnerState:
        """The state a checkpoint records; the ledger lines it covers are written first."""
        state = self.state
        state.commit += 1
        for event in self.intake.decisions.events:
            self.ledger.append({"commit": state.commit, **event})
        state.position = self.feeder.state.position
        state.issued = self.feeder.state.issued
        state.consumed_ids = sorted(self.intake.consumed_ids)
        state.totals = {k: float(v) for k, v in self.intake.counts.items()}
        return state

    def checkpoint_done(self) -> None:
        """The checkpoint is committed: acknowledge the entries it covers."""
        ids = self.intake.decisions.entry_ids
        for start in range(0, len(ids), 1000):
            self.trajectories.ack(*ids[start : start + 1000])
        self.intake.decisions.clear()
        self.checkpoint_step = self.state.step

    def finish(self, final: bool, rank_digests: list[str] | None) -> None:
        self.phase = "done" if final else "stopped"
        if rank_digests is not None and len(set(rank_digests)) > 1:
            log.error("data-parallel ranks ended with different weights: %s", rank_digests)
        if final:
            summary = {"version": self.state.version, "step": self.state.step, "rank_digests": rank_digests}
            write_atomic(self.settings.run_dir / "final.json", json.dumps(summary))
        # Let the last push reach the workers before the process exits (they could also pull it).
        self.publisher.close(timeout=self.settings.push_timeout_s + 5)

    # ------------------------------------------------------------------ status

    def status(self) -> dict:
        state = self.state
        counts = self.intake.counts
        latest = self.metrics.latest
        return {
            "phase": self.phase,
            "run_id": state.run_id,
            "algorithm": self.settings.algorithm.name.value,
            "step": state.step,
            "total_steps": self.settings.total_steps,
            "version": state.version,
            "queues": {
                "tasks_backlog": self.tasks.backlog(),
                "trajectories_backlog": self.trajectories.backlog(),
                "trajectories_pending": self.trajectories.pending(),
                "ready_groups": len(self.intake.ready),
            },
            "issued": self.feeder.state.issued,
            "outstanding": self.feeder.outstanding(self.intake.consumed_ids),
            "window": self.settings.window,
            "staleness": {
                "max_staleness": self.settings.max_staleness,
                "last_mean": latest.get("staleness_mean"),
                "last_hist": latest.get("staleness_hist"),
                "dropped_stale_total": counts["stale"],
                "dropped_duplicate_total": counts["duplicate"],
            },
            "dead_lettered_tasks": len(self.feeder.dead_ids),
            "trained_groups_total": counts["trained"],
            "last_push": self.publisher.last_report.__dict__ if self.publisher.last_report else None,
        }


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"
