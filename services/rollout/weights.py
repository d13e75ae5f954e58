"""Weight sources for hot swaps: a manifest update's verified bytes through its transport, or a
``file://`` or ``http(s)://`` URI resolved to local safetensors files; and the check that they fit the
served model before any tensor is loaded (a half-applied swap would serve a mix of two versions).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open

from shared.api.http import ServiceRefused, ServiceUnavailable
from shared.api.rollout import WeightUpdate
from shared.api.weights import WEIGHTS_FILE, download
from shared.weights.manifest import BucketMismatch, Manifest
from shared.weights.receiver import Held, Received, receive_version
from shared.weights.transport import Progress
from shared.weights.transports import open_transport

if TYPE_CHECKING:
    from shared.weights.transports.swarm import SwarmNode

# Tied embeddings: the checkpoint may or may not carry the output layer separately.
OPTIONAL_TENSORS = frozenset({"lm_head.weight"})

Header = dict[str, tuple[str, tuple[int, ...]]]


class WeightsError(ValueError):
    """The weights at a URI cannot be used (missing, unreadable, or not this model's shapes)."""


def safetensors_files(path: Path) -> list[Path]:
    """A safetensors file, or a directory holding model.safetensors (or shards of it)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        if (path / WEIGHTS_FILE).is_file():
            return [path / WEIGHTS_FILE]
        shards = sorted(path.glob("*.safetensors"))
        if shards:
            return shards
        raise WeightsError(f"no .safetensors file in {path}")
    raise WeightsError(f"{path} does not exist")


def read_header(path: Path) -> Header:
    """Tensor names, dtypes and shapes from a safetensors header (maps the file, reads no weights).
    safetensors refuses a file cut short (a copy or a download that stopped half-way): refused here,
    before the swap, which would otherwise fail with part of the model already replaced."""
    try:
        with safe_open(path, framework="pt") as weights:
            slices = {name: weights.get_slice(name) for name in weights.keys()}
            return {name: (tensor.get_dtype(), tuple(tensor.get_shape())) for name, tensor in slices.items()}
    except (OSError, SafetensorError) as exc:
        raise WeightsError(f"{path} is not a safetensors file: {exc}") from exc


def read_headers(paths: list[Path]) -> Header:
    merged: Header = {}
    for path in paths:
        merged.update(read_header(path))
    return merged


def check_compatible(reference: Header, candidate: Header) -> None:
    """Same tensor names and shapes as the checkpoint the engine started from (dtypes may differ)."""
    missing = sorted(set(reference) - set(candidate) - OPTIONAL_TENSORS)
    unknown = sorted(set(candidate) - set(reference) - OPTIONAL_TENSORS)
    wrong = sorted(
        f"{name} {candidate[name][1]} (expected {reference[name][1]})"
        for name in set(reference) & set(candidate)
        if reference[name][1] != candidate[name][1]
    )
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensors, e.g. {missing[:3]}")
    if unknown:
        problems.append(f"{len(unknown)} tensors this model does not have, e.g. {unknown[:3]}")
    if wrong:
        problems.append(f"wrong shapes: {wrong[:3]}")
    if problems:
        raise WeightsError("weights do not fit the served model: " + "; ".join(problems))


def local_path(uri: str) -> Path | None:
    """The path of a ``file://`` URI; None for other schemes."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != "file":
        return None
    if parsed.netloc not in ("", "localhost"):
        raise WeightsError(f"file URI with a remote host is not supported: {uri}")
    return Path(urllib.parse.unquote(parsed.path))


async def fetch_version(
    update: WeightUpdate,
    token: str | None,
    timeout_s: float,
    concurrency: int,
    allocate: Callable[[Manifest], bytearray | memoryview] | None = None,
    progress: Progress | None = None,
    held: Held | None = None,
    swarm: SwarmNode | None = None,
) -> Received:
    """The verified bytes of a manifest update's version, fetched through its transport into the buffer
    ``allocate`` gives (see ``shared.weights.transport.receive``): by the update's delta when ``held``
    is its base (shared.weights.receiver), else whole. The one step that says where a version's bytes
    come from. ``swarm``: the worker's swarm node (the swarm transport)."""
    if update.manifest is None or update.transport is None:
        raise WeightsError(f"the update to v{update.version} names no manifest and transport")
    try:
        async with open_transport(update.transport, token, timeout_s, swarm) as transport:
            return await receive_version(transport, update.manifest, update.delta, held, concurrency,
                                         allocate=allocate, progress=progress)
    except (ServiceRefused, ServiceUnavailable, BucketMismatch, OSError, ValueError) as exc:
        raise WeightsError(f"weights at {update.manifest} ({update.transport}): {exc}") from exc


async def fetch(uri: str, download_dir: Path, timeout_s: float, token: str | None = None) -> list[Path]:
    """Local safetensors files for ``uri``; ``http(s)://`` sources are downloaded into ``download_dir``."""
    path = local_path(uri)
    if path is not None:
        return safetensors_files(path)
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme not in ("http", "https"):
        raise WeightsError(f"unsupported weights URI scheme {scheme!r} (file://, http://, https://)")
    download_dir.mkdir(parents=True, exist_ok=True)
    try:
        return [await download(uri, download_dir / WEIGHTS_FILE, timeout_s, token)]
    except (ServiceRefused, ServiceUnavailable) as exc:
        raise WeightsError(str(exc)) from exc
