"""The task consumer: tasks stream -> engine -> reward service -> trajectories stream.

One task at a time per slot (``max_inflight_tasks`` slots): skip it if its group was already
produced, generate the group under one weight version, score it, append it once, then acknowledge.
Before it reads new tasks, the consumer takes over idle ones (a dead worker's). A housekeeping loop
refreshes the registry entry and the idle time of the tasks in flight (so only the tasks of a dead
worker go idle), and pulls a newer weights record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from services.rollout.engine import EngineFailed, RequestRejected, RolloutEngine
from services.rollout.group import assemble, drafts, plan_group, score_items
from services.rollout.metrics import RolloutMetrics
from services.rollout.settings import RolloutSettings
from services.rollout.updates import StaleVersion, UpdateFailed, WeightUpdater
from shared.api.http import RetryPolicy, ServiceRefused, ServiceUnavailable
from shared.api.reward import RewardClient
from shared.api.rollout import WeightUpdate
from shared.bus import (
    Entry,
    Keys,
    RedisError,
    TaskStream,
    TrajectoryStream,
    Unreachable,
    WeightsRecordStore,
    WorkerRegistry,
    connect,
)
from shared.messages import RolloutTask, WorkerInfo

log = logging.getLogger(__name__)

READ_BLOCK_MS = 500


@dataclass
class InFlight:
    entry: Entry[RolloutTask]
    runner: asyncio.Task


class TaskWorker:
    def __init__(
        self,
        settings: RolloutSettings,
        engine: RolloutEngine,
        updater: WeightUpdater,
        metrics: RolloutMetrics,
        on_fatal,
    ):
        self.settings = settings
        self.engine = engine
        self.updater = updater
        self.metrics = metrics
        self.on_fatal = on_fatal  # called with a reason when the process must exit (the engine died)
        self.worker_id = settings.resolved_worker_id()
        self.url = settings.public_base_url()
        self.client = connect(settings.redis.url)
        keys = Keys(settings.redis.namespace)
        self.tasks = TaskStream(self.client, keys)
        self.trajectories = TrajectoryStream(self.client, keys)
        self.registry = WorkerRegistry(self.client, keys)
        self.weights = WeightsRecordStore(self.client, keys)
        self.rewards = RewardClient(
            settings.reward_url,
            settings.reward_timeout_s,
            RetryPolicy(retries=settings.reward_retries, backoff_s=settings.reward_backoff_s),
        )
        self.inflight: dict[str, InFlight] = {}
        self._busy_since: float | None = None  # monotonic time the in-flight set became non-empty
        # A worker that is never idle (max_staleness 2 keeps it fed) would otherwise never count its time.
        metrics.before_render.append(self._count_busy)
        self.registered = False
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._drained = asyncio.Event()
        self._pull: asyncio.Task | None = None
        self._starting: asyncio.Task | None = None
        self._consuming: asyncio.Task | None = None
        self._housekeeping_task: asyncio.Task | None = None

    # ------------------------------------------------------------------ life cycle

    def launch(self) -> None:
        self._starting = self._spawn(self._start(), "worker-start")

    def _spawn(self, coroutine, name: str) -> asyncio.Task:
        """A background task whose unexpected failure stops the process instead of vanishing."""
        task = asyncio.create_task(coroutine, name=name)

        def done(t: asyncio.Task) -> None:
            if not t.cancelled() and t.exception() is not None:
                log.error("%s failed", name, exc_info=t.exception())
                self.on_fatal(f"{name} failed: {t.exception()!r}")

        task.add_done_callback(done)
        return task

    async def _start(self) -> None:
        """Join the group, load the recorded weights, register, then consume. Retries until Redis answers
        and the recorded weights load: a worker serving older weights than the job's would only
        produce groups the learner drops as stale."""
        delay = 0.5
        while not self._stopping.is_set():
            try:
                await asyncio.to_thread(self.tasks.ensure_group)
                if await self._load_recorded_weights(force=True):
                    await asyncio.to_thread(self.registry.register, self._registry_entry())
                    self.registered = True
                    own = await asyncio.to_thread(
                        self.tasks.read_own_pending, self.worker_id, self.settings.max_inflight_tasks * 4
                    )
                    break
            except Unreachable as exc:
                log.warning("redis at %s not reachable (%s); retrying in %.1f s", self.settings.redis.url, exc, delay)
            await self._sleep(delay)
            delay = min(delay * 2, 10.0)
        else:
            return
        log.info("worker %s joined %s (url %s, weights v%d)", self.worker_id, self.tasks.stream, self.url,
                 self.engine.version)
        for entry in own:
            await self._admit(entry, check_deliveries=True)
        self._consuming = self._spawn(self._consume(), "consume")
        self._housekeeping_task = self._spawn(self._housekeeping(), "housekeeping")

    async def stop(self) -> None:
        """Stop taking tasks; finish those in flight within the drain timeout (still kept alive and
        registered meanwhile), hand back the rest, deregister."""
        self._stopping.set()
        self._slot_freed.set()
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
        if self._consuming is not None:
            # Not cancelled: a read running on a thread would still take entries nobody then tracks.
            await asyncio.gather(self._consuming, return_exceptions=True)
        pending = [f.runner for f in self.inflight.values()]
        if pending:
            log.info("finishing %d tasks in flight (up to %.0f s)", len(pending), self.settings.drain_timeout_s)
            await asyncio.wait(pending, timeout=self.settings.drain_timeout_s)
        left = list(self.inflight.values())
        for flight in left:
            flight.runner.cancel()
        await asyncio.gather(*(f.runner for f in left), return_exceptions=True)
        self._drained.set()
        for task in (self._housekeeping_task, self._pull):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        try:
            if left:
                await asyncio.to_thread(self.tasks.release, self.worker_id, [f.entry.entry_id for f in left])
                log.info("handed back %d unfinished tasks", len(left))
                self.metrics.tasks.labels("released").inc(len(left))
            if self.registered:
                await asyncio.to_thread(self.registry.deregister, self.worker_id)
                await asyncio.to_thread(self.tasks.leave_group, self.worker_id)
        except RedisError as exc:
            log.warning("could not hand back tasks or deregister (%s); they will be reclaimed after %d ms",
                        exc, self.settings.reclaim_idle_ms)
        await self.rewards.close()
        self.client.close()

    def _registry_entry(self) -> WorkerInfo:
        swarm = self.updater.swarm.address if self.updater.swarm is not None else None
        return WorkerInfo(worker_id=self.worker_id, url=self.url, version=self.engine.version, heartbeat_at=time.time(),
                          swarm=swarm)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once when the worker stops."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    # ------------------------------------------------------------------ loops

    async def _consume(self) -> None:
        while not self._stopping.is_set():
            free = self.settings.max_inflight_tasks - len(self.inflight)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                # A dead worker's tasks first: they are older, so closer to going stale, and a
                # worker that keeps taking new tasks would otherwise never get to them.
                if await self._reclaim(free):
                    continue
                entries = await asyncio.to_thread(self.tasks.read, self.worker_id, free, READ_BLOCK_MS)
            except Unreachable as exc:
                log.warning("reading tasks failed (%s); retrying", exc)
                await self._sleep(1.0)
                continue
            for entry in entries:
                await self._admit(entry, check_deliveries=False)

    async def _reclaim(self, free: int) -> int:
        """Take over up to ``free`` tasks idle past ``reclaim_idle_ms``; how many were taken."""
        entries = await asyncio.to_thread(self.tasks.reclaim, self.worker_id, self.settings.reclaim_idle_ms, free)
        for entry in entries:
            log.info("reclaimed task %s (entry %s)", entry.message.id, entry.entry_id)
            self.metrics.tasks.labels("reclaimed").inc()
            await self._admit(entry, check_deliveries=True)
        return len(entries)

    async def _housekeeping(self) -> None:
        """Runs until the drain is over: tasks being finished after SIGTERM stay kept alive."""
        period = min(self.settings.heartbeat_s, self.settings.reclaim_idle_ms / 3000)
        while not self._drained.is_set():
            try:
                await self._tick()
            except Unreachable as exc:
                log.warning("housekeeping: redis unreachable (%s)", exc)
            try:
                await asyncio.wait_for(self._drained.wait(), timeout=period)
            except asyncio.TimeoutError:
                pass

    async def _tick(self) -> None:
        ids = [f.entry.entry_id for f in self.inflight.values()]
        await asyncio.to_thread(self.tasks.keepalive, self.worker_id, ids)
        await asyncio.to_thread(self.registry.register, self._registry_entry())
        self.metrics.inflight_tasks.set(len(self.inflight))
        if (self._pull is None or self._pull.done()) and not self._stopping.is_set():
            self._pull = asyncio.create_task(self._pull_weights())

    async def _pull_weights(self) -> None:
        try:
            await self._load_recorded_weights(force=False)
        except Unreachable as exc:
            log.warning("reading the weights record failed (%s)", exc)

    async def _load_recorded_weights(self, force: bool) -> bool:
        """Load the weights recorded in Redis if newer than those served (or always, when forced), through
        the updater's queue (one update at a time, newest wins, as for a push), and wait for them. True
        when the engine now serves the recorded version or newer (or there is no record)."""
        try:
            record = await asyncio.to_thread(self.weights.get)
            if record is None or (record.version <= self.engine.version and not force):
                return True
            await self.updater.apply(WeightUpdate(
                    version=record.version, uri=record.uri, manifest=record.manifest, transport=record.transport,
                    delta=record.delta,
                ), force=force)
            return True
        except StaleVersion:
            return True
        except Unreachable:
            raise
        except (UpdateFailed, ValueError) as exc:  # a bad record must not stop the worker: the next one can fix it
            log.error("loading the recorded weights failed: %s: %s", type(exc).__name__, exc)
            if not self.engine.ready:
                self.on_fatal(str(exc))
        return False

    # ------------------------------------------------------------------ one task

    async def _admit(self, entry: Entry[RolloutTask], check_deliveries: bool) -> None:
        if self._stopping.is_set():
            await asyncio.to_thread(self.tasks.release, self.worker_id, [entry.entry_id])
            return
        if entry.entry_id in self.inflight:
            return
        if check_deliveries:
            deliveries = await asyncio.to_thread(self.tasks.deliveries, entry.entry_id)
            if deliveries > self.settings.max_deliveries:
                log.error("task %s delivered %d times without a group: dead letter", entry.message.id, deliveries)
                await asyncio.to_thread(self.tasks.dead_letter, entry, f"delivered {deliveries} times")
                self.metrics.tasks.labels("dead_letter").inc()
                return
        runner = asyncio.create_task(self._run(entry), name=f"rollout-task-{entry.message.id}")
        if not self.inflight:
            self._busy_since = time.monotonic()
        self.inflight[entry.entry_id] = InFlight(entry, runner)
        self.metrics.inflight_tasks.set(len(self.inflight))

    async def _run(self, entry: Entry[RolloutTask]) -> None:
        task = entry.message
        started = time.monotonic()
        try:
            outcome = await self._produce(entry)
            self.metrics.tasks.labels(outcome).inc()
            log.info("task %s: %s in %.1f s", task.id, outcome, time.monotonic() - started)
        except asyncio.CancelledError:
            raise
        except EngineFailed as exc:
            log.error("task %s: %s", task.id, exc)
            self.metrics.tasks.labels("engine_failed").inc()
            await self._release_quietly(entry)
            if not self.engine.ready:
                self.on_fatal(str(exc))
        except Unreachable as exc:
            # Not acknowledged: it stays pending and is reclaimed once it goes idle.
            log.error("task %s: redis failed (%s); left pending", task.id, exc)
            self.metrics.tasks.labels("redis_failed").inc()
        except Exception:
            # One bad task must not stop the worker; it is redelivered, then dead-lettered.
            log.exception("task %s failed; left pending", task.id)
            self.metrics.tasks.labels("failed").inc()
        finally:
            self.inflight.pop(entry.entry_id, None)
            self._count_busy()
            if not self.inflight:
                self._busy_since = None
            self.metrics.inflight_tasks.set(len(self.inflight))
            self._slot_freed.set()

    def _count_busy(self) -> None:
        """Add the busy time since the last count to the counter (the in-flight set is not empty)."""
        if self._busy_since is not None:
            now = time.monotonic()
            self.metrics.busy_seconds.inc(now - self._busy_since)
            self._busy_since = now

    async def _produce(self, entry: Entry[RolloutTask]) -> str:
        task = entry.message
        if await asyncio.to_thread(self.trajectories.already_produced, task.id, entry.entry_id):
            await asyncio.to_thread(self.tasks.ack, entry.entry_id)
            return "duplicate"
        if task.issued_at_version > self.engine.version:
            # The learner issued this task after publishing newer weights than the engine serves (its
            # push may still be on the way): load them first, or every sample is stale on arrival and,
            # at max_staleness 0, dropped.
            await self._load_recorded_weights(force=False)
        plan = plan_group(task)
        results: list = []
        version = self.engine.version
        if plan.requests:
            try:
                version, results = await self.engine.generate(plan.requests, source="worker")
            except RequestRejected as exc:
                log.error("task %s cannot be generated: %s; dead letter", task.id, exc)
                await asyncio.to_thread(self.tasks.dead_letter, entry, str(exc))
                return "dead_letter"
        group_drafts = drafts(task, plan, version, results, self.engine.decode)
        if not group_drafts:
            await asyncio.to_thread(self.tasks.dead_letter, entry, "the task asks for no trajectory")
            return "dead_letter"
        items = score_items(task, group_drafts)
        try:
            scores = await self._score(task, items, self.rewards.score)
        except ServiceRefused as exc:
            # The group is still worth training: score the items one by one instead of losing it.
            log.warning("task %s: %s; scoring its items one by one", task.id, exc)
            self.metrics.tasks.labels("reward_refused").inc()
            scores = await self._score(task, items, self.rewards.score_alone)
        group = assemble(task, self.worker_id, group_drafts, scores)
        appended = await asyncio.to_thread(self.trajectories.append_once, group, entry.entry_id)
        await asyncio.to_thread(self.tasks.ack, entry.entry_id)
        return "produced" if appended else "duplicate"

    async def _score(self, task: RolloutTask, items: list, score) -> list:
        """Score until the reward service answers: while it is down the task stays in flight (kept alive,
        so not redelivered and not counted against max_deliveries) and the worker takes no more work
        than its free slots; on SIGTERM the drain hands it back."""
        while True:
            try:
                return await score(items)
            except ServiceUnavailable as exc:
                self.metrics.tasks.labels("reward_unavailable").inc()
                log.error("task %s: %s; still trying", task.id, exc)

    async def _release_quietly(self, entry: Entry[RolloutTask]) -> None:
        try:
            await asyncio.to_thread(self.tasks.release, self.worker_id, [entry.entry_id])
        except RedisError as exc:
            log.warning("could not hand back %s (%s); it is reclaimed when idle", entry.entry_id, exc)
