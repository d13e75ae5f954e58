"""``http``: buckets fetched from the learner's API (today's origin), with the job's bearer token. The
ref is the version's manifest URL (``shared.api.weights.manifest_url``), or its delta's
(``delta_manifest_url``); a bucket's URL is the ref's with ``/buckets/{i}`` for ``/manifest``."""

from __future__ import annotations

from pathlib import Path

import httpx

from shared.api.http import RetryPolicy, checked
from shared.api.weights import DeltaRef, auth_header, bucket_url, delta_manifest_url, manifest_url, weights_url
from shared.weights.manifest import Manifest
from shared.weights.transport import VersionRef, WeightOrigin, WeightTransport, delta_base


class HttpTransport(WeightTransport):
    name = "http"

    def __init__(
        self,
        token: str | None,
        timeout_s: float = 600.0,
        retry: RetryPolicy = RetryPolicy(retries=2),
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.retry = retry
        self._client = httpx.AsyncClient(
            headers=auth_header(token), timeout=httpx.Timeout(timeout_s, connect=10.0), transport=transport
        )

    async def _get(self, url: str) -> httpx.Response:
        what = f"GET {url}"

        async def attempt() -> httpx.Response:
            return checked(await self._client.get(url), what)

        return await self.retry.call(attempt, what)

    async def content(self, url: str) -> bytes:
        """The body of a GET of ``url`` (with the token and the retries)."""
        return (await self._get(url)).content

    async def manifest(self, ref: str) -> Manifest:
        return Manifest.model_validate_json(await self.content(ref))

    async def bucket(self, ref: str, manifest: Manifest, index: int) -> bytes:
        return (await self._get(bucket_url(ref, index))).content

    async def close(self) -> None:
        await self._client.aclose()


class HttpOrigin(WeightOrigin):
    """The learner's own API serves every version it keeps (services/learner/app.py)."""

    name = "http"
    served_by_learner = True

    def __init__(self, public_base_url: str):
        self.public_base_url = public_base_url

    def publish(self, version: int, directory: Path) -> VersionRef:
        base = delta_base(directory)
        delta = None if base is None else DeltaRef(
            base_version=base, manifest=delta_manifest_url(self.public_base_url, version))
        return VersionRef(uri=weights_url(self.public_base_url, version),
                          manifest=manifest_url(self.public_base_url, version), delta=delta)
