"""``file``: a file system the origin and the receivers share (one machine, or a network mount). The
ref is the ``file://`` URI of the version's manifest.json; buckets are read from the safetensors file
next to it."""

from __future__ import annotations

import asyncio
import urllib.parse
from pathlib import Path

from shared.api.weights import WEIGHTS_FILE, DeltaRef
from shared.weights.manifest import DELTA_MANIFEST_FILE, MANIFEST_FILE, Manifest
from shared.weights.transport import VersionRef, WeightOrigin, WeightTransport, delta_base


def manifest_path(ref: str) -> Path:
    parsed = urllib.parse.urlparse(ref)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise ValueError(f"the file transport takes a local file:// URI, not {ref!r}")
    return Path(urllib.parse.unquote(parsed.path))


def _read(path: Path, start: int, size: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(start)
        return handle.read(size)


class FileTransport(WeightTransport):
    name = "file"

    async def manifest(self, ref: str) -> Manifest:
        text = await asyncio.to_thread(manifest_path(ref).read_text)
        return Manifest.model_validate_json(text)

    async def bucket(self, ref: str, manifest: Manifest, index: int) -> bytes:
        bucket = manifest.buckets[index]
        return await asyncio.to_thread(_read, manifest_path(ref).parent / manifest.data_file, bucket.start, bucket.size)


class FileOrigin(WeightOrigin):
    """The version's folder is already where every receiver reads it."""

    name = "file"

    def publish(self, version: int, directory: Path) -> VersionRef:
        folder = directory.resolve()
        base = delta_base(folder)
        delta = None if base is None else DeltaRef(base_version=base, manifest=(folder / DELTA_MANIFEST_FILE).as_uri())
        return VersionRef(uri=(folder / WEIGHTS_FILE).as_uri(), manifest=(folder / MANIFEST_FILE).as_uri(), delta=delta)
