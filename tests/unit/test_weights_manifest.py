"""Weights as a manifest of buckets: the manifest tiles the safetensors file, every bucket is verified
on arrival (a corrupt one refetched, then refused), and the file and learner-HTTP transports hand over
byte-identical versions (the HTTP one only with the token)."""

import asyncio

import httpx
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file

from services.learner.app import create_app
from services.learner.metrics import StepMetrics
from services.learner.weights import WeightStore
from shared.api.http import ServiceRefused
from shared.api.weights import WEIGHTS_FILE, manifest_url
from shared.records import LearnerStatus, metrics_file
from shared.weights.manifest import BucketMismatch, Manifest, build_manifest, load_state_dict, write_manifest
from shared.weights.transport import WeightTransport, receive
from shared.weights.transports import open_transport
from shared.weights.transports.file import FileTransport
from shared.weights.transports.http import HttpTransport

BUCKET = 4096


def _state() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "embed.weight": torch.randn(64, 48, generator=generator).to(torch.bfloat16),
        "layer.weight": torch.randn(48, 48, generator=generator),
        "layer.bias": torch.randn(48, generator=generator),
    }


def _version(folder, version=3):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WEIGHTS_FILE
    save_file(_state(), path)
    return path, write_manifest(path, version, BUCKET)


def test_the_manifest_tiles_the_file_and_describes_each_tensor(tmp_path):
    path, _ = _version(tmp_path)
    manifest = build_manifest(path, 3, BUCKET)
    size = path.stat().st_size
    assert manifest.total_bytes == size and len(manifest.buckets) == -(-size // BUCKET)
    assert all(b.size == BUCKET for b in manifest.buckets[:-1]) and manifest.buckets[-1].size <= BUCKET
    tensors = {t.name: t for t in manifest.tensors}
    assert tensors["embed.weight"].dtype == "BF16" and tensors["embed.weight"].shape == [64, 48]
    data = path.read_bytes()
    bias = tensors["layer.bias"]
    bias_bytes = bytearray(data[bias.start : bias.end])
    assert torch.equal(torch.frombuffer(bias_bytes, dtype=torch.float32), _state()["layer.bias"])
    # A file that is not safetensors is refused with a reason, not read as a huge header.
    (tmp_path / "junk.bin").write_bytes(b"\xff" * 100)
    with pytest.raises(ValueError, match="is not a safetensors file"):
        build_manifest(tmp_path / "junk.bin", 3, BUCKET)
    # A manifest whose buckets leave a gap is refused at the boundary.
    broken = manifest.model_dump()
    broken["buckets"][1]["start"] += 1
    with pytest.raises(ValidationError, match="bucket 1 starts at"):
        Manifest.model_validate(broken)


def test_the_file_transport_hands_over_a_verified_identical_version(tmp_path):
    path, manifest_file = _version(tmp_path / "v3")

    async def run():
        async with open_transport("file") as transport:
            return await receive(transport, manifest_file.as_uri(), concurrency=3)

    manifest, blob = asyncio.run(run())
    assert manifest.version == 3 and bytes(blob) == path.read_bytes()
    state = load_state_dict(manifest, blob)
    for name, tensor in _state().items():
        assert torch.equal(state[name], tensor), name


class _Corrupting(WeightTransport):
    """The file backend with bucket 1 flipped on its first ``bad`` fetches: a corrupt transfer."""

    name = "corrupting"

    def __init__(self, bad: int):
        self.inner = FileTransport()
        self.bad = bad
        self.fetches = 0

    async def manifest(self, ref):
        return await self.inner.manifest(ref)

    async def bucket(self, ref, manifest, index):
        data = await self.inner.bucket(ref, manifest, index)
        if index == 1:
            self.fetches += 1
            if self.fetches <= self.bad:
                return bytes([data[0] ^ 1]) + data[1:]
        return data


def test_a_corrupt_bucket_is_refetched_then_refuses_the_version(tmp_path):
    path, manifest_file = _version(tmp_path)
    once = _Corrupting(bad=1)
    _, blob = asyncio.run(receive(once, manifest_file.as_uri(), retries=2))
    assert bytes(blob) == path.read_bytes() and once.fetches == 2
    always = _Corrupting(bad=99)
    with pytest.raises(BucketMismatch, match="bucket 1: hash mismatch"):
        asyncio.run(receive(always, manifest_file.as_uri(), retries=2))
    assert always.fetches == 3
    # Bytes cut short are refused too, not loaded.
    manifest = build_manifest(path, 3, BUCKET)
    with pytest.raises(BucketMismatch, match="bytes received"):
        load_state_dict(manifest, bytearray(path.read_bytes()[:-1]))


def test_the_http_transport_fetches_from_the_learner_with_the_token(tmp_path):
    store = WeightStore(tmp_path / "weights", keep=2, bucket_bytes=BUCKET)
    path, _ = _version(store.directory(5), version=5)
    app = create_app(lambda: LearnerStatus(phase="training"), store, StepMetrics(metrics_file(tmp_path)), "t0k")
    ref = manifest_url("http://learner", 5)

    async def run(token):
        transport = HttpTransport(token, transport=httpx.ASGITransport(app=app))
        async with transport:
            return await receive(transport, ref)

    manifest, blob = asyncio.run(run("t0k"))
    assert manifest.version == 5 and bytes(blob) == path.read_bytes()
    with pytest.raises(ServiceRefused, match="401"):
        asyncio.run(run(None))
    with pytest.raises(ServiceRefused, match="403"):
        asyncio.run(run("nope"))

    async def get(url):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://learner") as client:
            return await client.get(url, headers={"Authorization": "Bearer t0k"})

    assert asyncio.run(get("/v1/weights/5/buckets/999")).status_code == 404
    assert asyncio.run(get("/v1/weights/4/manifest")).status_code == 404
    assert asyncio.run(get("/v1/weights/5/buckets/0")).content == path.read_bytes()[:BUCKET]


def test_a_push_names_a_manifest_its_transport_can_read():
    from shared.api.rollout import WeightUpdate

    ok = WeightUpdate(
        version=2, uri="http://l/v1/weights/2", manifest="http://l/v1/weights/2/manifest", transport="http"
    )
    assert ok.transport == "http"
    for bad in (
        {"manifest": "http://l/v1/weights/2/manifest"},  # no transport
        {"manifest": "file:///w/manifest.json", "transport": "http"},
        {"manifest": "http://l/m", "transport": "file"},
        {"manifest": "http://l/m", "transport": "carrier-pigeon"},
    ):
        with pytest.raises(ValidationError):
            WeightUpdate(version=2, uri="http://l/v1/weights/2", **bad)
