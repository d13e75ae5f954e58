"""Input limits: the body size, checked before anything parses the body, and the request model with
the per-request limits of the settings (items per request, bytes per text, known verifiers)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from services.reward.registry import UnknownVerifier, VerifierRegistry
from services.reward.settings import RewardSettings
from shared.api.reward import ScoreItem as BaseScoreItem
from shared.api.reward import ScoreRequest as BaseScoreRequest
from shared.bodylimit import BodySizeLimit

__all__ = ["BodySizeLimit", "request_model"]


def _check_text(value: str, max_bytes: int) -> str:
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        # JSON escapes can spell lone surrogates ("\ud800"), which no response could echo back.
        raise ValueError("text is not valid Unicode (lone surrogate escape)") from None
    if size > max_bytes:
        raise ValueError(f"text is {size} bytes, over the limit of {max_bytes} bytes")
    return value


def request_model(settings: RewardSettings, verifiers: VerifierRegistry) -> type[BaseScoreRequest]:
    """``ScoreRequest`` narrowed by the limits in ``settings`` and the names in ``verifiers``: a
    violation is a 422 naming the field."""
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
            try:
                return verifiers.check(value)
            except UnknownVerifier as exc:
                known = ", ".join(exc.known)
                raise ValueError(f"unknown verifier {_printable(value)}; known verifiers: {known}") from None

    class ScoreRequest(BaseScoreRequest):
        items: list[ScoreItem] = Field(min_length=1, max_length=settings.max_items_per_request)

    return ScoreRequest


def _printable(value: Any) -> str:
    return repr(str(value)[:100]).encode("ascii", "backslashreplace").decode("ascii")
