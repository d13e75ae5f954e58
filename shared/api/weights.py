"""The weights contract between the learner and the rollout workers, defined once: the file a version
is saved as, the URL the learner serves it at, the download, and the bearer token that guards a push and a download.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from pathlib import Path

import httpx
from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field

from shared.api.http import RetryPolicy, checked
from shared.schema import Message

WEIGHTS_FILE = "model.safetensors"  # one file per version, whatever the model size: one URL serves it
DELTA_FILE = "delta.bin"  # a version's delta from the version before (shared.weights.delta), when it has one
WEIGHTS_ROUTE = "/v1/weights/{version}"  # the learner: GET a version's WEIGHTS_FILE
MANIFEST_ROUTE = "/v1/weights/{version}/manifest"  # the learner: GET a version's manifest (shared.weights)
BUCKET_ROUTE = "/v1/weights/{version}/buckets/{index}"  # the learner: GET one bucket's bytes
DELTA_MANIFEST_ROUTE = "/v1/weights/{version}/delta/manifest"  # the learner: the manifest of a version's delta
DELTA_BUCKET_ROUTE = "/v1/weights/{version}/delta/buckets/{index}"  # the learner: one bucket of the delta
SWARM_ROUTE = "/v1/weights/{version}/swarm"  # the learner: GET a version's swarm offer (the swarm transport)
SWARM_FILE = "swarm.json"  # the swarm offer, beside a version's manifest in the learner's store
DELTA_SWARM_ROUTE = "/v1/weights/{version}/delta/swarm"  # the learner: GET the swarm offer of a version's delta
DELTA_SWARM_FILE = "delta-swarm.json"  # the offer of a version's delta, beside the delta's manifest
PUSH_ROUTE = "/v1/weights"  # a worker: GET the version it serves, POST a WeightUpdate (bearer token)


def weights_url(base_url: str, version: int) -> str:
    return base_url.rstrip("/") + WEIGHTS_ROUTE.format(version=version)


def manifest_url(base_url: str, version: int) -> str:
    return base_url.rstrip("/") + MANIFEST_ROUTE.format(version=version)


def delta_manifest_url(base_url: str, version: int) -> str:
    return base_url.rstrip("/") + DELTA_MANIFEST_ROUTE.format(version=version)


class DeltaRef(Message):
    """A version's delta, as a record or a push names it: the version it applies to, and its manifest in
    the transport's terms (read like any version's manifest, its buckets verified the same way)."""

    base_version: int = Field(ge=0)
    manifest: str = Field(min_length=1)  # its scheme is checked against the transport by WeightUpdate


def bucket_url(manifest_ref: str, index: int) -> str:
    """A bucket's URL from its version's manifest URL (the learner serves both)."""
    return _beside_manifest(manifest_ref, f"/buckets/{index}")


def _beside_manifest(manifest_ref: str, tail: str) -> str:
    suffix = "/manifest"
    if not manifest_ref.endswith(suffix):
        raise ValueError(f"not a manifest URL: {manifest_ref}")
    return manifest_ref[: -len(suffix)] + tail


def swarm_url(manifest_ref: str) -> str:
    """A version's swarm offer URL from its manifest URL, or its delta's from the delta's manifest URL
    (the learner serves both)."""
    return _beside_manifest(manifest_ref, "/swarm")


def auth_header(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def auth_refusal(
    scheme: str | None, credentials: str, token: str, guarded: str = "weight pushes are disabled: this worker"
) -> tuple[int, str] | None:
    """Why a request with this Authorization scheme and credentials may not pass a guard whose token is
    ``token`` (a worker's weight push, the learner's weight download), as (HTTP status, reason); None
    when it may. ``guarded`` names what an empty token disables, and where."""
    if scheme is None or scheme.lower() != "bearer":
        return 401, "a bearer token is required"
    if not token:
        return 403, f"{guarded} has no token configured"
    if not hmac.compare_digest(credentials.encode(), token.encode()):  # constant time: no timing oracle
        return 403, "wrong token"
    return None


def bearer_guard(token: str, guarded: str, refuse: Callable[[int, str, dict[str, str] | None], Exception]):
    """A FastAPI dependency that lets a request through only with ``token`` (see ``auth_refusal``);
    otherwise it raises ``refuse(status, reason, headers)``, the service's own HTTP error."""
    bearer = HTTPBearer(auto_error=False)

    def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        scheme, presented = (credentials.scheme, credentials.credentials) if credentials else (None, "")
        refusal = auth_refusal(scheme, presented, token, guarded)
        if refusal is not None:
            status, reason = refusal
            raise refuse(status, reason, {"WWW-Authenticate": "Bearer"} if status == 401 else None)

    return authorised


async def download(
    uri: str, target: Path, timeout_s: float, token: str | None = None, client: httpx.AsyncClient | None = None
) -> Path:
    """The weights at an ``http(s)://`` URI streamed into ``target``, in one attempt (a failed fetch is
    retried by whoever asked for the version: the pusher, or the worker's next look at the record).
    ServiceRefused or ServiceUnavailable when it fails."""
    what = f"GET {uri}"

    async def stream(client: httpx.AsyncClient) -> None:
        async with client.stream("GET", uri, headers=auth_header(token), follow_redirects=True) as response:
            if not response.is_success:
                await response.aread()
                checked(response, what)
            with target.open("wb") as out:
                async for chunk in response.aiter_bytes(1 << 20):
                    out.write(chunk)

    async def attempt() -> Path:
        if client is not None:
            await stream(client)
        else:
            async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=10.0)) as own:
                await stream(own)
        return target

    return await RetryPolicy(retries=0).call(attempt, what)
