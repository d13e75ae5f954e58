"""The job-wide ``weights`` section: which transport moves weight versions, and the bucket size."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TransportName = Literal["http", "file", "swarm"]


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
    # A registry entry whose heartbeat is older than this is not introduced (a worker gone).
    peer_ttl_s: float = Field(10.0, gt=0)


class WeightsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    # http: workers fetch buckets from the learner (bearer token); file: from a file system that the
    # learner and every worker share (one machine, or a network mount); swarm: a BitTorrent swarm the
    # learner seeds and every worker joins (bucket_mb must be a power of two, at least 1/64).
    transport: TransportName = "http"
    # The unit of verification and of parallel fetches: small enough to spread over many connections
    # (and peers), large enough that per-request overhead is noise.
    bucket_mb: float = Field(16.0, gt=0)
    fetch_concurrency: int = Field(4, ge=1)  # buckets a worker fetches at once
    bucket_retries: int = Field(2, ge=0)  # refetches of a bucket whose hash does not match
    swarm: SwarmSettings = SwarmSettings()

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
