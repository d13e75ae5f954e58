"""The job-wide ``weights`` section: which transport moves weight versions, the bucket size, and how
often a version is published without a delta."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TransportName = Literal["http", "file", "s3"]


class S3Settings(BaseModel):
    """Where the ``s3`` transport puts versions: ``s3://{bucket}/{prefix}/v{N}/``. Credentials are never
    settings: the learner and every worker take the standard AWS variables (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, AWS_REGION) or AWS's own chain."""

    model_config = ConfigDict(extra="forbid")

    bucket: str | None = Field(None, min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+[a-z0-9]$")
    prefix: str = Field("prefix-rft", pattern=r"^[^/](.*[^/])?$")  # one job's folder in the bucket
    # The learner's store; None: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, or AWS itself. Workers read the
    # variables only, so set them there (the job's record carries no endpoint or key).
    endpoint_url: str | None = Field(None, pattern=r"^https?://")
    region: str | None = None  # None: AWS_REGION, AWS_DEFAULT_REGION
    # Multipart upload: the file goes up in parts of this size, this many at once (S3's minimum part is 5 MiB).
    part_mb: float = Field(16.0, ge=5)
    upload_concurrency: int = Field(8, ge=1)


class WeightsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    # http: workers fetch buckets from the learner (bearer token); file: from a file system that the
    # learner and every worker share (one machine, or a network mount); s3: from an S3-compatible
    # object store the learner uploads each version to once (``s3`` below).
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

    s3: S3Settings = S3Settings()

    def has_delta(self, version: int) -> bool:
        """Whether ``version`` is published with a delta from ``version - 1``."""
        return self.full_every > 1 and version > 0 and version % self.full_every != 0

    @model_validator(mode="after")
    def _s3_has_a_bucket(self) -> WeightsSettings:
        if self.transport == "s3" and self.s3.bucket is None:
            raise ValueError("the s3 transport needs s3.bucket (the bucket each version is uploaded to)")
        return self

    @property
    def bucket_bytes(self) -> int:
        return max(1, int(self.bucket_mb * (1 << 20)))
