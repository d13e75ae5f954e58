"""The rollout service's OpenAI-compatible routes: GET /v1/models, POST /v1/completions and
POST /v1/chat/completions.

vLLM's serving classes speak the protocol (``openai_serving``); each request here runs under one hold of
the version gate, as /v1/generate does, so all its choices come from one weight version, which the
response names twice: the ``model_version`` field and the ``X-Model-Version`` header. Errors are in
OpenAI's format (``{"error": {"message", "type", "param", "code"}}``), so OpenAI clients raise their
own error types.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at definition time.

import logging
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.responses import JSONResponse, Response
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.entrypoints.openai.completion.protocol import CompletionRequest
from vllm.entrypoints.serve import create_error_response
from vllm.entrypoints.serve.engine.protocol import ErrorResponse

from services.rollout.engine import RolloutEngine
from services.rollout.settings import RolloutSettings

log = logging.getLogger(__name__)

MODELS_ROUTE = "/v1/models"
COMPLETIONS_ROUTE = "/v1/completions"
CHAT_ROUTE = "/v1/chat/completions"
OPENAI_ROUTES = frozenset({MODELS_ROUTE, COMPLETIONS_ROUTE, CHAT_ROUTE})
VERSION_HEADER = "X-Model-Version"
SOURCE = "openai"  # the metrics label of these requests


def openai_error(status: int, message: str, param: str | None = None) -> JSONResponse:
    kind = HTTPStatus(status).phrase.replace(" ", "") + "Error"  # OpenAI's names: BadRequestError, ...
    return _error_response(create_error_response(message, kind, HTTPStatus(status), param))


def openai_validation_error(errors) -> JSONResponse:
    """A request body the protocol models refuse: 400 naming the fields (not the inputs, which can be huge)."""
    from vllm.entrypoints.serve.exception_handling.handlers.validation import clean_loc_for_param

    reasons: dict[str, str] = {}
    for error in errors:
        loc = tuple(error["loc"])
        field = clean_loc_for_param(loc[1:]) if loc[:1] == ("body",) and len(loc) > 1 else ""
        if error["type"] == "json_invalid" or not field or field.isdigit():
            field = "body"
        reasons.setdefault(field, f"{field}: {error['msg']}")  # a union field fails once per branch
    param = next(iter(reasons), None)
    return openai_error(400, "; ".join(reasons.values()) or "the request body is not valid", param)


def _error_response(error: ErrorResponse) -> JSONResponse:
    return JSONResponse(error.model_dump(), status_code=error.error.code)


class _BodyErrorsAre400(APIRoute):
    """vLLM's protocol models check a body with validators that raise vLLM's own errors (which pydantic
    does not turn into validation errors), and a few fail on shapes they do not expect (found by fuzzing
    the OpenAPI spec): the request is at fault, so the answer is a 400, as for any other bad body."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError:
                raise  # the app's handler answers it
            except Exception as exc:
                error = create_error_response(exc)
                if error.error.code >= 500:
                    error = create_error_response(f"the request body could not be read: {type(exc).__name__}: {exc}")
                return _error_response(error)

        return guarded


def prompt_count(prompt) -> int:
    """How many prompts a completions request holds: a string, token ids, or a list of either."""
    if prompt is None or isinstance(prompt, str):
        return 1
    if prompt and all(isinstance(p, (str, list)) for p in prompt):
        return len(prompt)
    return 1  # one prompt of token ids


def add_openai_routes(app: FastAPI, settings: RolloutSettings, engine: RolloutEngine) -> None:
    router = APIRouter(route_class=_BodyErrorsAre400)

    def refusal(sequences: int, max_tokens: int | None) -> JSONResponse | None:
        """The service's own limits (as on /v1/generate), checked before the engine sees the request."""
        if sequences > settings.max_n:
            return openai_error(400, f"n × prompts = {sequences} exceeds the limit of {settings.max_n}", "n")
        if max_tokens is not None and max_tokens > settings.max_tokens:
            reason = f"max_tokens={max_tokens} exceeds the limit of {settings.max_tokens}"
            return openai_error(400, reason, "max_tokens")
        return None

    def not_ready() -> JSONResponse | None:
        if engine.ready:
            return None
        return openai_error(503, engine.dead_reason or "the engine is loading")

    async def gated(create: Callable[[], Awaitable], stream: bool | None) -> Response:
        if stream:
            # A stream would hold the gate for as long as the client reads; answers come whole.
            return openai_error(400, "stream=true is not supported by the rollout service; send stream=false", "stream")
        started = time.monotonic()
        outcome = "error"
        try:
            async with engine.gate.hold() as version:
                try:
                    result = await create()
                except Exception as exc:
                    # vLLM's handlers answer most faults themselves; the rest are mapped as vLLM's own
                    # server maps them (its validation errors to 400, anything else to 500).
                    result = create_error_response(exc)
                    if result.error.code >= 500:
                        log.error("OpenAI request failed", exc_info=exc)
            if isinstance(result, ErrorResponse):
                outcome = "rejected" if result.error.code < 500 else "error"
                return _error_response(result)
            outcome = "ok"
        finally:
            engine.metrics.requests.labels(SOURCE, outcome).inc()
        engine.metrics.request_seconds.labels(SOURCE).observe(time.monotonic() - started)
        if result.usage is not None:
            engine.metrics.tokens.labels(SOURCE).inc(result.usage.completion_tokens or 0)
        body = result.model_dump()
        body["model_version"] = version
        return JSONResponse(body, headers={VERSION_HEADER: str(version)})

    @router.get(MODELS_ROUTE)
    async def models() -> Response:
        if (problem := not_ready()) is not None:
            return problem
        listing = await engine.openai.models.show_available_models()
        return JSONResponse(listing.model_dump(), headers={VERSION_HEADER: str(engine.version)})

    @router.post(COMPLETIONS_ROUTE)
    async def completions(request: CompletionRequest, raw_request: Request) -> Response:
        if (problem := not_ready()) is not None:
            return problem
        if request.max_tokens is None:
            request.max_tokens = settings.max_tokens
        sequences = (request.n or 1) * prompt_count(request.prompt)
        if (problem := refusal(sequences, request.max_tokens)) is not None:
            return problem
        return await gated(lambda: engine.openai.completion.create_completion(request, raw_request), request.stream)

    @router.post(CHAT_ROUTE)
    async def chat_completions(request: ChatCompletionRequest, raw_request: Request) -> Response:
        if (problem := not_ready()) is not None:
            return problem
        if engine.openai.chat_template is None:
            return openai_error(
                400, "the served model has no chat template: set rollout.chat_template, or use /v1/completions"
            )
        if request.max_completion_tokens is None and request.max_tokens is None:
            request.max_completion_tokens = settings.max_tokens
        max_tokens = request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
        if (problem := refusal(request.n or 1, max_tokens)) is not None:
            return problem
        return await gated(lambda: engine.openai.chat.create_chat_completion(request, raw_request), request.stream)

    app.include_router(router)
