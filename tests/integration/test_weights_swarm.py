"""The swarm transport with real libtorrent sessions on loopback, the learner's real API serving the
manifest and the torrent behind the token, and peers introduced through a real Redis registry: the
versions arrive byte-identical and verified, a later joiner takes pieces from an earlier worker, a
worker keeps one version on its storage, a node without the job's token gets nothing, and a real
rollout worker (vLLM) takes a pushed version through the swarm."""

import asyncio
import time

import httpx
import pytest
import torch
from safetensors.torch import load, save_file

from launcher.processes import free_port
from services.learner.app import BackgroundServer, StatusSource, create_app
from services.learner.metrics import StepMetrics
from services.learner.weights import WeightStore
from shared.api.http import ServiceRefused
from shared.api.rollout import RolloutClient, WeightUpdate
from shared.api.weights import WEIGHTS_FILE, swarm_url
from shared.bus import Keys, WorkerRegistry
from shared.messages import WorkerInfo
from shared.modeling import load_model, load_tokenizer
from shared.records import metrics_file
from shared.weights.manifest import write_manifest
from shared.weights.receiver import Held, receive_version
from shared.weights.settings import SwarmSettings
from shared.weights.transport import receive
from shared.weights.transports.swarm import SwarmNode, SwarmOffer, SwarmOrigin, SwarmTransport
from tests.helpers.rollout import TOKEN, start_rollout
from tests.helpers.workers import served_version, weight_swaps

pytestmark = pytest.mark.integration

BUCKET = 64 << 10
NODE = SwarmSettings(introduce_interval_s=0.2)


def write_version(store: WeightStore, version: int, megabytes: float = 1.0, moved_from: bytes | None = None) -> bytes:
    """A version's file and manifest: random, or ``moved_from`` (an earlier version's file) with 2% of
    its values moved, as a training step moves them."""
    directory = store.directory(version)
    directory.mkdir(parents=True)
    generator = torch.Generator().manual_seed(version)
    if moved_from is None:
        rows = int(megabytes * (1 << 20)) // (4 * 256)
        weights = torch.randn(rows, 256, generator=generator)
    else:
        weights = load(moved_from)["w"]
        moved = torch.rand(weights.shape, generator=generator) < 0.02
        weights[moved] += 0.01
    save_file({"w": weights}, directory / WEIGHTS_FILE)
    write_manifest(directory / WEIGHTS_FILE, version, BUCKET)
    return (directory / WEIGHTS_FILE).read_bytes()


@pytest.fixture
def learner(tmp_path):
    """The learner's API over a store, and its swarm origin (uploads limited to 0.5 MB/s, so a
    version takes about 2 s from the origin alone)."""
    store = WeightStore(tmp_path / "weights", keep=3, bucket_bytes=BUCKET)
    port = free_port()
    server = BackgroundServer(create_app(StatusSource(), store, StepMetrics(metrics_file(tmp_path)), TOKEN),
                              "127.0.0.1", port)
    server.start()
    origin = SwarmOrigin(SwarmSettings(upload_mb_s=0.5), f"http://127.0.0.1:{port}", TOKEN, "127.0.0.1")
    try:
        yield store, origin
    finally:
        origin.close()
        server.stop()


def node(tmp_path, name: str, peers=tuple, token: str = TOKEN) -> SwarmNode:
    storage = tmp_path / name
    storage.mkdir()
    return SwarmNode(NODE.model_copy(update={"storage_dir": str(storage)}), token, "127.0.0.1", "127.0.0.1", peers)


def take(swarm: SwarmNode, ref: str, token: str = TOKEN) -> bytes:
    async def go() -> bytes:
        async with SwarmTransport(swarm, token, timeout_s=60) as transport:
            _, blob = await receive(transport, ref, concurrency=8)
        return bytes(blob)

    return asyncio.run(go())


