"""A pool of verifier processes with a hard deadline per item.

concurrent.futures cannot kill a process that is stuck, so this is a small supervisor of its own:
one asyncio task per slot takes the next queued item, hands it to its verifier process and waits
for the result until the item's deadline. Past it, the item is answered "timeout", the process is
killed and a fresh one takes the slot. Items go to whichever process is free first, so one slow
item holds up one slot, never the items behind it; and the queue takes items round-robin between
requests (``fair_queue``), so a request of many slow items cannot hold up another request.

Verifier processes are forked from a forkserver that has already imported the verifiers, so a
replacement is ready in milliseconds instead of the second or two a fresh interpreter spends
importing sympy.
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

from services.reward import verifier_process
from services.reward.fair_queue import FairQueue
from services.reward.protocol import READY, VerifierChannel
from services.reward.verifiers import VerifierOptions
from shared.api.reward import ScoreItem, ScoreResult

log = logging.getLogger(__name__)

_CONTEXT = multiprocessing.get_context("forkserver")


class PoolObserver(Protocol):
    def item_done(self, item: ScoreItem, result: ScoreResult, seconds: float) -> None: ...

    def worker_restarted(self, reason: str) -> None: ...


class VerifierStartError(RuntimeError):
    pass


@dataclass
class _Job:
    item: ScoreItem
    future: asyncio.Future[ScoreResult]


@dataclass
class _VerifierProcess:
    process: multiprocessing.process.BaseProcess
    channel: VerifierChannel

    async def call(self, item: ScoreItem, timeout: float) -> ScoreResult:
        reply = self.channel.next_frame()
        self.channel.send(item.model_dump_json().encode())
        # wait_for on a future, not a coroutine: no task per item.
        return ScoreResult.model_validate_json(await asyncio.wait_for(reply, timeout))

    async def stop(self, kill: bool) -> None:
        if kill:
            self.process.kill()
        self.channel.close()  # a live process reads EOF and exits
        # join() blocks; a killed process is reaped in microseconds, a live one finishes its item.
        await asyncio.to_thread(self.process.join, 5.0)
        if self.process.is_alive():
            self.process.kill()
            await asyncio.to_thread(self.process.join)
        self.process.close()


class VerifierPool:
    def __init__(
        self,
        size: int,
        item_timeout_s: float,
        memory_mb: int | None = None,
        start_timeout_s: float = 60.0,
        observer: PoolObserver | None = None,
        options: VerifierOptions | None = None,
    ):
        self.size = size
        self.options = options or VerifierOptions()
        self.item_timeout_s = item_timeout_s
        self.memory_mb = memory_mb
        self.start_timeout_s = start_timeout_s
        self.observer = observer
        self.restarts = 0
        self._queue: FairQueue[_Job] = FairQueue()
        self._procs: list[_VerifierProcess | None] = [None] * size
        self._slots: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        _CONTEXT.set_forkserver_preload([verifier_process.__name__])
        # The first start launches the forkserver, which imports the verifiers once for all processes.
        first = await self._spawn()
        rest = await asyncio.gather(*(self._spawn() for _ in range(self.size - 1)))
        self._procs = [first, *rest]
        self._slots = [asyncio.create_task(self._run_slot(i), name=f"reward-slot-{i}") for i in range(self.size)]

    async def close(self) -> None:
        for task in self._slots:
            task.cancel()
        await asyncio.gather(*self._slots, return_exceptions=True)
        await asyncio.gather(*(w.stop(kill=False) for w in self._procs if w is not None))
        self._procs = [None] * self.size
        for job in self._queue.drain():
            if not job.future.done():
                job.future.cancel()

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._procs if w is not None and w.process.pid is not None]

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        """Results in the order of ``items``; each item finishes ok, timeout or error, none raises."""
        loop = asyncio.get_running_loop()
        jobs = [_Job(item, loop.create_future()) for item in items]
        self._queue.put_lane(jobs)
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
            proc = self._procs[index]
            assert proc is not None
            if not proc.channel.idle_and_healthy:
                # Died while idle (killed from outside): not this item's fault, so it gets a fresh verifier process.
                log.warning("reward verifier process %s died while idle", proc.process.pid)
                proc = await self._replace(index, proc, "died")
            started = time.perf_counter()
            restart = None
            try:
                result = await proc.call(job.item, self.item_timeout_s)
            except asyncio.TimeoutError:
                result = verifier_process.timeout_result(job.item.id, self.item_timeout_s)
                restart = "timeout"
            except (EOFError, OSError, ValueError) as exc:
                # Gone (EOF, reset) or talking nonsense (a frame that is no ScoreResult): replace it.
                log.warning("reward verifier process %s failed on item %r: %r", proc.process.pid, job.item.id, exc)
                result = verifier_process.error_result(job.item.id, "the verifier process died on this item")
                restart = "died"
            if not job.future.done():
                job.future.set_result(result)
            if self.observer is not None:
                self.observer.item_done(job.item, result, time.perf_counter() - started)
            if restart is not None:
                await self._replace(index, proc, restart)

    async def _replace(self, index: int, proc: _VerifierProcess, reason: str) -> _VerifierProcess:
        self._procs[index] = None
        await proc.stop(kill=True)
        self.restarts += 1
        if self.observer is not None:
            self.observer.worker_restarted(reason)
        self._procs[index] = fresh = await self._respawn()
        return fresh

    async def _respawn(self) -> _VerifierProcess:
        delay = 0.1
        while True:
            try:
                return await self._spawn()
            except (VerifierStartError, OSError) as exc:
                # A transient failure (fork refused, memory short) must not shrink the pool for good.
                log.error("reward verifier process failed to start (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _spawn(self) -> _VerifierProcess:
        mine, theirs = socket.socketpair()
        process = _CONTEXT.Process(
            target=verifier_process.main,
            args=(theirs, self.item_timeout_s, self.memory_mb, self.options),
            name="reward-verifier",
            daemon=True,
        )
        # Blocking, but short: the forkserver forks a preloaded process (only the very first start
        # waits for the forkserver to import the verifiers, at service start-up).
        process.start()
        theirs.close()
        proc = _VerifierProcess(process, await VerifierChannel.open(mine))
        try:
            hello = await asyncio.wait_for(proc.channel.next_frame(), self.start_timeout_s)
        except (asyncio.TimeoutError, EOFError, OSError) as exc:
            await proc.stop(kill=True)
            raise VerifierStartError(f"verifier process did not start: {exc!r}") from exc
        if hello != READY:
            await proc.stop(kill=True)
            raise VerifierStartError(f"verifier process sent {hello!r} instead of {READY!r}")
        return proc
