"""Weight publishing: files served over HTTP, the Redis record, pushes with the bearer token to live
workers only (a real rollout service that fetches and swaps the weights), and a dead worker that costs
retries but never an exception."""

import asyncio
import threading
import time

import httpx
import pytest
import torch

from launcher.processes import free_port
from services.learner.app import BackgroundServer, StatusSource, create_app
from services.learner.metrics import StepMetrics
from services.learner.weights import Publisher, Release, WeightStore
from shared.api.rollout import RolloutClient
from shared.api.weights import auth_header, manifest_url
from shared.bus import Keys, WeightsRecordStore, WorkerRegistry
from shared.modeling import load_model, load_tokenizer
from shared.records import LearnerStatus, metrics_file
from shared.weights.manifest import Manifest
from shared.weights.receiver import Held, receive_version
from shared.weights.settings import WeightsSettings
from shared.weights.transports import open_origin, open_transport
from tests.helpers.records import step_record
from tests.helpers.rollout import TOKEN
from tests.helpers.workers import register, served_version, wait_for, weight_swaps

pytestmark = pytest.mark.integration


def test_store_serves_and_prunes_versions(tmp_path, default_init_dir):
    model, tokenizer = load_model(default_init_dir), load_tokenizer(default_init_dir)
    store = WeightStore(tmp_path / "weights", keep=2, keep_every=2)
    dropped = []
    for version in range(6):
        store.save(model, model.state_dict(), version, tokenizer)
        dropped += store.prune(version)
    # The newest two, and the milestones (multiples of 2) however old; what was dropped is said (the
    # learner retires those versions in its weight transport).
    assert store.versions() == [0, 2, 4, 5]
    assert dropped == [1, 3]
    metrics = StepMetrics(metrics_file(tmp_path))
    metrics.record(step_record(1, loss=0.5, staleness_hist={"0": 3}))
    port = free_port()
    status = LearnerStatus(phase="training", step=1)
    server = BackgroundServer(create_app(lambda: status, store, metrics, TOKEN), "127.0.0.1", port)
    server.start()
    try:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/v1/weights/2").status_code == 401  # no token, no weights
        body = httpx.get(f"{base}/v1/weights/2", headers=auth_header(TOKEN)).content
        assert body == store.file(2).read_bytes()
        assert httpx.get(f"{base}/v1/weights/1", headers=auth_header(TOKEN)).status_code == 404
        assert httpx.get(f"{base}/v1/status").json() == {"phase": "training", "step": 1}
        text = httpx.get(f"{base}/metrics").text
        assert "learner_loss 0.5" in text and "learner_staleness_hist_0 3.0" in text
    finally:
        server.stop()
    # A version is a complete model folder: it loads back into the model (tied embeddings written
    # once), with the tokenizer and chat template of the model it was trained from.
    reloaded = load_model(store.directory(2))
    for (name, a), b in zip(model.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(a, b), name
    served_tokenizer = load_tokenizer(store.directory(2))
    assert served_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert served_tokenizer.chat_template == tokenizer.chat_template
    assert (store.directory(2) / "generation_config.json").is_file()


def test_push_reaches_live_workers_and_survives_dead_ones(
    tmp_path, redis_client, namespace, caplog, default_init_dir, rollout_worker
):
    keys = Keys(namespace)
    model = load_model(default_init_dir)
    store = WeightStore(tmp_path / "weights", keep=2, bucket_bytes=1 << 20)
    store.save(model, model.state_dict(), 5, load_tokenizer(default_init_dir))
    port = free_port()
    app = create_app(StatusSource(), store, StepMetrics(metrics_file(tmp_path)), TOKEN)
    served_paths: list[str] = []

    @app.middleware("http")
    async def note_path(request, call_next):  # which routes the worker's fetch used
        served_paths.append(request.url.path)
        return await call_next(request)

    server = BackgroundServer(app, "127.0.0.1", port)
    server.start()
    uri = f"http://127.0.0.1:{port}/v1/weights/5"
    manifest = manifest_url(f"http://127.0.0.1:{port}", 5)

    registry = WorkerRegistry(redis_client, keys)
    register(redis_client, keys, "live", rollout_worker)
    register(redis_client, keys, "dead", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    register(redis_client, keys, "expired", rollout_worker, age_s=120)  # heartbeat too old: not pushed to
    register(redis_client, keys, "current", rollout_worker, version=5)  # already has the version
    assert sorted(w.worker_id for w in registry.live(ttl_s=30)) == ["current", "dead", "live"]
    swaps_before = weight_swaps(rollout_worker)

    records = WeightsRecordStore(redis_client, keys)
    publisher = Publisher(records, registry, TOKEN, worker_ttl_s=30, retries=2, timeout_s=120)
    publisher.publish(5, uri, manifest, "http")
    deadline = time.monotonic() + 180
    while publisher.last_report is None and time.monotonic() < deadline:
        time.sleep(0.1)
    report = publisher.last_report
    assert report is not None and report.pushed == ["live"] and report.failed == ["dead"]
    # Delivered means accepted: the worker fetches and swaps in the background.
    wait_for(lambda: served_version(rollout_worker) == 5, 180, "the worker to serve v5")
    # The worker fetched the version from the learner's server as its manifest and every bucket (not
    # the whole file), and serves version 5: one swap, not three.
    buckets = len(Manifest.model_validate_json(store.manifest_file(5).read_text()).buckets)
    assert buckets > 1
    assert sorted(served_paths) == sorted(["/v1/weights/5/manifest"] + [f"/v1/weights/5/buckets/{i}" for i in
                                                                        range(buckets)])
    assert served_version(rollout_worker) == 5
    assert weight_swaps(rollout_worker) == swaps_before + 1
    assert records.get().version == 5
    assert "push of v5 to dead failed (attempt 3/3)" in caplog.text

    # A wrong token is refused by the worker and not retried.
    caplog.clear()
    keys_b = Keys(namespace + "-b")
    other = Publisher(WeightsRecordStore(redis_client, keys_b), WorkerRegistry(redis_client, keys_b), "wrong",
                      worker_ttl_s=30, retries=3, timeout_s=30)
    register(redis_client, keys_b, "w", rollout_worker)
    other.publish(6, uri.replace("/5", "/6"))
    other.close(timeout=60)
    assert other.last_report.failed == ["w"]
    assert "push of v6 to w refused (HTTP 403" in caplog.text and "attempt" not in caplog.text
    assert served_version(rollout_worker) == 5
    publisher.close()
    server.stop()
    assert threading.active_count() < 50


@pytest.mark.parametrize("transport", ["http", "file"])
def test_versions_are_released_with_their_delta(tmp_path, redis_client, namespace, default_init_dir, transport):
    """The learner's release path (store, origin, record) with deltas on: each version after the first
    names its delta from the version before, and a receiver holding that version fetches the delta
    through the transport (with the token on http) and ends on the new version's exact bytes."""
    model, tokenizer = load_model(default_init_dir), load_tokenizer(default_init_dir)
    store = WeightStore(tmp_path / "weights", keep=2, bucket_bytes=256 << 10)
    settings = WeightsSettings(transport=transport, full_every=3)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = BackgroundServer(create_app(StatusSource(), store, StepMetrics(metrics_file(tmp_path)), TOKEN),
                              "127.0.0.1", port)
    server.start()
    keys = Keys(namespace)
    records = WeightsRecordStore(redis_client, keys)
    publisher = Publisher(records, WorkerRegistry(redis_client, keys), TOKEN, worker_ttl_s=30, retries=0,
                          timeout_s=10)
    origin = open_origin(settings, base_url)
    release = Release(store, origin, publisher, settings)
    held: Held | None = None
    paths = []
    try:
        for version in range(4):
            with torch.no_grad():  # an optimizer step's worth of change
                model.model.embed_tokens.weight[version] += 0.01
            store.save(model, model.state_dict(), version, tokenizer)
            release.submit(version)
            deadline = time.monotonic() + 60
            while (records.get() is None or records.get().version != version) and time.monotonic() < deadline:
                time.sleep(0.05)
            record = records.get()
            assert record.version == version and record.transport == transport
            # v0 has nothing before it, v3 is a multiple of full_every: both whole only.
            assert (record.delta is not None) == (version in (1, 2))
            if record.delta is not None:
                assert record.delta.base_version == version - 1

            async def fetch(record=record, held=held):
                async with open_transport(transport, TOKEN) as receiver:
                    return await receive_version(receiver, record.manifest, record.delta, held)

            received = asyncio.run(fetch())
            assert bytes(received.blob) == store.file(version).read_bytes()
            paths.append(received.path)
            held = Held(version, received.blob)
        if transport == "http":  # a delta is guarded like the weights; v3 (a multiple of full_every) has none
            assert httpx.get(f"{base_url}/v1/weights/2/delta/manifest").status_code == 401
            assert httpx.get(f"{base_url}/v1/weights/3/delta/manifest", headers=auth_header(TOKEN)).status_code == 404
    finally:
        release.drain()
        publisher.close()
        server.stop()
    assert paths == ["full", "delta", "delta", "full"]
    assert store.versions() == [2, 3]  # pruned after each release, v1 only once v2's delta was written


def test_a_worker_takes_the_delta_of_the_version_after_the_one_it_serves(
    tmp_path, redis_client, namespace, default_init_dir, rollout_worker
):
    """A real worker (vLLM) pushed two versions: the first whole (it has no delta), the second by its
    delta alone, from the bytes of the first that the worker kept."""
    keys = Keys(namespace)
    model, tokenizer = load_model(default_init_dir), load_tokenizer(default_init_dir)
    store = WeightStore(tmp_path / "weights", keep=3, bucket_bytes=1 << 20)
    settings = WeightsSettings(full_every=100)
    port = free_port()
    app = create_app(StatusSource(), store, StepMetrics(metrics_file(tmp_path)), TOKEN)
    served_paths: list[str] = []

    @app.middleware("http")
    async def note_path(request, call_next):
        served_paths.append(request.url.path)
        return await call_next(request)

    server = BackgroundServer(app, "127.0.0.1", port)
    server.start()
    registry = WorkerRegistry(redis_client, keys)
    publisher = Publisher(WeightsRecordStore(redis_client, keys), registry, TOKEN, worker_ttl_s=30, retries=2,
                          timeout_s=120)
    release = Release(store, open_origin(settings, f"http://127.0.0.1:{port}"), publisher, settings)
    first = served_version(rollout_worker) + 1
    register(redis_client, keys, "live", rollout_worker, version=first - 1)
    try:
        for version in (first, first + 1):
            with torch.no_grad():
                model.model.embed_tokens.weight[version % 100] += 0.01
            store.save(model, model.state_dict(), version, tokenizer)
            release.submit(version)
            deadline = time.monotonic() + 180
            while served_version(rollout_worker) != version and time.monotonic() < deadline:
                time.sleep(0.2)
            assert served_version(rollout_worker) == version
    finally:
        release.drain()
        publisher.close()
        server.stop()
    second = f"/v1/weights/{first + 1}"
    assert f"{second}/delta/manifest" in served_paths and f"{second}/delta/buckets/0" in served_paths
    assert not any(path.startswith(f"{second}/buckets/") for path in served_paths)  # nothing of the full file
    assert any(path.startswith(f"/v1/weights/{first}/buckets/") for path in served_paths)

    async def fetches(path: str) -> float:
        async with RolloutClient(rollout_worker, timeout_s=10) as worker:
            return await worker.metric("rollout_weight_fetches_total", path=path) or 0.0

    assert asyncio.run(fetches("delta")) >= 1
