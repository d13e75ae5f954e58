"""The job-wide ``weights`` section: which transport moves weight versions, the bucket size, and how
often a version is published without a delta."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TransportName = Literal["http", "file"]


class WeightsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    # http: workers fetch buckets from the learner (bearer token); file: from a file system that the
    # learner and every worker share (one machine, or a network mount).
    transport: TransportName = "http"
    # The unit of verification and of parallel fetches: small enough to spread over many connections
    # (and peers), large enough that per-request overhead is noise.
    bucket_mb: float = Field(16.0, gt=0)
    fetch_concurrency: int = Field(4, ge=1)  # buckets a worker fetches at once
    bucket_retries: int = Field(2, ge=0)  # refetches of a bucket whose hash does not match
    # Every version is published whole; a version not numbered a multiple of ``full_every`` also carries
    # its delta from the version before (shared.weights.delta), which a worker holding that version
    # fetches instead. 1: no deltas. Measured (docs/benchmarks.md, "Delta versions"), a delta is always
    # smaller than the full file, and a version without one only costs workers bytes (joiners take the
    # newest full file, which every version keeps), hence a rare full-only version.
    full_every: int = Field(100, ge=1)

    def has_delta(self, version: int) -> bool:
        """Whether ``version`` is published with a delta from ``version - 1``."""
        return self.full_every > 1 and version > 0 and version % self.full_every != 0

    @property
    def bucket_bytes(self) -> int:
        return max(1, int(self.bucket_mb * (1 << 20)))
