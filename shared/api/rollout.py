"""The rollout service's HTTP contract (POST /v1/generate, GET|POST /v1/weights, GET /metrics) and its
client. A weight push is answered once validated (202, ``WeightsAccepted``); the worker fetches and swaps
in the background, and ``GET /v1/weights`` (``WeightsStatus``) shows its version and progress."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import Field, model_validator

from shared.api.http import RetryPolicy, async_client, checked
from shared.api.weights import PUSH_ROUTE, DeltaRef, auth_header
from shared.schema import Message, TokenIds
from shared.weights.settings import TransportName

SEED_MAX = 2**64 - 1  # what the engine (and torch) can take


class SamplingParams(Message):
    # The bounds are vLLM's own (it refuses a temperature above 2 and an empty stop string, and cannot
    # pass on a seed outside 64 bits), so a request the contract accepts never fails in the engine.
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1)
    seed: int | None = Field(None, ge=-(2**63), le=SEED_MAX)  # what the engine (and torch) can take
    stop: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list, max_length=16)


class GenerateRequest(Message):
    """Prompt as token ids or text; the optional demonstration prefix is appended as token ids."""

    prompt_token_ids: TokenIds | None = None
    prompt: str | None = None
    # A text prompt is the user's message: wrapped in the served tokenizer's chat template with the
    # assistant turn left open, as the learner builds its prompts (None counts as true). False: the
    # text is tokenised as it is. Token-id prompts are used as given and take no value here.
    chat_template: bool | None = None
    prefix_token_ids: TokenIds = Field(default_factory=list)
    n: int = Field(1, ge=1)
    sampling: SamplingParams = Field(default_factory=SamplingParams)

    @model_validator(mode="after")
    def _exactly_one_prompt(self) -> GenerateRequest:
        if (self.prompt_token_ids is None) == (self.prompt is None):
            raise ValueError("give exactly one of 'prompt_token_ids' or 'prompt'")
        if self.prompt_token_ids is not None and not self.prompt_token_ids:
            raise ValueError("'prompt_token_ids' is empty")
        if self.prompt is not None and not self.prompt:
            raise ValueError("'prompt' is empty")
        if self.prompt is None and self.chat_template is not None:
            raise ValueError("'chat_template' applies to a text 'prompt' only; 'prompt_token_ids' are used as given")
        return self

    @model_validator(mode="after")
    def _every_sample_seed_fits(self) -> GenerateRequest:
        # vLLM seeds sample i of n with seed + i; past 64 bits the engine fails (found by the edge-value test).
        seed = self.sampling.seed
        if seed is not None and seed + self.n - 1 > SEED_MAX:
            raise ValueError(f"sampling.seed + n - 1 must be at most {SEED_MAX} (sample i is seeded with seed + i)")
        return self


FinishReason = Literal["stop", "length"]


class Sample(Message):
    token_ids: TokenIds  # the continuation only (after prompt + prefix)
    logprobs: list[float]  # one per continuation token, of the sampled distribution
    text: str
    finish_reason: FinishReason

    @model_validator(mode="after")
    def _one_logprob_per_token(self) -> Sample:
        if len(self.logprobs) != len(self.token_ids):
            raise ValueError(f"{len(self.logprobs)} logprobs for {len(self.token_ids)} tokens")
        return self


class GenerateResponse(Message):
    model_version: int
    prompt_token_ids: TokenIds
    prefix_token_ids: TokenIds
    samples: list[Sample]


class WeightsProgress(Message):
    """The update a worker is applying: fetching its bytes (verified bucket by bucket), or swapping them
    into the engine. Bucket counts are those of a manifest update; a ``uri`` update counts nothing."""

    version: int = Field(ge=0)
    phase: Literal["fetching", "swapping"]
    buckets_done: int | None = None
    buckets_total: int | None = None
    bytes_done: int | None = None
    bytes_total: int | None = None


class WeightsFailure(Message):
    version: int = Field(ge=0)
    reason: str


class WeightsStatus(Message):
    """``GET /v1/weights``: the version served, the update under way (if any) and the one queued behind
    it, and the last update that failed."""

    version: int = Field(ge=0)
    update: WeightsProgress | None = None
    queued: int | None = None
    last_failure: WeightsFailure | None = None

    def pending(self) -> int | None:
        """The newest version the worker is on its way to (under way or queued); None when idle."""
        versions = [v for v in (self.update.version if self.update else None, self.queued) if v is not None]
        return max(versions) if versions else None

    def describe(self) -> str:
        text = f"serves v{self.version}"
        if self.update is not None:
            u = self.update
            text += f", updating to v{u.version} ({u.phase}"
            if u.buckets_total is not None:
                text += f", {u.buckets_done}/{u.buckets_total} buckets"
            if u.bytes_total:
                text += f", {(u.bytes_done or 0) >> 20}/{u.bytes_total >> 20} MiB"
            text += ")"
        if self.queued is not None:
            text += f", v{self.queued} queued"
        if self.last_failure is not None:
            text += f"; v{self.last_failure.version} failed: {self.last_failure.reason}"
        return text


# queued: the worker will fetch and swap this version (it replaced any update queued before it);
# served: it already serves it; pending: it is already fetching or has queued it; superseded: a newer
# version is under way or queued, so this one will never be served (the newer one will).
PushOutcome = Literal["queued", "served", "pending", "superseded"]


class WeightsAccepted(Message):
    """``POST /v1/weights`` answers 202 with this once the update is validated; the worker fetches and
    swaps in the background (``GET /v1/weights`` shows how far it got)."""

    version: int = Field(ge=0)
    outcome: PushOutcome


class WeightsUpdateFailed(RuntimeError):
    """A worker could not apply a version it was waiting for (the reason is the worker's)."""


class WeightUpdate(Message):
    version: int = Field(ge=0)
    uri: str = Field(min_length=1, pattern=r"^(file|https?)://")
    # When set, the worker fetches the version's verified buckets through this transport (shared.weights)
    # rather than the whole file at ``uri``.
    manifest: str | None = Field(None, min_length=1, pattern=r"^(file|https?|s3)://")
    transport: TransportName | None = None
    # The version's delta from an earlier one, through the same transport: a worker that holds the base
    # takes it instead of the full version (shared.weights.receiver).
    delta: DeltaRef | None = None

    @model_validator(mode="after")
    def _manifest_fits_its_transport(self) -> WeightUpdate:
        if (self.manifest is None) != (self.transport is None):
            raise ValueError("manifest and transport come together (or neither)")
        if self.delta is not None and self.manifest is None:
            raise ValueError("a delta comes with the version's manifest and transport")
        if self.transport is not None:
            wanted = {"file": ("file://",), "s3": ("s3://",)}.get(self.transport, ("http://", "https://"))
            for what, ref in (("manifest", self.manifest), ("delta manifest", self.delta and self.delta.manifest)):
                if ref is not None and not ref.startswith(wanted):
                    raise ValueError(f"the {self.transport} transport takes a {' or '.join(wanted)} {what}")
        if self.delta is not None and self.delta.base_version >= self.version:
            raise ValueError(f"a delta to v{self.version} applies to an earlier version, "
                             f"not v{self.delta.base_version}")
        return self


class RolloutClient:
    """A rollout worker's API, every call under the retry policy. ``token`` authorises weight pushes;
    ``name`` says which worker in the log (its URL by default)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout_s: float = 600.0,
        retry: RetryPolicy = RetryPolicy(),
        name: str | None = None,
        max_connections: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.url = url.rstrip("/")
        self.name = name or self.url
        self.token = token
        self.retry = retry
        self._client = async_client(self.url, timeout_s, 10.0, max_connections, transport)

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        what = f"generation on {self.name}"
        body = request.model_dump(mode="json")

        async def attempt() -> GenerateResponse:
            reply = checked(await self._client.post("/v1/generate", json=body), what)
            return GenerateResponse.model_validate_json(reply.content)

        return await self.retry.call(attempt, what)

    async def weights(self) -> WeightsStatus:
        """The weights version the worker serves and the update under way."""
        what = f"GET {PUSH_ROUTE} on {self.name}"

        async def attempt() -> WeightsStatus:
            reply = checked(await self._client.get(PUSH_ROUTE), what)
            return WeightsStatus.model_validate_json(reply.content)

        return await self.retry.call(attempt, what)

    async def version(self) -> int:
        """The weights version the worker serves."""
        return (await self.weights()).version

    async def push_weights(self, update: WeightUpdate) -> WeightsAccepted:
        """Hand ``update`` to the worker: it answers once the update is validated and fetches and swaps
        in the background (``wait_for_version`` waits for it)."""
        what = f"push of v{update.version} to {self.name}"
        body = update.model_dump(mode="json", exclude_none=True)  # a plain push reads as before

        async def attempt() -> WeightsAccepted:
            reply = checked(await self._client.post(PUSH_ROUTE, json=body, headers=auth_header(self.token)), what)
            return WeightsAccepted.model_validate_json(reply.content)

        return await self.retry.call(attempt, what)

    async def wait_for_version(self, version: int, timeout_s: float = 600.0, poll_s: float = 0.5) -> WeightsStatus:
        """Poll ``GET /v1/weights`` until the worker serves ``version`` or newer. WeightsUpdateFailed when
        it failed to get there and has nothing newer under way; TimeoutError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = await self.weights()
            if status.version >= version:
                return status
            failure = status.last_failure
            pending = status.pending()
            if failure is not None and failure.version >= version and (pending is None or pending < version):
                raise WeightsUpdateFailed(f"{self.name} could not load v{failure.version}: {failure.reason}")
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self.name} does not serve v{version} after {timeout_s:.0f} s: it {status.describe()}"
                )
            await asyncio.sleep(poll_s)

    async def metrics(self) -> str:
        """The worker's Prometheus exposition."""
        what = f"GET /metrics on {self.name}"

        async def attempt() -> str:
            return checked(await self._client.get("/metrics"), what).text

        return await self.retry.call(attempt, what)

    async def metric(self, name: str, **labels: str) -> float | None:
        """The sample ``name`` with these labels in the worker's metrics, summed over any other labels
        (``metric("rollout_tasks_total")``: tasks of every outcome); None if there is none."""
        values = [
            sample.value
            for family in text_string_to_metric_families(await self.metrics())
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        ]
        return sum(values) if values else None

    async def close(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> RolloutClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()
