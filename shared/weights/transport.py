"""The two sides of a weight transport backend: ``WeightOrigin`` (the learner makes a saved version
reachable) and ``WeightTransport`` (a receiver gets a version's manifest and its buckets).

A backend only moves bytes; ``receive`` owns the rules every backend shares: buckets fetched
concurrently, each verified against the manifest (a mismatch is refetched, then fails the version),
and the version handed over only once every bucket is verified, so nobody ever applies a partial one.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from shared.api.weights import DeltaRef
from shared.weights.manifest import DELTA_MANIFEST_FILE, BucketMismatch, Manifest

log = logging.getLogger(__name__)


class VersionRef(BaseModel):
    """Where a published version is: what the Redis record and a push carry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str  # the whole safetensors file, for a receiver that takes no transport (file:// or http(s)://)
    manifest: str  # the manifest's address in the backend's terms: what ``WeightTransport`` reads
    delta: DeltaRef | None = None  # the version's delta, when its folder holds one (see ``delta_base``)


def delta_base(directory: Path) -> int | None:
    """The base version of the delta in a version's folder (DELTA_MANIFEST_FILE), None when it has none:
    what an origin names in ``VersionRef.delta``."""
    path = directory / DELTA_MANIFEST_FILE
    if not path.is_file():
        return None
    delta = Manifest.model_validate_json(path.read_text()).delta
    if delta is None:
        raise ValueError(f"{path} describes no delta")
    return delta.base_version


class WeightOrigin(ABC):
    """The learner's side of one backend. ``publish`` is called once per version, after the version's
    folder (the safetensors file and its manifest.json) is complete; ``retire`` when the folder is pruned."""

    name: str
    # The learner's process serves the bytes itself (http, swarm): it must outlive the workers' last fetch.
    served_by_learner: bool = False

    @abstractmethod
    def publish(self, version: int, directory: Path) -> VersionRef: ...

    def retire(self, version: int) -> None:  # noqa: B027 - a backend that copies nothing has nothing to drop
        pass

    def close(self) -> None:  # noqa: B027
        pass


class WeightTransport(ABC):
    """One backend (a module under shared/weights/transports). ``ref`` is what the Redis record holds
    for a version: the address of its manifest in this backend's terms."""

    name: str

    @abstractmethod
    async def manifest(self, ref: str) -> Manifest: ...

    @abstractmethod
    async def bucket(self, ref: str, manifest: Manifest, index: int) -> bytes:
        """Bucket ``index`` of the object ``manifest`` (read at ``ref``) describes: the version's file, or
        its delta's (``manifest.data_file``)."""

    async def close(self) -> None:  # noqa: B027 - most backends hold nothing
        pass

    async def __aenter__(self) -> WeightTransport:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()


# Called as buckets are verified: (manifest, buckets done, bytes done).
Progress = Callable[[Manifest, int, int], None]


async def receive(
    transport: WeightTransport,
    ref: str,
    concurrency: int = 4,
    retries: int = 2,
    allocate: Callable[[Manifest], bytearray | memoryview] | None = None,
    progress: Progress | None = None,
    manifest: Manifest | None = None,
) -> tuple[Manifest, bytearray | memoryview]:
    """The manifest and the verified bytes of the object (a version, or a delta) whose manifest is at
    ``ref``; ``manifest``: that manifest when the caller has already read it. ``allocate`` gives the
    buffer the buckets are written into (``manifest.total_bytes`` long; a bytearray by default), so a
    receiver can assemble the version where it will be read, shared memory for instance, without a copy."""
    if manifest is None:
        manifest = await transport.manifest(ref)
    blob = allocate(manifest) if allocate is not None else bytearray(manifest.total_bytes)
    if len(blob) < manifest.total_bytes:
        raise ValueError(f"a buffer of {len(blob)} bytes for v{manifest.version} of {manifest.total_bytes}")
    limit = asyncio.Semaphore(concurrency)
    done = [0, 0]  # buckets, bytes
    if progress is not None:
        progress(manifest, 0, 0)

    async def one(index: int) -> None:
        bucket = manifest.buckets[index]
        async with limit:
            for attempt in range(retries + 1):
                data = await transport.bucket(ref, manifest, index)
                try:
                    manifest.verify(index, data)
                except BucketMismatch as exc:
                    if attempt == retries:
                        raise
                    log.warning("%s; refetching", exc)
                    continue
                blob[bucket.start : bucket.start + bucket.size] = data
                done[0] += 1
                done[1] += bucket.size
                if progress is not None:
                    progress(manifest, done[0], done[1])
                return

    tasks = [asyncio.ensure_future(one(i)) for i in range(len(manifest.buckets))]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        # Nothing may write into the buffer once the caller has it back (it frees shared memory).
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return manifest, blob
