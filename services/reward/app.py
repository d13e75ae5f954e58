"""The reward service's HTTP API: POST /v1/score, GET /v1/verifiers, GET /healthz, GET /metrics, and /openapi.json."""

# No ``from __future__ import annotations``: FastAPI reads the endpoint's annotation, a class built
# in create_app, at definition time.

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse, Response

from services.reward.limits import BodySizeLimit, request_model
from services.reward.metrics import CONTENT_TYPE, RequestMetrics, RewardMetrics
from services.reward.pool import VerifierPool
from services.reward.registry import VerifierRegistry
from services.reward.settings import RewardSettings
from services.reward.verifiers import VerifierOptions
from shared.api.reward import Health, ScoreResponse, VerifierList


def create_app(settings: RewardSettings) -> FastAPI:
    metrics = RewardMetrics()
    pool = VerifierPool(
        size=settings.workers,
        item_timeout_s=settings.item_timeout_s,
        memory_mb=settings.worker_memory_mb,
        start_timeout_s=settings.worker_start_timeout_s,
        observer=metrics,
        options=VerifierOptions(strictness=settings.strictness),
    )
    verifiers = VerifierRegistry(settings.verifier_paths)
    ScoreRequest = request_model(settings, verifiers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await pool.start()
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="Prefix-RFT reward service",
        version="1.0",
        description="Verified rewards for math answers; every item runs in a verifier process under a deadline.",
        lifespan=lifespan,
    )
    app.state.pool = pool
    app.state.metrics = metrics
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)  # added last, so outermost: sees every 413 too

    @app.post("/v1/score", response_model=ScoreResponse)
    async def score(request: ScoreRequest) -> Response:
        results = await pool.score(request.items)
        # Serialised by pydantic in one go; FastAPI would validate the results a second time.
        return Response(ScoreResponse(results=results).model_dump_json(), media_type="application/json")

    @app.get("/v1/verifiers", response_model=VerifierList)
    async def list_verifiers() -> VerifierList:
        return VerifierList(verifiers=verifiers.infos())

    @app.get("/healthz", response_model=Health)
    async def healthz() -> JSONResponse:
        health = Health(
            status="ok" if pool.pids else "no live verifier processes",
            workers=len(pool.pids),
            worker_pids=pool.pids,
            queued_items=pool.queued,
            worker_restarts=pool.restarts,
        )
        return JSONResponse(health.model_dump(), status_code=200 if pool.pids else 503)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        metrics.workers.set(len(pool.pids))
        metrics.queued.set(pool.queued)
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    detail = []
    for err in exc.errors():
        msg = err["msg"]
        if err["type"] == "json_invalid" and "error" in err.get("ctx", {}):
            msg = f"{msg}: {err['ctx']['error']}"
        detail.append({"loc": list(err["loc"]), "msg": msg, "type": err["type"]})
    # Not FastAPI's default handler: it echoes each bad input, which can be megabytes long or hold
    # lone surrogates that no UTF-8 response can carry (a 500). ensure_ascii escapes those in names.
    return Response(json.dumps({"detail": detail}, ensure_ascii=True), status_code=422, media_type="application/json")
