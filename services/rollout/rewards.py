"""Client of the reward service (POST /v1/score), retried with backoff while the service is down."""

from __future__ import annotations

import asyncio
import logging

import httpx

from shared.messages import ScoreItem, ScoreRequest, ScoreResponse, ScoreResult, ScoreStatus

log = logging.getLogger(__name__)


class RewardUnavailable(RuntimeError):
    """Scoring failed after every retry (the service is down or failing); worth trying again later."""


class RewardRefused(ValueError):
    """The reward service refused the request itself (a 4xx): retrying the same items cannot help."""


class RewardClient:
    def __init__(
        self,
        url: str,
        timeout_s: float,
        retries: int,
        backoff_s: float,
        max_backoff_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.url = url.rstrip("/") + "/v1/score"
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=5.0), transport=transport)

    async def score(self, items: list[ScoreItem]) -> list[ScoreResult]:
        body = ScoreRequest(items=items).model_dump(mode="json")
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                reply = await self._client.post(self.url, json=body)
                if reply.status_code == 200:
                    return self._results(items, ScoreResponse.model_validate_json(reply.content))
                problem = f"HTTP {reply.status_code}: {reply.text[:300]}"
                if 400 <= reply.status_code < 500 and reply.status_code not in (408, 429):
                    # The request itself is wrong: retrying cannot help.
                    raise RewardRefused(f"the reward service refused the request: {problem}")
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt == self.retries:
                break
            log.warning("scoring failed (attempt %d/%d): %s; retrying in %.1f s", attempt + 1, self.retries + 1,
                        problem, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)
        raise RewardUnavailable(f"scoring failed after {self.retries + 1} attempts: {problem}")

    async def score_alone(self, items: list[ScoreItem]) -> list[ScoreResult]:
        """Each item in a request of its own, after the service refused them together (a 4xx): an item it
        also refuses alone scores 0 as an error, with the reason, so one bad item does not lose its group."""
        results: list[ScoreResult] = []
        for item in items:
            try:
                results += await self.score([item])
            except RewardRefused as exc:
                results.append(
                    ScoreResult(id=item.id, reward=0.0, correct=False, status=ScoreStatus.error, detail=str(exc)[:500])
                )
        return results

    @staticmethod
    def _results(items: list[ScoreItem], response: ScoreResponse) -> list[ScoreResult]:
        got = [r.id for r in response.results]
        if got != [i.id for i in items]:
            raise RewardUnavailable(f"the reward service answered ids {got[:4]}... for {len(items)} items")
        return response.results

    async def close(self) -> None:
        await self._client.aclose()
