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
from services.learner.app import BackgroundServer, create_app
from services.learner.metrics import JsonlLog, StepMetrics
from services.learner.weights import Publisher, WeightStore, live_workers
from shared.api.rollout import RolloutClient
from shared.codec import decode_value, encode_value
from shared.messages import WeightsRecord, WorkerInfo
from shared.modeling import load_model
from shared.streams import Keys
from tests.integration.test_rollout_http import TOKEN

pytestmark = pytest.mark.integration


def served_version(url: str) -> int:
    async def version() -> int:
        async with RolloutClient(url, timeout_s=10) as worker:
            return await worker.version()

    return asyncio.run(version())


def weight_swaps(url: str) -> float:
    """The worker's count of weight swaps that succeeded (its Prometheus counter)."""

    async def swaps() -> float:
        async with RolloutClient(url, timeout_s=10) as worker:
            return await worker.metric("rollout_weight_swaps_total", outcome="ok") or 0.0

    return asyncio.run(swaps())


def register(client, keys, worker_id, url, version=0, age_s=0.0):
    info = WorkerInfo(worker_id=worker_id, url=url, version=version, heartbeat_at=time.time() - age_s)
    client.hset(keys.workers, worker_id, encode_value(info))


def test_store_serves_and_prunes_versions(tmp_path, default_init_dir):
    model = load_model(default_init_dir)
    store = WeightStore(tmp_path / "weights", keep=2)
    for version in range(3):
        store.save(model, model.state_dict(), version)
    assert store.versions() == [1, 2]
    metrics = StepMetrics(JsonlLog(tmp_path / "m.jsonl"))
    metrics.record({"step": 1, "loss": 0.5, "staleness_hist": {"0": 3}})
    port = free_port()
    server = BackgroundServer(create_app(lambda: {"step": 1}, store, metrics), "127.0.0.1", port)
    server.start()
    try:
        base = f"http://127.0.0.1:{port}"
        body = httpx.get(f"{base}/v1/weights/2").content
        assert body == store.file(2).read_bytes()
        assert httpx.get(f"{base}/v1/weights/0").status_code == 404
        assert httpx.get(f"{base}/v1/status").json() == {"step": 1}
        text = httpx.get(f"{base}/metrics").text
        assert "learner_loss 0.5" in text and "learner_staleness_hist_0 3.0" in text
    finally:
        server.stop()
    # The file loads back into the model (tied embeddings written once).
    reloaded = load_model(store.directory(2))
    for (name, a), b in zip(model.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_push_reaches_live_workers_and_survives_dead_ones(
    tmp_path, redis_client, namespace, caplog, default_init_dir, rollout_worker
):
    keys = Keys(namespace)
    model = load_model(default_init_dir)
    store = WeightStore(tmp_path / "weights", keep=2)
    store.save(model, model.state_dict(), 5)
    port = free_port()
    app = create_app(lambda: {}, store, StepMetrics(JsonlLog(tmp_path / "m.jsonl")))
    server = BackgroundServer(app, "127.0.0.1", port)
    server.start()
    uri = f"http://127.0.0.1:{port}/v1/weights/5"

    register(redis_client, keys, "live", rollout_worker)
    register(redis_client, keys, "dead", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    register(redis_client, keys, "expired", rollout_worker, age_s=120)  # heartbeat too old: not pushed to
    register(redis_client, keys, "current", rollout_worker, version=5)  # already has the version
    assert sorted(w.worker_id for w in live_workers(redis_client, keys, ttl_s=30)) == ["current", "dead", "live"]
    swaps_before = weight_swaps(rollout_worker)

    publisher = Publisher(redis_client, keys, TOKEN, worker_ttl_s=30, retries=2, timeout_s=120)
    publisher.publish(5, uri)
    deadline = time.monotonic() + 180
    while publisher.last_report is None and time.monotonic() < deadline:
        time.sleep(0.1)
    report = publisher.last_report
    assert report is not None and report.pushed == ["live"] and report.failed == ["dead"]
    # The worker fetched the file from the learner's server and serves version 5: one swap, not three.
    assert served_version(rollout_worker) == 5
    assert weight_swaps(rollout_worker) == swaps_before + 1
    assert decode_value(WeightsRecord, redis_client.get(keys.weights)).version == 5
    assert "push of v5 to dead failed (attempt 3/3)" in caplog.text

    # A wrong token is refused by the worker and not retried.
    caplog.clear()
    other = Publisher(redis_client, Keys(namespace + "-b"), "wrong", worker_ttl_s=30, retries=3, timeout_s=30)
    register(redis_client, Keys(namespace + "-b"), "w", rollout_worker)
    other.publish(6, uri.replace("/5", "/6"))
    other.close(timeout=60)
    assert other.last_report.failed == ["w"]
    assert "push of v6 to w refused (HTTP 403" in caplog.text and "attempt" not in caplog.text
    assert served_version(rollout_worker) == 5
    publisher.close()
    server.stop()
    assert threading.active_count() < 50
