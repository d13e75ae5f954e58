"""The hooks of the learner loop, one class per kind of rank, with the same methods.

Every rank executes the same sequence of :class:`Plan` objects, which rank 0 makes and broadcasts,
and takes part in the same collectives (gathering the weights, checkpoints, digests). Only rank 0
(:class:`Rank0`) talks to Redis, to the workers and to HTTP clients: it runs the staleness window,
publishes weights and keeps the books. The others (:class:`Follower`) only follow.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import torch.distributed as dist

from services.learner.batching import TrainBatch, collate, sft_batch
from services.learner.bookkeeping import Bookkeeping, StepTimes
from services.learner.checkpoint import Checkpointer, LearnerState
from services.learner.consumed import ConsumedIds
from services.learner.engine import DistInfo
from services.learner.feeder import DataOrder, Feeder, FeederState, TaskFactory
from services.learner.intake import GroupIntake
from services.learner.metrics import StepMetrics
from services.learner.plan import Plan, broadcast
from services.learner.settings import LearnerSettings
from services.learner.weights import Publisher, Release, WeightStore, digest, full_state_dict
from services.learner.window import StalenessWindow
from shared.bus import Keys, Redis, TaskStream, TrajectoryStream, WeightsRecordStore, WorkerRegistry, connect
from shared.messages import TrajectoryGroup
from shared.modeling import prompt_token_ids
from shared.problems import Problem
from shared.records import LearnerStatus, QueueDepths, StalenessStatus
from shared.weights.transports import open_origin

log = logging.getLogger(__name__)

# While rank 0 waits for trajectory groups it sends the other ranks a no-op this often, so their
# collective calls never reach the process group's timeout.
IDLE_HEARTBEAT_S = 10.0


def load_problems_for(settings: LearnerSettings) -> list[Problem]:
    """The problems to train on: never the rows held out for evaluation (``learner.data.holdout``)."""
    from shared.data import training_problems, with_system_prompt

    if settings.data.path is None:
        return with_system_prompt(settings.dataset.problems("train"), settings.prompt)
    return training_problems(settings.data, settings.prompt)


# ---------------------------------------------------------------------- rank 0's connections


@dataclass
class Streams:
    client: Redis
    keys: Keys
    tasks: TaskStream
    trajectories: TrajectoryStream


def _open_streams(settings: LearnerSettings) -> Streams:
    keys = Keys(settings.redis.namespace)
    client = connect(settings.redis.url)
    tasks = TaskStream(client, keys)
    tasks.ensure_group()
    trajectories = TrajectoryStream(client, keys)
    trajectories.ensure_group()
    return Streams(client, keys, tasks, trajectories)


def _open_window(settings: LearnerSettings, tokenizer, state: LearnerState, streams: Streams) -> StalenessWindow:
    feeder = Feeder(
        streams.tasks,
        state.run_id,
        DataOrder(load_problems_for(settings), settings.seed),
        TaskFactory(tokenizer, settings.algorithm, settings.sampling, settings.seed),
        window=settings.window,
        batch_prompts=settings.batch_prompts,
        state=FeederState(position=state.position, issued=state.issued),
    )
    intake = GroupIntake(
        streams.trajectories,
        settings.consumer,
        settings.max_staleness,
        owns=feeder.owns,
        consumed_ids=_restore_consumed(state),
    )
    intake.counts.update({k: int(v) for k, v in state.totals.items()})
    return StalenessWindow(feeder, intake, settings.window)


def _restore_consumed(state: LearnerState) -> ConsumedIds:
    consumed = ConsumedIds(state.consumed)
    for group_id in state.consumed_ids:  # a checkpoint written before the watermark
        consumed.add(group_id)
    return consumed


def _open_publisher(settings: LearnerSettings, streams: Streams) -> Publisher:
    return Publisher(
        WeightsRecordStore(streams.client, streams.keys),
        WorkerRegistry(streams.client, streams.keys),
        settings.auth.token.get_secret_value(),
        settings.worker_ttl_s,
        settings.push_retries,
        settings.push_timeout_s,
    )


# ---------------------------------------------------------------------- the hooks


class Follower:
    """A rank other than 0: receives the plans and takes part in every collective, keeps no books.

    :class:`Rank0` extends it: the same hooks, the same collectives, and everything only rank 0 does.
    """

    def __init__(self, settings: LearnerSettings, info: DistInfo, engine, checkpointer: Checkpointer):
        self.settings = settings
        self.info = info
        self.engine = engine
        self.checkpointer = checkpointer

    def hold(self, gate: threading.Event) -> None:
        """Until rank 0 is let go: it sends idle plans while it holds, then None."""
        while broadcast(None, self.info.world_size) is not None:
            pass

    def first_plan(self) -> Plan | None:
        return broadcast(None, self.info.world_size)

    def next_plan(self) -> Plan:
        return broadcast(None, self.info.world_size)

    def publish(self, plan: Plan) -> float | None:
        self._gather_weights()
        return None

    def record(self, plan: Plan, trainer_metrics: dict[str, float], train_s: float, publish_s: float | None) -> None:
        pass

    def checkpoint(self, step: int, save_engine: bool) -> None:
        self.checkpointer.save(self.engine, step, None, save_engine=save_engine)

    def finish(self, plan: Plan) -> None:
        self._rank_digests()

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ collectives of every rank

    def _gather_weights(self):
        """The full weights on rank 0 (None elsewhere); collective under ZeRO-3."""
        return full_state_dict(self.engine, self.settings.deepspeed.zero_stage, self.info.is_main)

    def _rank_digests(self) -> list[str] | None:
        """Every rank's weight checksum (they must agree); None under ZeRO-3, where no rank holds them all."""
        if self.settings.deepspeed.zero_stage == 3:
            return None
        mine = digest(self.engine.module.state_dict())
        # In every rank's log too, so a user can compare them without the final record.
        log.info("rank %d ends with weights digest %s", self.info.rank, mine)
        if self.info.world_size == 1:
            return [mine]
        gathered: list = [None] * self.info.world_size
        dist.all_gather_object(gathered, mine)
        return gathered


