"""Versioned weight updates, from an HTTP push or from the record in Redis: fetch, check, swap.

Updates are serialised; an update to the version already served is a no-op (unless forced, as at
start-up, where the record names the weights the job trains, whatever directory the worker started
from), and one to an older version is refused.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from services.rollout.engine import RolloutEngine
from services.rollout.metrics import RolloutMetrics
from services.rollout.weights import fetch, fetch_manifest
from shared.api.rollout import WeightUpdate
from shared.api.weights import WEIGHTS_FILE

if TYPE_CHECKING:  # libtorrent only where the swarm is used
    from services.rollout.swarm import WorkerSwarm

log = logging.getLogger(__name__)


class StaleVersion(ValueError):
    """The update is older than the version already served."""


@dataclass(frozen=True)
class UpdateResult:
    version: int
    swapped: bool
    fetch_seconds: float = 0.0
    swap_seconds: float = 0.0


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
        self.swarm = swarm  # the worker's swarm node, for versions that come through the swarm
        self._lock = asyncio.Lock()

    async def update(self, update: WeightUpdate, force: bool = False) -> UpdateResult:
        async with self._lock:
            current = self.engine.version
            if update.version < current:
                raise StaleVersion(f"version {update.version} is older than the served version {current}")
            if update.version == current and not force:
                return UpdateResult(current, swapped=False)
            try:
                result = await self._swap(update)
            except Exception:
                self.metrics.swaps.labels("failed").inc()
                raise
            self.metrics.swaps.labels("ok").inc()
            log.info(
                "weights v%d -> v%d from %s: fetch %.2f s, swap %.2f s", current, update.version,
                update.manifest or update.uri,
                result.fetch_seconds, result.swap_seconds,
            )
            return result

    async def _swap(self, update: WeightUpdate) -> UpdateResult:
        if self.download_dir is not None:
            self.download_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="prft-weights-", dir=self.download_dir))
        try:
            started = time.monotonic()
            if update.manifest is not None and update.transport is not None:
                paths = [
                    await fetch_manifest(
                        update.manifest, update.transport, scratch / WEIGHTS_FILE, self.fetch_timeout_s, self.token,
                        self.fetch_concurrency,
                        self.swarm.node() if update.transport == "swarm" and self.swarm is not None else None,
                    )
                ]
            else:
                paths = await fetch(update.uri, scratch, self.fetch_timeout_s, self.token)
            # Before anything is loaded: a wrong file must not leave a half-swapped model.
            await asyncio.to_thread(self.engine.check_weights, paths)
            fetch_seconds = time.monotonic() - started
            self.metrics.fetch_seconds.observe(fetch_seconds)
            swap_seconds = await self.engine.swap(update.version, paths)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return UpdateResult(update.version, swapped=True, fetch_seconds=fetch_seconds, swap_seconds=swap_seconds)
