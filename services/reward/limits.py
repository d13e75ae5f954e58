"""Input limits: the body size, checked before anything parses the body, and the request model with
the per-request limits of the settings (items per request, bytes per text, known verifiers)."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from pydantic import Field, field_validator
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.reward.settings import RewardSettings
from services.reward.verifiers import VERIFIERS
from shared.messages import ScoreItem as BaseScoreItem
from shared.messages import ScoreRequest as BaseScoreRequest


class BodySizeLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, by its Content-Length or, for a streamed
    body, as soon as the bytes read pass the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            length = _content_length(scope)
        except ValueError:
            await JSONResponse({"detail": "invalid Content-Length header"}, status_code=400)(scope, receive, send)
            return
        if length is not None and length > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI passes an HTTPException raised while it reads the body through to
                    # its handler, which answers with this status.
                    raise HTTPException(413, self._reason())
            return message

        await self.app(scope, limited_receive, send)

    def _reason(self) -> str:
        return f"request body exceeds the limit of {self.max_bytes} bytes"

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Connection: close, since the unread body is still on its way.
        response = JSONResponse({"detail": self._reason()}, status_code=413, headers={"Connection": "close"})
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared body size, None when not declared; ValueError when not a size."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = int(value)
            if length < 0:
                raise ValueError(f"negative Content-Length {length}")
            return length
    return None


def _check_text(value: str, max_bytes: int) -> str:
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        # JSON escapes can spell lone surrogates ("\ud800"), which no response could echo back.
        raise ValueError("text is not valid Unicode (lone surrogate escape)") from None
    if size > max_bytes:
        raise ValueError(f"text is {size} bytes, over the limit of {max_bytes} bytes")
    return value


def request_model(settings: RewardSettings) -> type[BaseScoreRequest]:
    """``ScoreRequest`` narrowed by the limits in ``settings``: a violation is a 422 naming the field."""
    max_text = settings.max_text_bytes

    # Same names as the shared models, which is what the OpenAPI document shows.
    class ScoreItem(BaseScoreItem):
        @field_validator("response", "reference")
        @classmethod
        def _text_size(cls, value: str) -> str:
            return _check_text(value, max_text)

        @field_validator("id")
        @classmethod
        def _id_text(cls, value: str) -> str:
            return _check_text(value, max_text)

        @field_validator("verifier")
        @classmethod
        def _known_verifier(cls, value: str) -> str:
            if value not in VERIFIERS:
                known = ", ".join(sorted(VERIFIERS))
                raise ValueError(f"unknown verifier {_printable(value)}; known verifiers: {known}")
            return value

    class ScoreRequest(BaseScoreRequest):
        items: list[ScoreItem] = Field(min_length=1, max_length=settings.max_items_per_request)

    return ScoreRequest


def _printable(value: Any) -> str:
    return repr(str(value)[:100]).encode("ascii", "backslashreplace").decode("ascii")
