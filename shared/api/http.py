"""What every client of our services shares: the one retry policy, and the two ways a call ends badly.

A reply the service gives to any request (5xx, 408, 429) and a transport error are worth another
attempt; a 4xx otherwise says the request itself is wrong, and sending it again cannot help.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRIED_4XX = frozenset({408, 429})  # the service timed out or is overloaded: the request may be fine


class ServiceRefused(ValueError):
    """The service refused the request itself: the same request cannot succeed."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class ServiceUnavailable(RuntimeError):
    """The service gave no usable answer after every attempt (down, failing, or answering nonsense);
    worth trying again later."""


class _Transient(Exception):
    """A reply worth another attempt."""


def async_client(
    url: str,
    timeout_s: float,
    connect_s: float,
    max_connections: int | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The HTTP client of one of our services; ``max_connections`` for callers with many calls in flight."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return httpx.AsyncClient(
        base_url=url,
        timeout=httpx.Timeout(timeout_s, connect=connect_s),
        transport=transport,
        **({"limits": limits} if max_connections else {}),
    )


def problem(reply: httpx.Response) -> str:
    return f"HTTP {reply.status_code}: {reply.text[:300]}"


def checked(reply: httpx.Response, what: str) -> httpx.Response:
    """``reply`` if it is a success; ServiceRefused if the request was refused; else a transient failure
    (which RetryPolicy.call retries)."""
    if reply.is_success:
        return reply
    if reply.is_client_error and reply.status_code not in RETRIED_4XX:
        raise ServiceRefused(f"{what} refused ({problem(reply)})", reply.status_code)
    raise _Transient(problem(reply))


class RetryPolicy(BaseModel):
    """Up to ``retries`` more attempts after the first, ``backoff_s``, 2 x ``backoff_s``, ... (at most
    ``max_backoff_s``) apart; each failed attempt is logged as a warning."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retries: int = Field(3, ge=0)
    backoff_s: float = Field(0.5, gt=0.0)
    max_backoff_s: float = Field(30.0, gt=0.0)

    async def call(self, attempt: Callable[[], Awaitable[T]], what: str) -> T:
        """``attempt()`` until it returns; ServiceRefused at once, ServiceUnavailable once the attempts
        are spent. ``attempt`` passes its reply through :func:`checked`."""
        attempts = self.retries + 1
        wait = wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s)

        def log_failure(state: RetryCallState) -> None:
            assert state.outcome is not None
            then = f"; retrying in {wait(state):.1f} s" if state.attempt_number < attempts else ""
            log.warning("%s failed (attempt %d/%d): %s%s", what, state.attempt_number, attempts,
                        _describe(state.outcome.exception()), then)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=wait,
            retry=retry_if_exception_type((httpx.HTTPError, _Transient)),
            after=log_failure,
            reraise=True,
        )
        try:
            return await retrying(attempt)
        except (httpx.HTTPError, _Transient) as exc:
            plural = "s" if attempts > 1 else ""
            raise ServiceUnavailable(f"{what} failed after {attempts} attempt{plural}: {_describe(exc)}") from exc


def _describe(exc: BaseException | None) -> str:
    return str(exc) if isinstance(exc, _Transient) else f"{type(exc).__name__}: {exc}"
