"""The job-wide ``weights`` section: which transport moves weight versions, the bucket size, and how
often a version is published without a delta."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

TransportName = Literal["http", "file", "s3", "swarm"]


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


class SwarmSettings(BaseModel):
    """The ``swarm`` transport's nodes (the learner's, and each worker's): where a node listens, and
    how much it gives. The limits hold for every peer, loopback and LAN included."""

    model_config = ConfigDict(extra="forbid")

    # The TLS port a node listens on for peers (0: any free port; the address goes into the registry).
    port: int = Field(0, ge=0, le=65535)
    # The address peers reach this node at; None: the host of the node's own public URL.
    advertise_host: str | None = None
    upload_mb_s: float = Field(0.0, ge=0)  # per node, 0: unlimited
    download_mb_s: float = Field(0.0, ge=0)
    upload_slots: int = Field(8, ge=1)  # peers a node uploads to at once (unchoke slots)
    # Where a worker writes a version's pieces (one version held, two during a transfer); None:
    # /dev/shm where there is one (memory, not disk: a version lives seconds), else the temp dir.
    storage_dir: str | None = None
    # How often a node looks at the registry for peers it has not met.
    introduce_interval_s: float = Field(1.0, gt=0)
    # Live peers a node is introduced to per version, chosen at random among the registry's (peer
    # exchange finds more): a tracker's 50, so a fleet of thousands is not a full mesh of TLS handshakes.
    max_peers: int = Field(50, ge=1)
    # A registry entry whose heartbeat is older than this is not introduced (a worker gone).
    peer_ttl_s: float = Field(10.0, gt=0)

    def advertised_host(self, public_base_url: str) -> str:
        """The host this node gives peers: ``advertise_host``, else the host of the service's public URL
        (the address other processes already reach it at; a deployment sets one or the other)."""
        host = self.advertise_host or urlsplit(public_base_url).hostname
        if not host:
            raise ValueError(f"no swarm address: set swarm.advertise_host, or a public URL with a host, not "
                             f"{public_base_url!r}")
        return host


class WeightsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    # http: workers fetch buckets from the learner (bearer token); file: from a file system that the
    # learner and every worker share (one machine, or a network mount); s3: from an S3-compatible
    # object store the learner uploads each version to once (``s3`` below); swarm: a BitTorrent swarm the
    # learner seeds and every worker joins (bucket_mb must be a power of two, at least 1/64).
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
    swarm: SwarmSettings = SwarmSettings()

    def has_delta(self, version: int) -> bool:
        """Whether ``version`` is published with a delta from ``version - 1``."""
        return self.full_every > 1 and version > 0 and version % self.full_every != 0

    @model_validator(mode="after")
    def _s3_has_a_bucket(self) -> WeightsSettings:
        if self.transport == "s3" and self.s3.bucket is None:
            raise ValueError("the s3 transport needs s3.bucket (the bucket each version is uploaded to)")
        return self

    @model_validator(mode="after")
    def _swarm_pieces(self) -> WeightsSettings:
        size = self.bucket_bytes
        if self.transport == "swarm" and (size < 16 << 10 or size & (size - 1)):
            raise ValueError(f"weights.transport swarm cuts a version into torrent pieces: bucket_mb must be a "
                             f"power of two of at least 1/64 (16 KiB), not {self.bucket_mb}")
        return self

    @property
    def bucket_bytes(self) -> int:
        return max(1, int(self.bucket_mb * (1 << 20)))