@dataclass
class Timings:
    started: float = field(default_factory=time.monotonic)
    wait_s: float = 0.0


class Rank0(Follower):
    """Rank 0: plans each step from the staleness window, publishes weights, keeps the books, serves status."""

    def __init__(
        self,
        settings: LearnerSettings,
        info: DistInfo,
        engine,
        checkpointer: Checkpointer,
        tokenizer,
        state: LearnerState,
        metrics: StepMetrics,
        store: WeightStore,
        stop_event: threading.Event,
        max_len: int | None = None,
    ):
        super().__init__(settings, info, engine, checkpointer)
        self.tokenizer = tokenizer
        self.state = state
        self.metrics = metrics
        self.store = store
        self.stop_event = stop_event
        self.max_len = max_len
        self.phase = "starting"
        self.streams = _open_streams(settings)
        self.window = _open_window(settings, tokenizer, state, self.streams)
        self.publisher = _open_publisher(settings, self.streams)
        self.origin = open_origin(
            settings.weights, settings.public_base_url(), settings.auth.token.get_secret_value(), settings.host
        )
        self.release = Release(store, self.origin, self.publisher, settings.weights)
        self.books = Bookkeeping(settings, state, metrics, self.window, self.streams.trajectories, self.streams.tasks)
        self.published_step: int | None = None
        self._held_weights_published = False
        self.timings = Timings()
        self._from_checkpoint = False
        self._idle = False
        self._groups: list[TrajectoryGroup] = []
        self._batch_version = state.version

    # ------------------------------------------------------------------ start-up

    def resumed(self, from_checkpoint: bool) -> None:
        """After restoring a checkpoint (or none, when the run died before its first): drop the lost
        steps' log lines, continue after the tasks already issued, take back pending groups."""
        self.books.truncate()
        self.window.recover()
        # Versions published after the checkpoint are gone with the crash; never reuse their numbers.
        self.state.version = max(self.state.version, self.publisher.published_version() or 0) + 1
        self._from_checkpoint = from_checkpoint
        if from_checkpoint:
            self.books.checkpoint_step = self.state.step

    def fresh_start(self) -> None:
        self.books.truncate()  # lines of an earlier run in this directory
        published = self.publisher.published_version()
        if published is not None:
            log.warning("namespace %s already holds weights v%d: numbering continues after it",
                        self.streams.keys.namespace, published)
            self.state.version = published + 1

    # ------------------------------------------------------------------ plans

    def hold(self, gate: threading.Event) -> None:
        """Issue no task and publish nothing until ``gate`` is set (POST /v1/start) or a stop is asked
        for; an idle plan each second keeps the other ranks in step."""
        self.phase = "held"
        while not gate.wait(1.0) and not self.stop_event.is_set():
            broadcast(Plan("idle", step=self.state.step), self.info.world_size)
        broadcast(None, self.info.world_size)

    def first_plan(self) -> Plan | None:
        """Publish the starting weights: version 0 on a fresh start, a new number after a resume."""
        plan = None
        if self._from_checkpoint or self.settings.publish_initial:
            plan = Plan("publish", step=self.state.step, publish=True, new_version=self._from_checkpoint)
        return broadcast(plan, self.info.world_size)

    def next_plan(self) -> Plan:
        return broadcast(self._make_plan(), self.info.world_size)

    def _make_plan(self) -> Plan:
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
            groups = self.window.take(self.settings.batch_prompts, state.step, state.version)
            if groups is not None:
                break
            if self.stop_event.is_set():
                return self._stop_plan(final=False)
            if self.info.world_size > 1 and time.monotonic() > deadline:
                self._idle = True
                return Plan("idle", step=state.step)
            self.window.wait(self.settings.read_block_ms, count=self.settings.batch_prompts)
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
        held_version = self.state.version if self._held_weights_published else None
        self._held_weights_published = False  # this step changes them; publish() says when they are again
        return Plan(
            "train",
            step=self.state.step,
            batch=batch,
            sft=sft,
            held_version=held_version,
            publish=done % self.settings.publish_every == 0 or done == self.settings.total_steps,
            checkpoint=done % self.settings.checkpoint_every == 0 or done == self.settings.total_steps,
        )

    def _stop_plan(self, final: bool) -> Plan:
        return Plan(
            "stop",
            step=self.state.step,
            publish=final and self.published_step != self.state.step,
            checkpoint=True,
            save_engine=self.books.checkpoint_step != self.state.step,
            final=final,
        )

    def _sft_batch(self) -> TrainBatch:
        examples = self.window.draw_demonstrations(self.settings.batch_prompts)
        pairs = [(prompt_token_ids(self.tokenizer, problem.messages()), demo_ids) for problem, demo_ids in examples]
        return sft_batch(pairs, self.settings.algorithm, self.tokenizer.pad_token_id, self.max_len)

    # ------------------------------------------------------------------ the hooks after training

    def publish(self, plan: Plan) -> float:
        started = time.monotonic()
        state_dict = self._gather_weights()
        if plan.new_version:
            self.state.version += 1
        version = self.state.version
        self.store.save(self.engine.module, state_dict, version, self.tokenizer)
        self.release.submit(version)  # the delta, the record and the push, off the training loop
        # A train plan publishes the weights after its step (state.step counts it only in record()).
        self.published_step = plan.step + 1 if plan.kind == "train" else plan.step
        self._held_weights_published = True
        return time.monotonic() - started

    def record(self, plan: Plan, trainer_metrics: dict[str, float], train_s: float, publish_s: float | None) -> None:
        self.state.step = plan.step + 1
        push = self.publisher.last_report
        times = StepTimes(
            train_s=train_s,
            publish_s=publish_s,
            wait_s=self.timings.wait_s,
            step_s=time.monotonic() - self.timings.started,
            push_s=push.seconds if push else None,
        )
        record = self.books.record(plan, self._groups, self._batch_version, trainer_metrics, times)
        log.info(
            "step %d v%d loss %s reward %s stale-dropped %d (%.2f s, waited %.2f s)",
            record.step, record.version, _fmt(record.loss, "{:.4f}"), _fmt(record.reward_mean),
            record.dropped_stale_total, times.step_s, times.wait_s,
        )

    def checkpoint(self, step: int, save_engine: bool) -> None:
        self.checkpointer.save(self.engine, step, self.books.checkpoint_state(), save_engine=save_engine)
        self.books.committed()

    def finish(self, plan: Plan) -> None:
        rank_digests = self._rank_digests()
        self.phase = "done" if plan.final else "stopped"
        if rank_digests is not None and len(set(rank_digests)) > 1:
            log.error("data-parallel ranks ended with different weights: %s", rank_digests)
        if plan.final:
            self.books.write_final(rank_digests)
        # Let the last push reach the workers before the process exits (they could also pull it), and
        # when this process serves the bytes, let them fetch it too.
        self.release.drain()
        self.publisher.close(timeout=self.settings.push_timeout_s + 5)
        if self.origin.served_by_learner:
            self.publisher.wait_taken(timeout_s=self.settings.push_timeout_s)
        self.origin.close()

    def close(self) -> None:
        """On the way out after an error: stop the pusher without waiting for it."""
        if self.phase not in ("done", "stopped"):
            self.release.close()
            self.publisher.close(timeout=1.0)
            self.origin.close()

    # ------------------------------------------------------------------ status

    def status(self) -> LearnerStatus:
        state = self.state
        window = self.window
        counts = window.counts
        latest = self.metrics.latest
        return LearnerStatus(
            phase=self.phase,
            run_id=state.run_id,
            algorithm=self.settings.algorithm.name.value,
            step=state.step,
            total_steps=self.settings.total_steps,
            version=state.version,
            queues=QueueDepths(
                tasks_backlog=self.streams.tasks.backlog(),
                trajectories_backlog=self.streams.trajectories.backlog(),
                trajectories_pending=self.streams.trajectories.pending(),
                ready_groups=window.ready,
            ),
            issued=window.issued,
            outstanding=window.outstanding(),
            window=window.window,
            staleness=StalenessStatus(
                max_staleness=self.settings.max_staleness,
                last_mean=latest.staleness_mean if latest else None,
                last_hist=latest.staleness_hist if latest else None,
                dropped_stale_total=counts["stale"],
                dropped_duplicate_total=counts["duplicate"],
            ),
            dead_lettered_tasks=len(window.dead_ids),
            trained_groups_total=counts["trained"],
            last_push=self.publisher.last_report,
        )


def _fmt(value: float | None, form: str = "{:.3f}") -> str:
    return "-" if value is None else form.format(value)
