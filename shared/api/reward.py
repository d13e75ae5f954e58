"""The reward service's HTTP contract (POST /v1/score, GET /v1/verifiers, GET /healthz) and its client."""

from __future__ import annotations

from enum import Enum

import httpx
from pydantic import BaseModel, Field

from shared.api.http import RetryPolicy, ServiceRefused, ServiceUnavailable, async_client, checked
from shared.schema import Message

# The verifier of an item, a task or a problem that names none.
DEFAULT_VERIFIER = "math"


class ScoreItem(Message):
    id: str = Field(min_length=1, max_length=256)
    response: str
    reference: str
    # A name from GET /v1/verifiers: an entry point of the group prefix_rft.verifiers (math, gsm8k,
    # format are built in) or a module:function path the service's settings list.
    verifier: str = DEFAULT_VERIFIER


class ScoreRequest(Message):
    items: list[ScoreItem] = Field(min_length=1)


class ScoreStatus(str, Enum):
    ok = "ok"
    timeout = "timeout"
    # Cut before verification by a cheap check: the input could only have ended at the deadline.
    refused = "refused"
    error = "error"


class ScoreResult(Message):
    id: str
    reward: float
    correct: bool
    extracted: str | None = None
    status: ScoreStatus = ScoreStatus.ok
    detail: str | None = None


class ScoreResponse(Message):
    results: list[ScoreResult]


class VerifierInfo(Message):
    """A verifier the service has: its name, the function behind it and where it came from."""

    name: str
    target: str  # module:function
    source: str  # "built-in", "entry point (<distribution>)" or "settings (reward.verifier_paths)"
    description: str | None = None  # the first line of the function's docstring


class VerifierList(Message):
    """GET /v1/verifiers."""

    verifiers: list[VerifierInfo]

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.verifiers]


class Health(BaseModel):
    """GET /healthz: 200 with live verifier workers, 503 (same body) without."""

    status: str
    workers: int
    worker_pids: list[int]
    queued_items: int
    worker_restarts: int


class RewardClient:
    """POST /v1/score under the retry policy: while the service is down or failing, attempts back off;
    a request it refuses (a 4xx) raises ServiceRefused at once."""

    def __init__(
        self,
        url: str,
        timeout_s: float = 120.0,
        retry: RetryPolicy = RetryPolicy(),
        max_connections: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.url = url.rstrip("/")
        self.retry = retry
        self._client = async_client(self.url, timeout_s, 5.0, max_connections, transport)

    async def score(self, items: list[ScoreItem]) -> list[ScoreResult]:
        """One result per item, in the items' order."""
        body = ScoreRequest(items=items).model_dump(mode="json")

        async def attempt() -> ScoreResponse:
            reply = checked(await self._client.post("/v1/score", json=body), "scoring")
            return ScoreResponse.model_validate_json(reply.content)

        response = await self.retry.call(attempt, "scoring")
        got = [r.id for r in response.results]
        if got != [i.id for i in items]:
            raise ServiceUnavailable(f"the reward service answered ids {got[:4]}... for {len(items)} items")
        return response.results

    async def score_alone(self, items: list[ScoreItem]) -> list[ScoreResult]:
        """Each item in a request of its own, after the service refused them together (a 4xx): an item it
        also refuses alone scores 0 as an error, with the reason, so one bad item does not lose its group."""
        results: list[ScoreResult] = []
        for item in items:
            try:
                results += await self.score([item])
            except ServiceRefused as exc:
                results.append(
                    ScoreResult(id=item.id, reward=0.0, correct=False, status=ScoreStatus.error, detail=str(exc)[:500])
                )
        return results

    async def verifiers(self) -> VerifierList:
        """The verifiers an item may name."""

        async def attempt() -> VerifierList:
            reply = checked(await self._client.get("/v1/verifiers"), "GET /v1/verifiers")
            return VerifierList.model_validate_json(reply.content)

        return await self.retry.call(attempt, "GET /v1/verifiers")

    async def health(self) -> Health:
        """The service's health, also while it has no live worker (a 503 with the same body)."""

        async def attempt() -> Health:
            reply = await self._client.get("/healthz")
            if reply.status_code != 503:
                checked(reply, "GET /healthz")
            return Health.model_validate_json(reply.content)

        return await self.retry.call(attempt, "GET /healthz")

    async def close(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> RewardClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()
