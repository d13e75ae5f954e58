"""A weight version's manifest: its tensors (dtype, shape, byte range) and its buckets (fixed-size
byte ranges of the version's safetensors file, a SHA-256 each).

The buckets are slices of a standard safetensors file rather than a format of our own, so the bytes a
receiver reassembles are a file that safetensors, transformers and vLLM read as they are; the manifest
is the only thing we define. Each bucket is verified on arrival, so a corrupt or truncated transfer is
caught per bucket (and refetched) rather than after the whole file.

A version's folder may also hold a delta (delta.py): the compressed difference from the version before.
It is described by the same manifest, with ``delta`` set (its base and hash) and no tensors, and moves
through every transport in verified buckets exactly as a full version does.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from safetensors.torch import load as load_safetensors

from shared.api.weights import DELTA_FILE, WEIGHTS_FILE

FORMAT = "prft-weights/1"
MANIFEST_FILE = "manifest.json"
DELTA_MANIFEST_FILE = "delta.json"  # the manifest of the version's delta, next to MANIFEST_FILE


class BucketMismatch(ValueError):
    """A bucket's bytes do not hash to the manifest's digest (corrupt, truncated or another version)."""


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    dtype: str  # safetensors' dtype names: BF16, F32, ...
    shape: list[int]
    start: int = Field(ge=0)  # byte range in the version's file
    end: int = Field(ge=0)


class BucketSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: int = Field(ge=0)
    size: int = Field(gt=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class DeltaSpec(BaseModel):
    """What a delta is: the version it applies to, and its own size and hash."""

    model_config = ConfigDict(extra="forbid")

    base_version: int = Field(ge=0)
    version: int = Field(ge=0)
    delta_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["prft-weights/1"] = FORMAT
    version: int = Field(ge=0)
    total_bytes: int = Field(gt=0)
    bucket_bytes: int = Field(gt=0)
    tensors: list[TensorSpec]
    buckets: list[BucketSpec]
    # Set when the buckets are a delta's bytes (DELTA_FILE) rather than the version's safetensors file.
    # Left out of a full version's manifest.json (see ``dump``), which stays readable by older receivers.
    delta: DeltaSpec | None = None

    @property
    def data_file(self) -> str:
        """The file, next to this manifest, that the buckets slice."""
        return DELTA_FILE if self.delta is not None else WEIGHTS_FILE

    def dump(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @model_validator(mode="after")
    def _buckets_tile_the_file(self) -> Manifest:
        position = 0
        for index, bucket in enumerate(self.buckets):
            if bucket.start != position:
                raise ValueError(f"bucket {index} starts at {bucket.start}, expected {position}")
            last = index == len(self.buckets) - 1
            if bucket.size != self.bucket_bytes and not (last and bucket.size <= self.bucket_bytes):
                raise ValueError(f"bucket {index} holds {bucket.size} bytes, not {self.bucket_bytes}")
            position += bucket.size
        if position != self.total_bytes:
            raise ValueError(f"the buckets cover {position} bytes of {self.total_bytes}")
        delta = self.delta
        if delta is not None and (delta.version != self.version or delta.delta_bytes != self.total_bytes):
            raise ValueError(f"the delta's spec (v{self.delta.version}, {self.delta.delta_bytes} bytes) does not "
                             f"match its manifest (v{self.version}, {self.total_bytes} bytes)")
        for tensor in self.tensors:
            if not tensor.start <= tensor.end <= self.total_bytes:
                raise ValueError(f"tensor {tensor.name} lies outside the file")
        return self

    def verify(self, index: int, data: bytes | memoryview) -> None:
        """BucketMismatch unless ``data`` is bucket ``index`` of this version."""
        bucket = self.buckets[index]
        if len(data) != bucket.size:
            raise BucketMismatch(f"v{self.version} bucket {index}: {len(data)} bytes, expected {bucket.size}")
        if hashlib.sha256(data).hexdigest() != bucket.sha256:
            raise BucketMismatch(f"v{self.version} bucket {index}: hash mismatch")


def _tensor_specs(header_bytes: bytes, data_start: int) -> list[TensorSpec]:
    try:
        header = json.loads(header_bytes)
    except ValueError as exc:
        raise ValueError(f"unreadable safetensors header: {exc}") from exc
    specs = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        specs.append(
            TensorSpec(name=name, dtype=entry["dtype"], shape=entry["shape"], start=data_start + begin,
                       end=data_start + end)
        )
    return specs


def _bucket_specs(path: Path, bucket_bytes: int) -> list[BucketSpec]:
    buckets = []
    start = 0
    with path.open("rb") as handle:
        while data := handle.read(bucket_bytes):
            buckets.append(BucketSpec(start=start, size=len(data), sha256=hashlib.sha256(data).hexdigest()))
            start += len(data)
    return buckets


def read_tensor_specs(data: bytes | bytearray | memoryview) -> list[TensorSpec]:
    """The tensors of a safetensors file held in memory (its header; no tensor is read)."""
    if len(data) < 8:
        raise ValueError(f"not a safetensors file: {len(data)} bytes")
    (header_len,) = struct.unpack_from("<Q", data, 0)
    if not 0 < header_len <= len(data) - 8:
        raise ValueError(f"not a safetensors file (header length {header_len} of {len(data)} bytes)")
    try:
        specs = _tensor_specs(bytes(data[8 : 8 + header_len]), 8 + header_len)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed safetensors header: {exc!r}") from exc
    for spec in specs:
        if not 8 + header_len <= spec.start <= spec.end <= len(data):
            raise ValueError(f"tensor {spec.name} lies outside the {len(data)} bytes")
    return specs


def build_manifest(path: Path, version: int, bucket_bytes: int) -> Manifest:
    """The manifest of the safetensors file ``path`` as version ``version``, in buckets of ``bucket_bytes``."""
    total = path.stat().st_size
    with path.open("rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8).ljust(8, b"\0"))
        if not 0 < header_len <= total - 8:
            raise ValueError(f"{path} is not a safetensors file (header length {header_len} of {total} bytes)")
        tensors = _tensor_specs(handle.read(header_len), 8 + header_len)
    return Manifest(version=version, total_bytes=total, bucket_bytes=bucket_bytes, tensors=tensors,
                    buckets=_bucket_specs(path, bucket_bytes))


def build_delta_manifest(path: Path, spec: DeltaSpec, bucket_bytes: int) -> Manifest:
    """The manifest of the delta file ``path`` (``spec`` from delta.encode_delta)."""
    return Manifest(version=spec.version, total_bytes=spec.delta_bytes, bucket_bytes=bucket_bytes, tensors=[],
                    buckets=_bucket_specs(path, bucket_bytes), delta=spec)


def save_manifest(manifest: Manifest, target: Path) -> Path:
    """``manifest`` written to ``target`` atomically."""
    tmp = target.with_suffix(".tmp")
    tmp.write_text(manifest.dump())
    tmp.replace(target)
    return target


def write_manifest(path: Path, version: int, bucket_bytes: int) -> Path:
    """``manifest.json`` next to the safetensors file ``path``, written atomically."""
    return save_manifest(build_manifest(path, version, bucket_bytes), path.parent / MANIFEST_FILE)


def load_state_dict(manifest: Manifest, blob: bytes | bytearray) -> dict[str, torch.Tensor]:
    """The tensors of a fully received (every bucket verified) version, from memory."""
    if len(blob) != manifest.total_bytes:
        raise BucketMismatch(f"v{manifest.version}: {len(blob)} bytes received of {manifest.total_bytes}")
    return load_safetensors(bytes(blob))
