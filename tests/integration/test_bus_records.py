"""The weights record and the worker registry on a real redis-server."""

from __future__ import annotations

import time

import pytest

from shared.bus import CodecError, Keys, WeightsRecordStore, WorkerRegistry
from shared.messages import WeightsRecord, WorkerInfo

pytestmark = pytest.mark.integration


def test_weights_record(redis_client, namespace):
    keys = Keys(namespace)
    records = WeightsRecordStore(redis_client, keys)
    assert records.get() is None
    records.set(WeightsRecord(version=4, uri="file:///w"))
    assert records.get() == WeightsRecord(version=4, uri="file:///w")
    redis_client.set(keys.weights, b"not a record")  # what no code of the project writes
    with pytest.raises(CodecError, match=f"{keys.weights} holds an unreadable record"):
        records.get()


def test_registry(redis_client, namespace):
    registry = WorkerRegistry(redis_client, Keys(namespace))
    now = time.time()
    registry.register(WorkerInfo(worker_id="worker-a", url="http://127.0.0.1:1", version=4, heartbeat_at=now))
    registry.register(WorkerInfo(worker_id="old", url="http://127.0.0.1:2", version=1, heartbeat_at=now - 120))
    info = registry.get("worker-a")
    assert info.version == 4 and info.url == "http://127.0.0.1:1" and time.time() - info.heartbeat_at < 5
    assert set(registry.all()) == {"worker-a", "old"}
    assert [w.worker_id for w in registry.live(ttl_s=30)] == ["worker-a"]  # old's heartbeat is too old
    registry.deregister("worker-a")
    assert registry.get("worker-a") is None
    assert registry.live(ttl_s=30) == []
