"""Weight versions: complete model folders (full weights to safetensors), the Redis record, and the
push to live workers.

A version is written to a temporary directory and renamed into place, so ``GET /v1/weights/{v}``
never serves a half-written file. Pushing runs on its own thread, to every worker at once, and only
ever pushes the newest version: a slow or dead worker delays nobody, and a failed push is retried,
logged and forgotten (the worker loads the record from Redis when it comes back). A push is delivered
when the worker accepts it (202); the worker fetches and swaps on its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mmap
import os
import queue
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from shared.api.http import RetryPolicy, ServiceRefused, ServiceUnavailable
from shared.api.rollout import RolloutClient, WeightUpdate
from shared.api.weights import DELTA_FILE, WEIGHTS_FILE, DeltaRef
from shared.bus import WeightsRecordStore, WorkerRegistry
from shared.messages import WeightsRecord, WorkerInfo
from shared.modeling import write_companions
from shared.records import PushReport
from shared.weights.delta import write_delta
from shared.weights.manifest import (
    DELTA_MANIFEST_FILE,
    MANIFEST_FILE,
    Manifest,
    build_delta_manifest,
    save_manifest,
    write_manifest,
)
from shared.weights.settings import WeightsSettings
from shared.weights.transport import WeightOrigin

log = logging.getLogger(__name__)


def full_state_dict(engine, zero_stage: int, is_main: bool) -> dict[str, torch.Tensor] | None:
    """Full (unpartitioned) weights on the main rank; collective under ZeRO-3, so every rank calls it."""
    if zero_stage == 3:
        state = engine._zero3_consolidated_16bit_state_dict()
        return state if is_main else None
    if not is_main:
        return None
    return {name: tensor.detach().cpu() for name, tensor in engine.module.state_dict().items()}


def digest(state_dict: dict[str, torch.Tensor]) -> str:
    """A checksum of the weights, to check that data-parallel ranks hold the same model."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return h.hexdigest()[:16]


class WeightStore:
    """``root/v{N}/``: each version a complete model folder (weights, config, tokenizer, chat template,
    generation config) that transformers, vLLM and ``prefix-rft eval --model`` load as it is. The newest
    ``keep`` versions are kept, and every version numbered a multiple of ``keep_every`` (0: none), so a
    long run leaves milestones to evaluate or export. ``write_delta`` adds a version's delta from the
    version before to its folder (DELTA_FILE and its manifest, DELTA_MANIFEST_FILE)."""

    def __init__(self, root: Path, keep: int, keep_every: int = 0, bucket_bytes: int = 16 << 20):
        self.root = root
        self.keep = keep
        self.keep_every = keep_every
        self.bucket_bytes = bucket_bytes
        root.mkdir(parents=True, exist_ok=True)

    def directory(self, version: int) -> Path:
        return self.root / f"v{version}"

    def file(self, version: int) -> Path:
        return self.directory(version) / WEIGHTS_FILE

    def manifest_file(self, version: int) -> Path:
        return self.directory(version) / MANIFEST_FILE

    def delta_manifest_file(self, version: int) -> Path:
        return self.directory(version) / DELTA_MANIFEST_FILE

    def read_bucket(self, version: int, index: int, delta: bool = False) -> bytes:
        """Bucket ``index`` of ``version`` (of its delta with ``delta``); FileNotFoundError for a version
        not kept (or without a delta), IndexError for a bucket it does not have."""
        path = self.delta_manifest_file(version) if delta else self.manifest_file(version)
        manifest = Manifest.model_validate_json(path.read_text())
        what = f"the delta of weights version {version}" if delta else f"weights version {version}"
        if not 0 <= index < len(manifest.buckets):
            raise IndexError(f"{what} has buckets 0-{len(manifest.buckets) - 1}, not {index}")
        bucket = manifest.buckets[index]
        with (self.directory(version) / manifest.data_file).open("rb") as handle:
            handle.seek(bucket.start)
            return handle.read(bucket.size)

    def versions(self) -> list[int]:
        found = []
        for entry in self.root.glob("v*"):
            if entry.name[1:].isdigit() and (entry / WEIGHTS_FILE).is_file():
                found.append(int(entry.name[1:]))
        return sorted(found)

    def save(self, module, state_dict: dict[str, torch.Tensor], version: int, tokenizer) -> Path:
        target = self.directory(version)
        tmp = self.root / f".v{version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        # One file whatever the model size, so one URL serves it; tied weights are written once.
        module.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True, max_shard_size="10000GB")
        if not (tmp / WEIGHTS_FILE).is_file():
            raise RuntimeError(f"save_pretrained wrote no {WEIGHTS_FILE} in {tmp}: {sorted(os.listdir(tmp))}")
        write_companions(tmp, tokenizer, getattr(module, "generation_config", None))
        write_manifest(tmp / WEIGHTS_FILE, version, self.bucket_bytes)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        return target / WEIGHTS_FILE

    def write_delta(self, version: int) -> Manifest | None:
        """Add the delta from ``version - 1`` to ``version``'s folder; the delta's manifest, or None when
        the version before is not kept or has another layout. Reads both files through mmap and writes
        the delta as it is compressed: memory stays flat whatever the model size."""
        base = version - 1
        if base < 0 or not self.file(base).is_file():
            return None
        with self.file(base).open("rb") as old, self.file(version).open("rb") as new:
            if os.fstat(old.fileno()).st_size != os.fstat(new.fileno()).st_size:
                log.info("v%d: no delta, its file's layout differs from v%d's", version, base)
                return None
            directory = self.directory(version)
            tmp = directory / f".{DELTA_FILE}.tmp"
            with mmap.mmap(old.fileno(), 0, access=mmap.ACCESS_READ) as a, \
                    mmap.mmap(new.fileno(), 0, access=mmap.ACCESS_READ) as b, tmp.open("wb") as out:
                spec = write_delta(a, b, base, version, out)
        tmp.replace(directory / DELTA_FILE)
        # The manifest last: a delta is there for a reader only once its bytes are.
        manifest = build_delta_manifest(directory / DELTA_FILE, spec, self.bucket_bytes)
        save_manifest(manifest, self.delta_manifest_file(version))
        return manifest

    def prune(self, newest: int) -> list[int]:
        """Drop the versions no longer kept (see the class); the versions dropped."""
        dropped = []
        for version in self.versions():
            milestone = self.keep_every > 0 and version % self.keep_every == 0
            if version <= newest - self.keep and not milestone:
                shutil.rmtree(self.directory(version), ignore_errors=True)
                dropped.append(version)
        return dropped


