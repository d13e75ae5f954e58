"""Probes of a rollout worker as the learner sees it: the weights version it serves, its count of
weight swaps, and its entry in the job's worker registry."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shared.bus import WorkerRegistry
from shared.messages import WorkerInfo


def served_version(url: str) -> int:
    return httpx.get(f"{url}/v1/weights", timeout=10).json()["version"]


def weight_swaps(url: str) -> float:
    """The worker's count of weight swaps that succeeded (its Prometheus counter)."""
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text)
    return next(
        (
            s.value
            for f in families
            for s in f.samples
            if s.name == "rollout_weight_swaps_total" and s.labels.get("outcome") == "ok"
        ),
        0.0,
    )


def register(client, keys, worker_id, url, version=0, age_s=0.0):
    info = WorkerInfo(worker_id=worker_id, url=url, version=version, heartbeat_at=time.time() - age_s)
    WorkerRegistry(client, keys).register(info)
