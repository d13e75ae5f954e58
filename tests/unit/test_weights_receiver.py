"""Delta versions end to end on the learner's store and the file transport: the learner writes a
version's delta beside its full file, a receiver that holds the base takes the delta (bit-exact), and
anything else (a joiner, another base, a wrong or corrupt base, a delta gone) ends on the full version."""

import asyncio

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file

from services.learner.weights import WeightStore
from shared.api.rollout import WeightUpdate
from shared.api.weights import DELTA_FILE, DeltaRef
from shared.messages import WeightsRecord
from shared.weights.manifest import DELTA_MANIFEST_FILE, MANIFEST_FILE, Manifest, write_manifest
from shared.weights.receiver import Held, receive_version
from shared.weights.settings import WeightsSettings
from shared.weights.transports.file import FileOrigin, FileTransport

BUCKET = 16 << 10


def _save_version(store: WeightStore, version: int, state: dict[str, torch.Tensor]) -> None:
    directory = store.directory(version)
    directory.mkdir(parents=True)
    save_file(state, store.file(version))
    write_manifest(store.file(version), version, BUCKET)


def _step(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """An RL step's update: about 2% of the weights move, by a little."""
    generator = torch.Generator().manual_seed(seed)
    new = {name: tensor.clone() for name, tensor in state.items()}
    for tensor in new.values():
        flat = tensor.view(-1)
        chosen = torch.randperm(flat.numel(), generator=generator)[: flat.numel() // 50]
        flat[chosen] += (1e-2 * torch.randn(chosen.numel(), generator=generator)).to(tensor.dtype)
    return new


@pytest.fixture
def store(tmp_path):
    """v0, v1, v2 of a small bf16 + fp32 model, each with its delta from the version before."""
    store = WeightStore(tmp_path / "weights", keep=10, bucket_bytes=BUCKET)
    generator = torch.Generator().manual_seed(0)
    state = {"a": torch.randn(256, 256, generator=generator).to(torch.bfloat16),
             "b": torch.randn(128, 64, generator=generator)}
    for version in range(3):
        _save_version(store, version, state)
        if version:
            assert store.write_delta(version) is not None
        state = _step(state, version + 1)
    return store


def _receive(store: WeightStore, version: int, held: Held | None, origin: FileOrigin | None = None):
    ref = (origin or FileOrigin()).publish(version, store.directory(version))

    async def go():
        async with FileTransport() as transport:
            return await receive_version(transport, ref.manifest, ref.delta, held)

    return asyncio.run(go())


def test_a_chain_of_deltas_rebuilds_each_version_bit_for_bit(store):
    joined = _receive(store, 1, None)  # a joiner holds nothing: the newest version, whole
    assert (joined.path, joined.reason) == ("full", "holds no version")
    assert bytes(joined.blob) == store.file(1).read_bytes()
    received = _receive(store, 2, Held(1, joined.blob))
    assert received.path == "delta" and received.reason == "holds v1"
    assert bytes(received.blob) == store.file(2).read_bytes()
    # Only the delta moved, a fraction of the version.
    delta_bytes = (store.directory(2) / DELTA_FILE).stat().st_size
    assert received.fetched_bytes == delta_bytes < store.file(2).stat().st_size / 3


def test_the_full_version_when_the_delta_cannot_serve(store):
    v0, v1 = store.file(0).read_bytes(), store.file(1).read_bytes()
    # Another base than the delta's.
    other = _receive(store, 2, Held(0, v0))
    assert other.path == "full" and other.reason == "holds v0, the delta applies to v1"
    assert bytes(other.blob) == store.file(2).read_bytes()
    # The right version number but other bytes (a worker whose copy went wrong): the checksums catch it.
    wrong = bytearray(v1)
    wrong[len(wrong) // 2] ^= 0x40
    fallback = _receive(store, 2, Held(1, wrong))
    assert fallback.path == "full" and fallback.reason.startswith("delta failed: v2 bucket")
    assert bytes(fallback.blob) == store.file(2).read_bytes()
    # A corrupt delta on the origin: every fetch of its bucket mismatches, then the full version.
    data = bytearray((store.directory(2) / DELTA_FILE).read_bytes())
    data[-5] ^= 1
    (store.directory(2) / DELTA_FILE).write_bytes(data)
    corrupt = _receive(store, 2, Held(1, v1))
    assert corrupt.path == "full" and "hash mismatch" in corrupt.reason
    assert bytes(corrupt.blob) == store.file(2).read_bytes()


def test_a_delta_gone_from_the_origin_falls_back(store):
    ref = FileOrigin().publish(2, store.directory(2))
    (store.directory(2) / DELTA_FILE).unlink()
    (store.directory(2) / DELTA_MANIFEST_FILE).unlink()

    async def go():
        async with FileTransport() as transport:
            return await receive_version(transport, ref.manifest, ref.delta, Held(1, store.file(1).read_bytes()))

    received = asyncio.run(go())
    assert received.path == "full" and "delta failed" in received.reason
    assert bytes(received.blob) == store.file(2).read_bytes()


def test_the_origin_names_the_delta_only_where_there_is_one(store):
    assert FileOrigin().publish(0, store.directory(0)).delta is None
    delta = FileOrigin().publish(2, store.directory(2)).delta
    assert delta.base_version == 1 and delta.manifest.endswith("/v2/delta.json")
    manifest = Manifest.model_validate_json((store.directory(2) / DELTA_MANIFEST_FILE).read_text())
    assert manifest.delta.base_version == 1 and manifest.data_file == DELTA_FILE and manifest.tensors == []
    # A full version's manifest reads as before the deltas (no "delta" key for an older receiver).
    assert '"delta"' not in (store.directory(2) / MANIFEST_FILE).read_text()


def test_no_delta_without_the_version_before_or_with_another_layout(store, tmp_path):
    other = WeightStore(tmp_path / "other", keep=10, bucket_bytes=BUCKET)
    _save_version(other, 4, {"a": torch.zeros(8)})
    assert other.write_delta(4) is None  # v3 is not there
    _save_version(other, 5, {"a": torch.zeros(16)})
    assert other.write_delta(5) is None  # v4 has another size
    assert not (other.directory(5) / DELTA_FILE).exists()


def test_full_every_decides_which_versions_carry_a_delta():
    every = WeightsSettings(full_every=4)
    assert [v for v in range(10) if every.has_delta(v)] == [1, 2, 3, 5, 6, 7, 9]
    assert not any(WeightsSettings(full_every=1).has_delta(v) for v in range(10))
    with pytest.raises(ValidationError, match="full_every"):
        WeightsSettings(full_every=0)


def test_an_update_names_a_delta_only_with_a_manifest_of_its_transport():
    manifest = "http://learner:8000/v1/weights/3/manifest"
    delta = DeltaRef(base_version=2, manifest="http://learner:8000/v1/weights/3/delta/manifest")
    update = WeightUpdate(version=3, uri="http://learner:8000/v1/weights/3", manifest=manifest, transport="http",
                          delta=delta)
    assert WeightUpdate.model_validate_json(update.model_dump_json()) == update
    with pytest.raises(ValidationError, match="a delta comes with the version's manifest"):
        WeightUpdate(version=3, uri="http://learner:8000/v1/weights/3", delta=delta)
    with pytest.raises(ValidationError, match="takes a file:// delta manifest"):
        WeightUpdate(version=3, uri="file:///w/v3/model.safetensors", manifest="file:///w/v3/manifest.json",
                     transport="file", delta=delta)
    with pytest.raises(ValidationError, match="applies to an earlier version"):
        WeightUpdate(version=3, uri="http://l/v1/weights/3", manifest=manifest, transport="http",
                     delta=delta.model_copy(update={"base_version": 3}))
    # A record written before deltas existed still reads.
    assert WeightsRecord.model_validate_json('{"version": 1, "uri": "file:///w"}').delta is None