async def push_to_worker(
    worker: WorkerInfo, update: WeightUpdate, token: str, retry: RetryPolicy, timeout_s: float
) -> bool:
    """True once the worker accepted ``update`` (202: it fetches and swaps in the background, so this
    never waits on its download or its swap); every failed attempt is logged by the retry policy."""
    async with RolloutClient(worker.url, token, timeout_s, retry, name=worker.worker_id) as client:
        try:
            await client.push_weights(update)
            return True
        except ServiceRefused as exc:  # e.g. a wrong token: retrying cannot fix it
            log.error("%s", exc)
        except ServiceUnavailable:
            pass  # each failed attempt is already in the log
    return False


class Publisher:
    """Records each version in Redis and pushes it to the live workers from a background thread."""

    def __init__(
        self,
        records: WeightsRecordStore,
        registry: WorkerRegistry,
        token: str,
        worker_ttl_s: float,
        retries: int,
        timeout_s: float,
    ):
        self.records = records
        self.registry = registry
        self.token = token
        self.worker_ttl_s = worker_ttl_s
        self.retry = RetryPolicy(retries=retries)
        self.timeout_s = timeout_s
        self.last_report: PushReport | None = None
        self._pending: queue.Queue[WeightUpdate | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="weight-push", daemon=True)
        self._thread.start()

    def published_version(self) -> int | None:
        record = self.records.get()
        return record.version if record else None

    def publish(
        self, version: int, uri: str, manifest: str | None = None, transport: str | None = None,
        delta: DeltaRef | None = None,
    ) -> None:
        self.records.set(WeightsRecord(version=version, uri=uri, manifest=manifest, transport=transport, delta=delta))
        self._pending.put(WeightUpdate(version=version, uri=uri, manifest=manifest, transport=transport, delta=delta))

    def close(self, timeout: float = 10.0) -> None:
        self._pending.put(None)
        self._thread.join(timeout)

    def wait_taken(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) until every worker the last push reached serves its version. A
        push is accepted before the worker fetches anything, so a learner that serves the bytes itself
        (the http origin) must not exit before then: a worker fetching after it would fail and stay on
        the version before. A worker that fails or is too slow is logged, not waited for longer."""
        report = self.last_report
        if report is None or not report.pushed:
            return
        pushed = [w for w in self.registry.live(self.worker_ttl_s) if w.worker_id in report.pushed]

        async def wait(worker: WorkerInfo) -> None:
            async with RolloutClient(worker.url, timeout_s=10.0, retry=RetryPolicy(retries=0),
                                     name=worker.worker_id) as client:
                await client.wait_for_version(report.version, timeout_s=timeout_s, poll_s=0.2)

        async def wait_all() -> list:
            return await asyncio.gather(*(wait(w) for w in pushed), return_exceptions=True)

        for worker, outcome in zip(pushed, asyncio.run(wait_all())):
            if isinstance(outcome, Exception):
                log.warning("%s did not take v%d before the learner closed: %s", worker.worker_id,
                            report.version, outcome)

    def _run(self) -> None:
        closing = False
        while not closing:
            update = self._pending.get()
            # Only the newest version matters: skip any that a newer one overtook.
            while not self._pending.empty():
                newer = self._pending.get()
                if newer is None:
                    closing = True
                else:
                    update = newer
            if update is None:
                return
            try:
                self.last_report = self._push(update)
            except Exception:  # the pusher must survive anything a worker or Redis does
                log.exception("push of v%d failed", update.version)

    async def _push_all(self, workers: list[WorkerInfo], update: WeightUpdate) -> list[bool]:
        # All at once, so a worker that is slow to answer delays none of the others.
        return await asyncio.gather(
            *(push_to_worker(w, update, self.token, self.retry, self.timeout_s) for w in workers)
        )

    def _push(self, update: WeightUpdate) -> PushReport:
        start = time.monotonic()
        report = PushReport(version=update.version, seconds=0.0, pushed=[], failed=[])
        workers = [w for w in self.registry.live(self.worker_ttl_s) if w.version < update.version]
        for worker, ok in zip(workers, asyncio.run(self._push_all(workers, update))):
            (report.pushed if ok else report.failed).append(worker.worker_id)
        report.seconds = time.monotonic() - start
        if report.pushed or report.failed:
            log.info(
                "v%d pushed to %d workers in %.2f s (%d failed)", update.version, len(report.pushed),
                report.seconds, len(report.failed),
            )
        return report


class Release:
    """Makes each saved version available, off the training loop (a delta of a large model takes seconds
    to encode, docs/benchmarks.md): its delta from the version before when the settings ask for one, the
    origin's publish, the record and the push, then the prune. One version at a time, in order, so a
    delta's base is never pruned under it. A failed release (an origin that cannot publish) is raised
    by the next ``submit`` or by ``drain``, so it stops training as it did when publishing was inline."""

    def __init__(self, store: WeightStore, origin: WeightOrigin, publisher: Publisher, settings: WeightsSettings):
        self.store = store
        self.origin = origin
        self.publisher = publisher
        self.settings = settings
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="weights-release")
        self._newest = -1
        self._failure: BaseException | None = None

    def submit(self, version: int) -> None:
        self._raise_failure()
        self._newest = version
        self._executor.submit(self._release, version)

    def drain(self) -> None:
        """Wait for every submitted version to be released."""
        self._executor.shutdown(wait=True)
        self._raise_failure()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise RuntimeError("releasing a weights version failed") from self._failure

    def _release(self, version: int) -> None:
        try:
            started = time.monotonic()
            # A version already overtaken is never pushed: its delta would serve nobody.
            if self.settings.has_delta(version) and version == self._newest:
                delta = self.store.write_delta(version)
                if delta is not None:
                    share = delta.total_bytes / self.store.file(version).stat().st_size
                    log.info("v%d: delta from v%d, %d bytes (%.1f%% of the version) in %.2f s", version,
                             version - 1, delta.total_bytes, 100 * share, time.monotonic() - started)
            ref = self.origin.publish(version, self.store.directory(version))
            self.publisher.publish(version, ref.uri, ref.manifest, self.origin.name, ref.delta)
            for dropped in self.store.prune(version):
                self.origin.retire(dropped)
        except BaseException as exc:  # kept for the training loop, which raises it
            log.exception("releasing weights v%d failed", version)
            self._failure = self._failure or exc
