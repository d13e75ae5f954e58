"""The rollout worker's background weight updater (the real class, real transports, real shared memory;
only the vLLM engine is replaced by a stand-in that records its swaps): a manifest update is applied from
shared memory without a file, freed after the swap or a failure; one update at a time, the newest wins,
an update to a version served, under way or queued changes nothing, an older one is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from services.rollout.metrics import RolloutMetrics
from services.rollout.shared_weights import SHM_DIR, SharedWeights, tensors
from services.rollout.updates import StaleVersion, UpdateFailed, WeightUpdater
from services.rollout.weights import Header, WeightsError, check_compatible, read_header
from shared.api.rollout import WeightsStatus, WeightUpdate
from shared.api.weights import WEIGHTS_FILE
from shared.weights.manifest import write_manifest

BUCKET = 1024


def state(scale: float) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "embed.weight": (torch.randn(32, 16, generator=generator) * scale).to(torch.bfloat16),
        "layer.weight": torch.randn(16, 16, generator=generator) * scale,
        "layer.bias": torch.randn(16, generator=generator) * scale,
    }


def publish(root: Path, version: int, weights: dict[str, torch.Tensor] | None = None) -> WeightUpdate:
    """A version as the learner's file origin publishes it: the safetensors file and its manifest."""
    folder = root / f"v{version}"
    folder.mkdir(parents=True)
    save_file(weights if weights is not None else state(float(version)), folder / WEIGHTS_FILE)
    manifest = write_manifest(folder / WEIGHTS_FILE, version, BUCKET)
    return WeightUpdate(
        version=version, uri=(folder / WEIGHTS_FILE).as_uri(), manifest=manifest.as_uri(), transport="file"
    )


class Engine:
    """What the updater needs of RolloutEngine: the served version, the header check and the swap. A swap
    copies the tensors out of the source and can be held until released."""

    def __init__(self, reference: Header, updater_status=None):
        self.version = 0
        self.ready = True
        self.reference = reference
        self.swapped: list[tuple[int, dict[str, torch.Tensor]]] = []
        self.segments: list[str] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.entered = asyncio.Event()
        self.status_in_swap: list[WeightsStatus] = []
        self.updater: WeightUpdater | None = None

    def check_weights(self, source) -> None:
        check_compatible(self.reference, source.header())

    async def swap(self, version: int, source) -> float:
        assert isinstance(source, SharedWeights), "a manifest update is loaded from memory"
        self.segments.append(source.name)
        self.status_in_swap.append(self.updater.status())
        self.entered.set()
        await self.hold.wait()
        loaded = {name: tensor.clone() for name, tensor in tensors(source.buf)}
        self.swapped.append((version, loaded))
        self.version = version
        return 0.0


@pytest.fixture
def setup(tmp_path):
    publish(tmp_path / "ref", 0)
    engine = Engine(read_header(tmp_path / "ref" / "v0" / WEIGHTS_FILE))
    downloads = tmp_path / "downloads"
    updater = WeightUpdater(engine, RolloutMetrics(), fetch_timeout_s=30, download_dir=downloads)
    engine.updater = updater
    return engine, updater, tmp_path / "versions", downloads


def segment_exists(name: str) -> bool:
    return (SHM_DIR / name.lstrip("/")).exists()


def test_a_manifest_update_is_applied_from_shared_memory_and_freed(setup):
    engine, updater, root, downloads = setup
    update = publish(root, 2)

    async def run():
        accepted = updater.submit(update)
        assert (accepted.version, accepted.outcome) == (2, "queued")
        await updater.apply(update)  # already queued: waits for that one
        return updater.status()

    after = asyncio.run(run())
    assert after == WeightsStatus(version=2)
    [(version, loaded)] = engine.swapped
    assert version == 2
    for name, tensor in state(2.0).items():
        assert torch.equal(loaded[name], tensor), name
    # The swap ran once every bucket was verified, and saw its progress.
    (during,) = engine.status_in_swap
    assert during.update.phase == "swapping" and during.update.version == 2
    assert during.update.buckets_done == during.update.buckets_total > 1
    assert during.update.bytes_done == during.update.bytes_total == (root / "v2" / WEIGHTS_FILE).stat().st_size
    # No file: nothing in the download directory, and the shared memory is gone after the swap.
    assert not downloads.exists() or not any(downloads.iterdir())
    assert not segment_exists(engine.segments[0])


def test_the_newest_update_wins_and_repeats_change_nothing(setup):
    engine, updater, root, _ = setup
    updates = {v: publish(root, v) for v in (1, 2, 3)}

    async def run():
        engine.hold.clear()
        assert updater.submit(updates[1]).outcome == "queued"
        await engine.entered.wait()  # v1 is swapping, held
        assert updater.submit(updates[2]).outcome == "queued"
        assert updater.submit(updates[3]).outcome == "queued"  # replaces v2 in the queue
        outcomes = [updater.submit(updates[v]).outcome for v in (3, 2, 1)]
        assert outcomes == ["pending", "superseded", "pending"]
        during = updater.status()
        waiter = asyncio.ensure_future(updater.apply(updates[2]))  # superseded: waits for v3
        engine.hold.set()
        await waiter
        return during

    during = asyncio.run(run())
    assert (during.version, during.update.version, during.update.phase, during.queued) == (0, 1, "swapping", 3)
    assert [version for version, _ in engine.swapped] == [1, 3]
    assert updater.status() == WeightsStatus(version=3)
    # Served now: a repeat is a no-op, an older version is refused.
    assert updater.submit(updates[3]).outcome == "served"
    with pytest.raises(StaleVersion, match="version 2 is older than the served version 3"):
        updater.submit(updates[2])
    assert len(engine.swapped) == 2


