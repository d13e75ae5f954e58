"""Weight publishing: files served over HTTP, the Redis record, pushes with the bearer token to live
workers only, and a dead worker that costs retries but never an exception."""

import threading
import time

import httpx
import pytest
import torch
from fastapi import FastAPI, Header, HTTPException

from services.learner.metrics import JsonlLog, StepMetrics
from services.learner.status import BackgroundServer, make_app
from services.learner.weights import Publisher, WeightStore, live_workers
from shared.codec import decode_value, encode_value
from shared.messages import WeightsRecord, WeightUpdate, WorkerInfo
from shared.modeling import load_model
from shared.processes import free_port
from shared.streams import Keys

pytestmark = pytest.mark.integration

TOKEN = "s3cret"


class FakeWorker:
    """A real HTTP endpoint that accepts weight pushes like a rollout worker (and records them)."""

    def __init__(self):
        self.received: list[WeightUpdate] = []
        self.refused = 0
        app = FastAPI()

        @app.post("/v1/weights")
        def push(update: WeightUpdate, authorization: str = Header("")):
            if authorization != f"Bearer {TOKEN}":
                self.refused += 1
                raise HTTPException(401, "bad token")
            self.received.append(update)
            return {"version": update.version}

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = BackgroundServer(app, "127.0.0.1", self.port)
        self.server.start()


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
    server = BackgroundServer(make_app(lambda: {"step": 1}, store, metrics), "127.0.0.1", port)
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


def test_push_reaches_live_workers_and_survives_dead_ones(redis_client, redis_url, namespace, caplog):
    keys = Keys(namespace)
    live, wrong_token = FakeWorker(), FakeWorker()
    register(redis_client, keys, "live", live.url)
    register(redis_client, keys, "dead", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    register(redis_client, keys, "expired", live.url, age_s=120)  # heartbeat too old: not pushed to
    register(redis_client, keys, "current", live.url, version=5)  # already has the version
    assert sorted(w.worker_id for w in live_workers(redis_client, keys, ttl_s=30)) == ["current", "dead", "live"]

    publisher = Publisher(redis_client, keys, TOKEN, worker_ttl_s=30, retries=2, timeout_s=2)
    publisher.publish(5, "http://127.0.0.1:1/v1/weights/5")
    deadline = time.monotonic() + 30
    while publisher.last_report is None and time.monotonic() < deadline:
        time.sleep(0.1)
    report = publisher.last_report
    assert report is not None and report.pushed == ["live"] and report.failed == ["dead"]
    assert [u.version for u in live.received] == [5]
    assert decode_value(WeightsRecord, redis_client.get(keys.weights)).version == 5
    assert "push of v5 to dead failed (attempt 3/3)" in caplog.text

    # A wrong token is refused by the worker and not retried.
    other = Publisher(redis_client, Keys(namespace + "-b"), "wrong", worker_ttl_s=30, retries=3, timeout_s=2)
    register(redis_client, Keys(namespace + "-b"), "w", wrong_token.url)
    other.publish(1, "http://127.0.0.1:1/v1/weights/1")
    other.close(timeout=30)
    assert wrong_token.refused == 1 and other.last_report.failed == ["w"]
    publisher.close()
    for worker in (live, wrong_token):
        worker.server.stop()
    assert threading.active_count() < 50
