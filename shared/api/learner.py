"""The learner's HTTP API as its callers use it: its status, the weights it serves, and the start of a
held learner."""

from __future__ import annotations

from pathlib import Path

import httpx

from shared.api.http import RetryPolicy, async_client, checked
from shared.api.weights import auth_header, download, weights_url
from shared.records import LearnerStatus

START_ROUTE = "/v1/start"


class LearnerClient:
    def __init__(
        self,
        url: str,
        timeout_s: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.retry = retry
        self._client = async_client(self.url, timeout_s, 10.0, transport=transport)

    async def status(self) -> LearnerStatus:
        """GET /v1/status: the learner's step, version and counts."""
        what = f"GET /v1/status on {self.url}"

        async def attempt() -> LearnerStatus:
            return LearnerStatus.model_validate(checked(await self._client.get("/v1/status"), what).json())

        return await self.retry.call(attempt, what)

    async def start(self, token: str) -> None:
        """POST /v1/start: let a learner held by ``learner.start_on_request`` issue tasks and train."""
        what = f"POST {START_ROUTE} on {self.url}"

        async def attempt() -> None:
            checked(await self._client.post(START_ROUTE, headers=auth_header(token)), what)

        await self.retry.call(attempt, what)

    async def download_weights(self, version: int, target: Path, token: str | None = None) -> Path:
        """Weights ``version`` streamed into the file ``target``."""
        return await download(weights_url(self.url, version), target, self.timeout_s, token, self._client)

    async def close(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> LearnerClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()
