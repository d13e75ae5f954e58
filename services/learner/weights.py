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
import os
import queue
import shutil
import threading
import time
from pathlib import Path

import torch

from shared.api.http import RetryPolicy, ServiceRefused, ServiceUnavailable
from shared.api.rollout import RolloutClient, WeightUpdate
from shared.api.weights import WEIGHTS_FILE
from shared.bus import WeightsRecordStore, WorkerRegistry
from shared.messages import WeightsRecord, WorkerInfo
from shared.modeling import write_companions
from shared.records import PushReport
from shared.weights.manifest import MANIFEST_FILE, Manifest, write_manifest

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
    long run leaves milestones to evaluate or export."""

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

    def read_bucket(self, version: int, index: int) -> bytes:
        """Bucket ``index`` of ``version``; FileNotFoundError for a version not kept, IndexError for a
        bucket it does not have."""
        manifest = Manifest.model_validate_json(self.manifest_file(version).read_text())
        if not 0 <= index < len(manifest.buckets):
            raise IndexError(f"weights version {version} has buckets 0-{len(manifest.buckets) - 1}, not {index}")
        bucket = manifest.buckets[index]
        with self.file(version).open("rb") as handle:
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

    def publish(self, version: int, uri: str, manifest: str | None = None, transport: str | None = None) -> None:
        self.records.set(WeightsRecord(version=version, uri=uri, manifest=manifest, transport=transport))
        self._pending.put(WeightUpdate(version=version, uri=uri, manifest=manifest, transport=transport))

    def close(self, timeout: float = 10.0) -> None:
        self._pending.put(None)
        self._thread.join(timeout)

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
