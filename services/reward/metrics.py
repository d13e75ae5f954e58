"""Prometheus metrics of the reward service, in a registry of its own (one per app)."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.api.reward import ScoreItem, ScoreResult, ScoreStatus

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_ROUTES = ("/v1/score", "/healthz", "/metrics", "/openapi.json", "/docs")


class RewardMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "reward_requests", "HTTP requests by route and status code", ["route", "code"], registry=self.registry
        )
        self.request_seconds = Histogram(
            "reward_request_seconds",
            "Latency of POST /v1/score, receipt to response",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.items = Counter(
            "reward_items", "Scored items by verifier and status", ["verifier", "status"], registry=self.registry
        )
        self.item_seconds = Histogram(
            "reward_item_seconds",
            "Time of one item in a verifier process",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.timeouts = Counter("reward_item_timeouts", "Items past their deadline", registry=self.registry)
        self.refusals = Counter(
            "reward_item_refusals",
            "Items refused before verification (status timeout): they could only have ended at the deadline",
            registry=self.registry,
        )
        self.worker_restarts = Counter(
            "reward_worker_restarts", "Verifier processes replaced, by reason", ["reason"], registry=self.registry
        )
        self.workers = Gauge("reward_workers", "Live verifier processes", registry=self.registry)
        self.queued = Gauge("reward_queued_items", "Items waiting for a verifier process", registry=self.registry)

    # PoolObserver
    def item_done(self, item: ScoreItem, result: ScoreResult, seconds: float) -> None:
        self.items.labels(item.verifier, result.status.value).inc()
        self.item_seconds.observe(seconds)
        if result.status is ScoreStatus.refused:
            self.refusals.inc()
        elif result.status is ScoreStatus.timeout:
            self.timeouts.inc()

    def worker_restarted(self, reason: str) -> None:
        self.worker_restarts.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware counting every HTTP response by route and code, rejections included."""

    def __init__(self, app: ASGIApp, metrics: RewardMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Unknown paths share one label: a scanner must not create a time series per URL.
        route = scope["path"] if scope["path"] in _ROUTES else "other"
        started = time.perf_counter()
        code = 500  # what the client sees if the app raises before responding

        async def send_and_record(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.requests.labels(route, str(code)).inc()
            if route == "/v1/score" and code == 200:
                self.metrics.request_seconds.observe(time.perf_counter() - started)
