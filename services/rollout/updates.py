"""Versioned weight updates, from an HTTP push or from the record in Redis, applied in the background:
fetch, check, swap.

``submit`` validates an update and queues it, and returns at once. One update runs at a time and the
newest wins: a newer update arriving while one runs replaces any queued behind it; an update to the
version served, under way or queued is a no-op, as is one older than a version under way or queued; one
older than the served version is refused. ``status`` says what runs, how far it got, what is queued and
the last failure; ``apply`` submits and waits for the outcome (the worker's Redis path).

A manifest update (``update.manifest`` + ``update.transport``) is assembled, bucket by verified bucket,
in shared memory and loaded by the engine from there: no file on disk. A user's ``uri`` (a ``file://``
checkpoint, an ``http(s)://`` URL) is loaded from its files as before. Either way the header is checked
against the served model before anything is loaded, and the swap starts only once the whole version is
there.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from services.rollout.engine import RolloutEngine
from services.rollout.metrics import RolloutMetrics
from services.rollout.shared_weights import SharedWeights
from services.rollout.weights import fetch, fetch_version
from shared.api.rollout import WeightsAccepted, WeightsFailure, WeightsProgress, WeightsStatus, WeightUpdate
from shared.weights.manifest import Manifest
from shared.weights.receiver import Held

if TYPE_CHECKING:  # libtorrent only where the swarm is used
    from services.rollout.swarm import WorkerSwarm

log = logging.getLogger(__name__)


class StaleVersion(ValueError):
    """The update is older than the version already served."""


class UpdateFailed(RuntimeError):
    """The update a caller waited for failed (the reason is the message)."""


@dataclass
class _Job:
    update: WeightUpdate
    # Everyone waiting for this job's outcome, including the callers of jobs it replaced in the queue.
    waiters: list[asyncio.Future] = field(default_factory=list)

    @property
    def version(self) -> int:
        return self.update.version


class WeightUpdater:
    def __init__(
        self,
        engine: RolloutEngine,
        metrics: RolloutMetrics,
        fetch_timeout_s: float,
        download_dir: Path | None = None,
        token: str | None = None,
        fetch_concurrency: int = 4,
        swarm: WorkerSwarm | None = None,
    ):
        self.engine = engine
        self.metrics = metrics
        self.fetch_timeout_s = fetch_timeout_s
        self.download_dir = download_dir
        self.token = token
        self.fetch_concurrency = fetch_concurrency
        self._running: _Job | None = None
        self._queued: _Job | None = None
        self._progress: WeightsProgress | None = None
        self._failure: WeightsFailure | None = None
        self._runner: asyncio.Task | None = None
        # The bytes of the version served, the base of the next version's delta (memory: one model file).
        self._held: Held | None = None
        self.swarm = swarm  # the worker's swarm node, for versions that come through the swarm

    # ------------------------------------------------------------------ the contract

    def status(self) -> WeightsStatus:
        return WeightsStatus(
            version=self.engine.version,
            update=self._progress,
            queued=self._queued.version if self._queued else None,
            last_failure=self._failure,
        )

    def submit(self, update: WeightUpdate, force: bool = False) -> WeightsAccepted:
        """Queue ``update`` unless it changes nothing; StaleVersion if it is older than the served version.
        ``force``: load it even if its version is the one served (at start-up the record names the
        weights the job trains, whatever directory the worker started from)."""
        outcome, _ = self._submit(update, force)
        return WeightsAccepted(version=update.version, outcome=outcome)

    async def apply(self, update: WeightUpdate, force: bool = False) -> None:
        """Submit ``update`` and wait until the worker serves it (or the newer version that superseded
        it); UpdateFailed if that update fails."""
        _, job = self._submit(update, force)
        if job is None:
            return
        waiter = asyncio.get_running_loop().create_future()
        job.waiters.append(waiter)
        await waiter

    # ------------------------------------------------------------------ queueing

    def _submit(self, update: WeightUpdate, force: bool) -> tuple[str, _Job | None]:
        served = self.engine.version
        if update.version < served:
            raise StaleVersion(f"version {update.version} is older than the served version {served}")
        ahead = [job for job in (self._running, self._queued) if job is not None]
        newest = max(ahead, key=lambda job: job.version, default=None)
        if newest is not None and update.version <= newest.version:
            same = next((job for job in ahead if job.version == update.version), None)
            return ("pending", same) if same is not None else ("superseded", newest)
        if update.version == served and not force:
            return "served", None
        job = _Job(update)
        if self._queued is not None:
            log.info("weights v%d replaces v%d in the queue", update.version, self._queued.version)
            job.waiters.extend(self._queued.waiters)
        self._queued = job
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._drain(), name="weight-updates")
        return "queued", job

    async def _drain(self) -> None:
        while self._queued is not None:
            job, self._queued = self._queued, None
            self._running = job
            self._progress = WeightsProgress(version=job.version, phase="fetching")
            error: BaseException | None = None
            try:
                await self._apply(job.update)
            except asyncio.CancelledError:
                error = UpdateFailed("the worker is shutting down")
                raise
            except Exception as exc:
                error = exc
                self._failure = WeightsFailure(version=job.version, reason=f"{type(exc).__name__}: {exc}")
                self.metrics.swaps.labels("failed").inc()
                log.error("weights v%d not applied: %s", job.version, self._failure.reason)
            else:
                self.metrics.swaps.labels("ok").inc()
            finally:
                self._running = None
                self._progress = None
                for waiter in job.waiters:
                    if waiter.done():
                        continue
                    if error is None:
                        waiter.set_result(None)
                    else:
                        waiter.set_exception(UpdateFailed(f"weights v{job.version}: {error}"))

    # ------------------------------------------------------------------ one update

    async def _apply(self, update: WeightUpdate) -> None:
        previous = self.engine.version
        started = time.monotonic()
        if update.manifest is not None and update.transport is not None:
            swap_seconds = await self._apply_from_memory(update, started)
        else:
            swap_seconds = await self._apply_from_files(update, started)
        log.info(
            "weights v%d -> v%d from %s: fetch %.2f s, swap %.2f s", previous, update.version,
            update.manifest or update.uri, time.monotonic() - started - swap_seconds, swap_seconds,
        )

    async def _apply_from_memory(self, update: WeightUpdate, started: float) -> float:
        segments: list[SharedWeights] = []

        def allocate(manifest: Manifest) -> memoryview:
            segment = SharedWeights(manifest.total_bytes)
            segments.append(segment)
            return segment.buf

        def progress(manifest: Manifest, buckets: int, size: int) -> None:
            self._progress = WeightsProgress(
                version=update.version, phase="fetching", buckets_done=buckets, buckets_total=len(manifest.buckets),
                bytes_done=size, bytes_total=manifest.total_bytes,
            )

        try:
            received = await fetch_version(
                update, self.token, self.fetch_timeout_s, self.fetch_concurrency, allocate, progress, self._held,
                self.swarm.node() if update.transport == "swarm" and self.swarm is not None else None,
            )
            self.metrics.weight_fetches.labels(received.path).inc()
            self.metrics.weight_fetched_bytes.labels(received.path).inc(received.fetched_bytes)
            log.info("v%d: %s version, %d bytes fetched (%s)", update.version, received.path,
                     received.fetched_bytes, received.reason)
            (segment,) = segments
            # Before anything is loaded: a wrong version must not leave a half-swapped model.
            self.engine.check_weights(segment)
            self._held = None  # from here the engine may hold neither version
            swap_seconds = await self._swap(update.version, segment, started)
            self._held = Held(update.version, bytes(segment.buf[: received.manifest.total_bytes]))
            return swap_seconds
        finally:
            for segment in segments:
                segment.close()

    async def _apply_from_files(self, update: WeightUpdate, started: float) -> float:
        if self.download_dir is not None:
            self.download_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="prft-weights-", dir=self.download_dir))
        try:
            paths = await fetch(update.uri, scratch, self.fetch_timeout_s, self.token)
            await asyncio.to_thread(self.engine.check_weights, paths)
            self._held = None  # a user's checkpoint: no base for the learner's next delta
            return await self._swap(update.version, paths, started)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    async def _swap(self, version: int, source, started: float) -> float:
        self.metrics.fetch_seconds.observe(time.monotonic() - started)
        self._progress = (self._progress or WeightsProgress(version=version, phase="swapping")).model_copy(
            update={"phase": "swapping"}
        )
        return await self.engine.swap(version, source)
