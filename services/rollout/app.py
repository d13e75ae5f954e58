"""The rollout service's HTTP API: POST /v1/generate, GET|POST /v1/weights, /healthz, /readyz, /metrics, and
the OpenAI-compatible routes of ``openai_api`` (GET /v1/models, POST /v1/completions, POST /v1/chat/completions)."""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at definition time.

import json
import logging

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse, Response

from services.rollout.engine import EngineFailed, EngineRequest, RequestRejected, RolloutEngine
from services.rollout.metrics import CONTENT_TYPE, RolloutMetrics
from services.rollout.openai_api import OPENAI_ROUTES, add_openai_routes, openai_error, openai_validation_error
from services.rollout.settings import RolloutSettings
from services.rollout.updates import StaleVersion, WeightUpdater
from shared.api.rollout import GenerateRequest, GenerateResponse, WeightsAccepted, WeightsStatus, WeightUpdate
from shared.api.weights import PUSH_ROUTE, bearer_guard
from shared.bodylimit import BodySizeLimit

log = logging.getLogger(__name__)


class HTTPProblem(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


def create_app(
    settings: RolloutSettings, engine: RolloutEngine, updater: WeightUpdater, metrics: RolloutMetrics
) -> FastAPI:
    app = FastAPI(
        title="Prefix-RFT rollout service",
        version="1.0",
        description="vLLM generation with demonstration prefixes, version-tagged samples and hot weight swaps.",
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPProblem, _problem)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    token = settings.auth.token.get_secret_value()
    authorised = bearer_guard(token, "weight pushes are disabled: this worker", HTTPProblem)

    def require_ready() -> None:
        if not engine.ready:
            raise HTTPProblem(503, engine.dead_reason or "the engine is loading")

    @app.post("/v1/generate", response_model=GenerateResponse)
    async def generate(request: GenerateRequest) -> Response:
        require_ready()
        try:
            prompt_ids = (
                request.prompt_token_ids
                if request.prompt is None
                else engine.tokenize(request.prompt, request.chat_template is not False)
            )
            engine_request = EngineRequest(prompt_ids, request.prefix_token_ids, request.n, request.sampling)
            version, (samples,) = await engine.generate([engine_request], source="http")
        except RequestRejected as exc:
            raise HTTPProblem(400, str(exc)) from exc
        except EngineFailed as exc:
            raise HTTPProblem(503 if not engine.ready else 500, str(exc)) from exc
        response = GenerateResponse(
            model_version=version,
            prompt_token_ids=prompt_ids,
            prefix_token_ids=request.prefix_token_ids,
            samples=samples,
        )
        # Serialised once by pydantic; FastAPI would validate the samples a second time.
        return Response(response.model_dump_json(), media_type="application/json")

    @app.get(PUSH_ROUTE, response_model=WeightsStatus)
    async def get_weights() -> WeightsStatus:
        return updater.status()

    # 202: validated and queued (or a no-op, as the outcome says); the fetch and the swap run in the
    # background, so a pusher never waits on a download or a drain.
    @app.post(PUSH_ROUTE, response_model=WeightsAccepted, status_code=202, dependencies=[Depends(authorised)])
    async def push_weights(update: WeightUpdate) -> WeightsAccepted:
        require_ready()
        try:
            return updater.submit(update)
        except StaleVersion as exc:
            raise HTTPProblem(409, str(exc)) from exc

    add_openai_routes(app, settings, engine)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        reason = engine.dead_reason
        return JSONResponse({"status": reason or "ok"}, status_code=503 if reason else 200)

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if not engine.ready:
            return JSONResponse({"status": engine.dead_reason or "loading"}, status_code=503)
        return JSONResponse({"status": "ready", "version": engine.version})

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        metrics.engine_queue.set(engine.unfinished_requests())
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPProblem)
    if request.url.path in OPENAI_ROUTES:
        return openai_error(exc.status, exc.detail)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    if request.url.path in OPENAI_ROUTES:
        # OpenAI's format and status (vLLM's own server answers a malformed request with 400 as well).
        return openai_validation_error(exc.errors())
    # Not FastAPI's default handler: it echoes each bad input back, which can be megabytes long.
    return Response(json.dumps({"detail": detail}, ensure_ascii=True), status_code=422, media_type="application/json")