def test_a_forced_update_reloads_the_served_version(setup):
    engine, updater, root, _ = setup
    update = publish(root, 0)
    assert asyncio.run(_submit(updater, update)) == "served"
    asyncio.run(updater.apply(update, force=True))
    assert [version for version, _ in engine.swapped] == [0]


async def _submit(updater, update):
    return updater.submit(update).outcome


def test_a_failed_update_is_reported_and_frees_its_memory(setup, monkeypatch):
    engine, updater, root, _ = setup
    wrong = publish(root, 4, {"embed.weight": torch.zeros(3, 3)})
    missing = WeightUpdate(version=5, uri="file:///nowhere", manifest="file:///nowhere/manifest.json",
                           transport="file")
    created: list[str] = []
    original = SharedWeights.__init__

    def note(self, size):
        original(self, size)
        created.append(self.name)

    monkeypatch.setattr(SharedWeights, "__init__", note)
    with pytest.raises(UpdateFailed, match="weights do not fit the served model"):
        asyncio.run(updater.apply(wrong))
    failure = updater.status().last_failure
    assert failure.version == 4 and "WeightsError: weights do not fit" in failure.reason
    with pytest.raises(UpdateFailed, match="nowhere"):
        asyncio.run(updater.apply(missing))
    assert updater.status().last_failure.version == 5
    assert engine.swapped == [] and engine.version == 0
    assert created and not any(segment_exists(name) for name in created)
    # The failure stays on show after a later version lands.
    good = publish(root, 6)
    asyncio.run(updater.apply(good))
    status = updater.status()
    assert status.version == 6 and status.last_failure.version == 5


def test_the_header_check_reads_the_version_in_memory(tmp_path):
    path = tmp_path / WEIGHTS_FILE
    save_file(state(1.0), path)
    data = path.read_bytes()
    segment = SharedWeights(len(data))
    try:
        segment.buf[: len(data)] = data
        assert segment.header() == read_header(path)
        views = dict(tensors(segment.buf))
        for name, tensor in state(1.0).items():
            assert torch.equal(views[name], tensor)
        del views
        segment.buf[:8] = b"\xff" * 8
        with pytest.raises(WeightsError, match="not a safetensors file"):
            segment.header()
    finally:
        segment.close()
    assert not segment_exists(segment.name)


def test_the_push_route_answers_at_once_and_the_client_waits_for_the_version(setup):
    """The HTTP contract on the real app and the real client: 202 while the update runs in the background,
    GET /v1/weights shows it, 409 for an older version, 422 for a transport the worker does not know."""
    import httpx

    from services.rollout.app import create_app
    from services.rollout.settings import RolloutSettings
    from shared.api.rollout import RolloutClient

    engine, updater, root, _ = setup
    engine.dead_reason = None
    app = create_app(RolloutSettings(auth={"token": "s3cret"}), engine, updater, RolloutMetrics())
    auth = {"Authorization": "Bearer s3cret"}
    body = {v: publish(root, v).model_dump(mode="json", exclude_none=True) for v in (1, 2)}

    async def run():
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as http, \
                RolloutClient("http://worker", "s3cret", transport=transport) as client:
            engine.hold.clear()
            first = await http.post("/v1/weights", json=body[1], headers=auth)
            await engine.entered.wait()
            during = (await http.get("/v1/weights")).json()
            second = await client.push_weights(WeightUpdate.model_validate(body[2]))
            again = await http.post("/v1/weights", json=body[1], headers=auth)
            ftp = body[2] | {"version": 3, "transport": "ftp"}
            unknown = await http.post("/v1/weights", json=ftp, headers=auth)
            engine.hold.set()
            status = await client.wait_for_version(2, timeout_s=30, poll_s=0.01)
            stale = await http.post("/v1/weights", json=body[1], headers=auth)
            return first, during, second, again, unknown, status, stale

    first, during, second, again, unknown, status, stale = asyncio.run(run())
    assert (first.status_code, first.json()) == (202, {"version": 1, "outcome": "queued"})
    assert during["version"] == 0 and during["update"]["version"] == 1 and during["update"]["phase"] == "swapping"
    assert (second.version, second.outcome) == (2, "queued")
    assert (again.status_code, again.json()["outcome"]) == (202, "pending")
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["body", "transport"]
    assert status == WeightsStatus(version=2)
    assert stale.status_code == 409 and "older than the served version 2" in stale.text