def test_receivers_get_verified_versions_and_keep_only_the_newest(tmp_path, learner):
    store, origin = learner
    first = write_version(store, 1)
    ref = origin.publish(1, store.directory(1))
    a, b = node(tmp_path, "a"), node(tmp_path, "b")
    try:
        assert take(a, ref.manifest) == first
        assert take(b, ref.manifest) == first
        assert a.versions() == [1]
        v1_files = next((tmp_path / "a").glob("*/v1"))

        second = write_version(store, 2)
        ref2 = origin.publish(2, store.directory(2))
        assert take(a, ref2.manifest) == second
        # Held the newer version: the older one's swarm left and its pieces deleted.
        assert a.versions() == [2] and not v1_files.exists()

        origin.retire(1)
        assert origin.node.versions() == [2]
    finally:
        a.close()
        b.close()


def test_a_worker_holding_the_base_takes_the_delta_and_a_joiner_the_whole_version(tmp_path, learner):
    store, origin = learner
    first = write_version(store, 1)
    origin.publish(1, store.directory(1))
    second = write_version(store, 2, moved_from=first)
    delta_manifest = store.write_delta(2)  # as the learner's release does
    ref = origin.publish(2, store.directory(2))
    assert ref.delta is not None and ref.delta.base_version == 1
    assert delta_manifest.total_bytes < len(second) / 4  # 2% of the values moved

    async def receive_v2(swarm: SwarmNode, held: Held | None):
        async with SwarmTransport(swarm, TOKEN, timeout_s=60) as transport:
            return await receive_version(transport, ref.manifest, ref.delta, held, concurrency=8)

    holder, joiner = node(tmp_path, "holder"), node(tmp_path, "joiner")
    try:
        by_delta = asyncio.run(receive_v2(holder, Held(1, first)))
        assert (by_delta.path, bytes(by_delta.blob)) == ("delta", second)
        assert by_delta.fetched_bytes == delta_manifest.total_bytes
        # It joined the delta's swarm only, and went on seeding it.
        assert holder.handle(2, delta=True).status().is_seeding and holder.handle(2) is None
        assert holder.versions() == [2]

        whole = asyncio.run(receive_v2(joiner, None))
        assert (whole.path, bytes(whole.blob)) == ("full", second)
        assert joiner.handle(2).status().is_seeding and joiner.handle(2, delta=True) is None

        origin.retire(2)  # both of the version's torrents leave the origin's session
        assert origin.node.versions() == [1] and origin.node.handle(2, delta=True) is None
    finally:
        holder.close()
        joiner.close()


def test_a_joiner_takes_pieces_from_a_worker_introduced_through_the_registry(
    tmp_path, learner, redis_client, namespace
):
    store, origin = learner
    data = write_version(store, 1)
    ref = origin.publish(1, store.directory(1))
    registry = WorkerRegistry(redis_client, Keys(namespace))

    def peers() -> list[str]:
        return registry.swarm_peers(ttl_s=30)

    early = node(tmp_path, "early", peers)
    joiner = node(tmp_path, "joiner", peers)
    try:
        assert take(early, ref.manifest) == data
        registry.register(WorkerInfo(worker_id="early", url="http://127.0.0.1:1", version=1,
                                     heartbeat_at=time.time(), swarm=early.address))
        registry.register(WorkerInfo(worker_id="gone", url="http://127.0.0.1:2", version=0,
                                     heartbeat_at=time.time() - 3600, swarm="127.0.0.1:9"))
        assert peers() == [early.address]  # a worker whose heartbeat stopped is not introduced

        assert take(joiner, ref.manifest) == data
        # The origin uploads at 0.5 MB/s: the early worker served part of the joiner's copy.
        assert early.handle(1).status().total_payload_upload > 0
        assert joiner.handle(1).status().total_payload_download >= len(data)
    finally:
        early.close()
        joiner.close()


