"""How a receiver gets a version: its delta when it holds the delta's base, else the full version.

Every version's folder keeps its full file, so the full version is always there to fall back on: when
the receiver holds nothing (a joiner) or another version than the delta's base, when the version has no
delta, and when the delta fails in any way (not fetched, corrupt, or applied to bytes that do not make
the new version: ``apply_delta`` checks every bucket against the new version's manifest). Either way
the bytes handed back are verified against that manifest, so a receiver never holds a version that is
not bit-exact.

A joiner takes the newest version whole, not the newest full-only version and the deltas after it:
with the full file kept in every version, one full transfer is fewer bytes than a full one plus deltas,
and each version verifies on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from shared.api.http import ServiceRefused, ServiceUnavailable
from shared.api.weights import DeltaRef
from shared.weights.delta import apply_delta
from shared.weights.manifest import BucketMismatch, Manifest
from shared.weights.transport import Progress, WeightTransport, receive

log = logging.getLogger(__name__)

# What a failed delta may raise: the full version is then fetched instead. Anything else (a bug) propagates.
DELTA_FAILURES = (BucketMismatch, ServiceRefused, ServiceUnavailable, OSError, ValueError)


@dataclass(frozen=True)
class Held:
    """The version a receiver serves and its bytes (the safetensors file), kept as the next delta's base."""

    version: int
    blob: bytes | bytearray


@dataclass(frozen=True)
class Received:
    manifest: Manifest
    blob: bytearray | memoryview
    path: Literal["delta", "full"]  # which the bytes came from (for logs and metrics)
    fetched_bytes: int  # bytes moved by the transport, the failed delta's included
    reason: str  # why this path: e.g. "holds v3", "no delta", "delta failed: ..."


async def receive_version(
    transport: WeightTransport,
    manifest_ref: str,
    delta: DeltaRef | None,
    held: Held | None,
    concurrency: int = 4,
    retries: int = 2,
    allocate: Callable[[Manifest], bytearray | memoryview] | None = None,
    progress: Progress | None = None,
) -> Received:
    """Version ``manifest_ref`` through ``transport``: by ``delta`` when ``held`` is its base, else whole.
    ``allocate`` gives the buffer the version is built in (once, whichever path), ``progress`` is told
    of the buckets verified (see ``shared.weights.transport.receive``)."""
    manifest = await transport.manifest(manifest_ref)
    buffer: bytearray | memoryview | None = None

    def target(_: Manifest) -> bytearray | memoryview:
        nonlocal buffer
        if buffer is None:
            buffer = allocate(manifest) if allocate is not None else bytearray(manifest.total_bytes)
        return buffer

    fetched = 0
    if delta is None:
        reason = "no delta"
    elif held is None:
        reason = "holds no version"
    elif held.version != delta.base_version:
        reason = f"holds v{held.version}, the delta applies to v{delta.base_version}"
    else:
        try:
            delta_manifest, data = await receive(transport, delta.manifest, concurrency, retries, progress=progress)
            fetched += len(data)
            if delta_manifest.delta is None or delta_manifest.delta.base_version != held.version:
                raise BucketMismatch(f"{delta.manifest} is not a delta from v{held.version}")
            blob = apply_delta(held.blob, delta_manifest.delta, data, manifest, out=target(manifest))
            return Received(manifest, blob, "delta", fetched, f"holds v{held.version}")
        except DELTA_FAILURES as exc:
            reason = f"delta failed: {exc}"
            log.warning("v%d: the delta from v%d failed (%s); fetching the full version", manifest.version,
                        delta.base_version, exc)
    _, blob = await receive(transport, manifest_ref, concurrency, retries, allocate=target, progress=progress,
                            manifest=manifest)
    return Received(manifest, blob, "full", fetched + manifest.total_bytes, reason)
