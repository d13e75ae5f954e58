"""A pool of verifier processes with a hard deadline per item.

concurrent.futures cannot kill a worker that is stuck, so this is a small supervisor of its own:
one asyncio task per worker slot takes the next queued item, hands it to its process and waits for
the result until the item's deadline. Past it, the item is answered "timeout", the process is
killed and a fresh one takes the slot. Items go to whichever worker is free first, so one slow
item holds up one slot, never the items behind it.

Workers are forked from a forkserver that has already imported the verifiers, so a replacement is
ready in milliseconds instead of the second or two a fresh interpreter spends importing sympy.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from services.reward import worker as worker_module
from services.reward.protocol import READY, WorkerChannel
from shared.api.reward import ScoreItem, ScoreResult

log = logging.getLogger(__name__)

_CONTEXT = multiprocessing.get_context("forkserver")


class PoolObserver(Protocol):
    def item_done(self, item: ScoreItem, result: ScoreResult, seconds: float) -> None: ...

    def worker_restarted(self, reason: str) -> None: ...


class WorkerStartError(RuntimeError):
    pass


@dataclass
class _Job:
    item: ScoreItem
    future: asyncio.Future[ScoreResult]


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    channel: WorkerChannel

    async def call(self, item: ScoreItem, timeout: float) -> ScoreResult:
        reply = self.channel.next_frame()
        self.channel.send(item.model_dump_json().encode())
        # wait_for on a future, not a coroutine: no task per item.
        return ScoreResult.model_validate_json(await asyncio.wait_for(reply, timeout))

    async def stop(self, kill: bool) -> None:
        if kill:
            self.process.kill()
        self.channel.close()  # a live worker reads EOF and exits
        # join() blocks; a killed process is reaped in microseconds, a live one finishes its item.
        await asyncio.to_thread(self.process.join, 5.0)
        if self.process.is_alive():
            self.process.kill()
            await asyncio.to_thread(self.process.join)
        self.process.close()


class WorkerPool:
    def __init__(
        self,
        size: int,
        item_timeout_s: float,
        memory_mb: int | None = None,
        start_timeout_s: float = 60.0,
        observer: PoolObserver | None = None,
    ):
        self.size = size
        self.item_timeout_s = item_timeout_s
        self.memory_mb = memory_mb
        self.start_timeout_s = start_timeout_s
        self.observer = observer
        self.restarts = 0
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._workers: list[_Worker | None] = [None] * size
        self._slots: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        _CONTEXT.set_forkserver_preload([worker_module.__name__])
        # The first start launches the forkserver, which imports the verifiers once for all workers.
        first = await self._spawn()
        rest = await asyncio.gather(*(self._spawn() for _ in range(self.size - 1)))
        self._workers = [first, *rest]
        self._slots = [asyncio.create_task(self._run_slot(i), name=f"reward-slot-{i}") for i in range(self.size)]

    async def close(self) -> None:
        for task in self._slots:
            task.cancel()
        await asyncio.gather(*self._slots, return_exceptions=True)
        await asyncio.gather(*(w.stop(kill=False) for w in self._workers if w is not None))
        self._workers = [None] * self.size
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.cancel()

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w is not None and w.process.pid is not None]

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        """Results in the order of ``items``; each item finishes ok, timeout or error, none raises."""
        loop = asyncio.get_running_loop()
        jobs = [_Job(item, loop.create_future()) for item in items]
        for job in jobs:
            self._queue.put_nowait(job)
        try:
            return list(await asyncio.gather(*(job.future for job in jobs)))
        finally:
            # The request was cancelled (client gone): queued jobs are skipped by the slots.
            for job in jobs:
                if not job.future.done():
                    job.future.cancel()

    async def _run_slot(self, index: int) -> None:
        while True:
            job = await self._queue.get()
            if job.future.done():
                continue
            worker = self._workers[index]
            assert worker is not None
            if not worker.channel.idle_and_healthy:
                # Died while idle (killed from outside): not this item's fault, so it gets a fresh worker.
                log.warning("reward worker %s died while idle", worker.process.pid)
                worker = await self._replace(index, worker, "died")
            started = time.perf_counter()
            restart = None
            try:
                result = await worker.call(job.item, self.item_timeout_s)
            except asyncio.TimeoutError:
                result = worker_module.timeout_result(job.item.id, self.item_timeout_s)
                restart = "timeout"
            except (EOFError, OSError, ValueError) as exc:
                # Gone (EOF, reset) or talking nonsense (a frame that is no ScoreResult): replace it.
                log.warning("reward worker %s failed on item %r: %r", worker.process.pid, job.item.id, exc)
                result = worker_module.error_result(job.item.id, "the verifier process died on this item")
                restart = "died"
            if not job.future.done():
                job.future.set_result(result)
            if self.observer is not None:
                self.observer.item_done(job.item, result, time.perf_counter() - started)
            if restart is not None:
                await self._replace(index, worker, restart)

    async def _replace(self, index: int, worker: _Worker, reason: str) -> _Worker:
        self._workers[index] = None
        await worker.stop(kill=True)
        self.restarts += 1
        if self.observer is not None:
            self.observer.worker_restarted(reason)
        self._workers[index] = fresh = await self._respawn()
        return fresh

    async def _respawn(self) -> _Worker:
        delay = 0.1
        while True:
            try:
                return await self._spawn()
            except (WorkerStartError, OSError) as exc:
                # A transient failure (fork refused, memory short) must not shrink the pool for good.
                log.error("reward worker failed to start (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _spawn(self) -> _Worker:
        mine, theirs = socket.socketpair()
        process = _CONTEXT.Process(
            target=worker_module.main,
            args=(theirs, self.item_timeout_s, self.memory_mb),
            name="reward-worker",
            daemon=True,
        )
        # Blocking, but short: the forkserver forks a preloaded process (only the very first start
        # waits for the forkserver to import the verifiers, at service start-up).
        process.start()
        theirs.close()
        worker = _Worker(process, await WorkerChannel.open(mine))
        try:
            hello = await asyncio.wait_for(worker.channel.next_frame(), self.start_timeout_s)
        except (asyncio.TimeoutError, EOFError, OSError) as exc:
            await worker.stop(kill=True)
            raise WorkerStartError(f"worker did not start: {exc!r}") from exc
        if hello != READY:
            await worker.stop(kill=True)
            raise WorkerStartError(f"worker sent {hello!r} instead of {READY!r}")
        return worker