def test_a_node_meets_at_most_max_peers_live_peers_and_replaces_those_that_leave(tmp_path, learner):
    store, origin = learner
    write_version(store, 1)
    ref = origin.publish(1, store.directory(1))
    registry = [f"127.0.0.1:{port}" for port in range(40001, 40011)]  # ten live entries (nobody listens)
    live = list(registry)
    (tmp_path / "n").mkdir()
    settings = NODE.model_copy(update={"storage_dir": str(tmp_path / "n"), "max_peers": 3})
    swarm = SwarmNode(settings, TOKEN, "127.0.0.1", "127.0.0.1", lambda: list(live))

    def workers_met() -> set[str]:
        return swarm.introduced(1) - {origin.node.address}

    def settle(condition) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline, workers_met()
            time.sleep(0.05)

    try:
        take(swarm, ref.manifest)
        settle(lambda: len(workers_met()) == 3)
        first = workers_met()
        assert first <= set(registry)
        time.sleep(3 * NODE.introduce_interval_s)
        assert workers_met() == first  # no more while the three are live
        # Two leave the registry: two others take their place, and no more.
        live[:] = [address for address in registry if address not in sorted(first)[:2]]
        settle(lambda: len(workers_met() & set(live)) == 3)
        time.sleep(3 * NODE.introduce_interval_s)
        assert len(workers_met()) == 5
    finally:
        swarm.close()


def test_a_node_without_the_jobs_token_gets_nothing(tmp_path, learner):
    store, origin = learner
    write_version(store, 1)
    ref = origin.publish(1, store.directory(1))
    member = node(tmp_path, "member")
    outsider = node(tmp_path, "outsider", token="not-the-job-token")
    try:
        take(member, ref.manifest)
        # Without the token the learner serves neither the manifest nor the torrent.
        with pytest.raises(ServiceRefused):
            take(outsider, ref.manifest, token="not-the-job-token")
        assert httpx.get(swarm_url(ref.manifest)).status_code == 401
        # With the torrent anyway (copied off a member), its certificate is not the job's: the TLS
        # handshake fails at the origin and at the member, and not one byte arrives.
        offer = SwarmOffer.model_validate_json((store.directory(1) / "swarm.json").read_text())
        offer.seeds.append(member.address)
        handle = outsider.take(offer)
        time.sleep(3)
        status = handle.status()
        assert status.total_payload_download == 0 and status.num_pieces == 0
    finally:
        member.close()
        outsider.close()


def test_a_rollout_worker_takes_a_pushed_version_through_the_swarm(
    tmp_path, learner, redis_url, namespace, default_init_dir
):
    store, origin = learner
    origin.node.session.apply_settings({"upload_rate_limit": 0})
    model = load_model(default_init_dir)
    store.save(model, model.state_dict(), 5, load_tokenizer(default_init_dir))
    ref = origin.publish(5, store.directory(5))
    process, url = start_rollout(
        tmp_path / "worker", default_init_dir,
        {"PRFT_REDIS__URL": redis_url, "PRFT_REDIS__NAMESPACE": namespace,
         "PRFT_ROLLOUT__SWARM__STORAGE_DIR": str(tmp_path / "worker-pieces")},
    )
    try:
        swaps_before = weight_swaps(url)

        async def push() -> int:
            async with RolloutClient(url, TOKEN, timeout_s=300) as worker:
                await worker.push_weights(
                    WeightUpdate(version=5, uri=ref.uri, manifest=ref.manifest, transport="swarm"))
                return (await worker.wait_for_version(5, timeout_s=300)).version

        assert asyncio.run(push()) == 5
        assert served_version(url) == 5 and weight_swaps(url) == swaps_before + 1
        # The version came through the swarm: the origin uploaded all of it (over TLS, to a certified peer),
        # and the worker still holds the version's pieces, to seed them to the workers after it.
        assert origin.node.handle(5).status().total_payload_upload >= store.file(5).stat().st_size
        held = list((tmp_path / "worker-pieces").glob(f"*/v5/{WEIGHTS_FILE}"))
        assert len(held) == 1 and held[0].read_bytes() == store.file(5).read_bytes()
    finally:
        process.stop()
    assert not list((tmp_path / "worker-pieces").glob("*/v5"))  # a worker that stops leaves no pieces
