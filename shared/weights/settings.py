"""The job-wide ``weights`` section: which transport moves weight versions, and the bucket size."""

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

    @property
    def bucket_bytes(self) -> int:
        return max(1, int(self.bucket_mb * (1 << 20)))
