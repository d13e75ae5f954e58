"""The vLLM AsyncLLM engine of one rollout process: checked generation requests, version-tagged samples,
and hot weight swaps.

Every generation runs under a hold of the :class:`VersionGate`; a swap takes the gate exclusively,
so the version a sample is tagged with is the only version that produced it.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from services.rollout.engine_ext import WeightSwapExtension
from services.rollout.gate import VersionGate
from services.rollout.metrics import RolloutMetrics
from services.rollout.openai_serving import OpenAIServing, build_openai_serving
from services.rollout.settings import RolloutSettings
from services.rollout.shared_weights import SharedWeights
from services.rollout.weights import Header, check_compatible, read_headers, safetensors_files
from shared.api.rollout import Sample, SamplingParams
from shared.schema import TokenIds

log = logging.getLogger(__name__)

EXTENSION = f"{WeightSwapExtension.__module__}.{WeightSwapExtension.__qualname__}"
UNIX_PATH_MAX = 107


class RequestRejected(ValueError):
    """A generation request the engine must not run (a 4xx): the reason is in the message."""


class EngineFailed(RuntimeError):
    """The engine could not serve a valid request (a 5xx)."""


def configure_vllm_environment(settings: RolloutSettings) -> None:
    """vLLM reads these at import and start-up; values set by the operator win."""
    defaults = {
        "VLLM_CPU_KVCACHE_SPACE": str(settings.kv_cache_gib),  # CPU start-up fails without it
        "VLLM_HOST_IP": "127.0.0.1",
        # Only vLLM's synchronous LLM runs in-process with this; AsyncLLM always starts an EngineCore
        # child process (engine_child binds its life to this process's).
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_NO_USAGE_STATS": "1",
        "HF_HUB_OFFLINE": "1",  # models come from local directories only
        "TOKENIZERS_PARALLELISM": "false",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    # vLLM binds its IPC sockets at <dir>/<uuid4>: the directory must exist, and the whole path must fit
    # in a Unix socket address (107 bytes), which deep run or test directories exceed.
    rpc_dir = os.environ.get("VLLM_RPC_BASE_PATH")
    if rpc_dir:
        if len(os.fsencode(os.path.abspath(rpc_dir))) + 37 > UNIX_PATH_MAX:
            short = tempfile.mkdtemp(prefix="prft-rpc-")
            atexit.register(shutil.rmtree, short, ignore_errors=True)
            log.warning("VLLM_RPC_BASE_PATH %s is too long for a socket path; using %s", rpc_dir, short)
            os.environ["VLLM_RPC_BASE_PATH"] = rpc_dir = short
        Path(rpc_dir).mkdir(parents=True, exist_ok=True)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_dtype(dtype: str) -> str:
    if dtype != "auto":
        return dtype
    return "bfloat16" if _cuda_available() else "float32"


@dataclass(frozen=True)
class EngineRequest:
    """``n`` samples continuing ``prompt_token_ids + prefix_token_ids``."""

    prompt_token_ids: TokenIds
    prefix_token_ids: TokenIds
    n: int
    sampling: SamplingParams

    @property
    def context(self) -> TokenIds:
        return list(self.prompt_token_ids) + list(self.prefix_token_ids)


class RolloutEngine:
    def __init__(self, settings: RolloutSettings, model_path: Path, metrics: RolloutMetrics):
        self.settings = settings
        self.model_path = model_path
        self.metrics = metrics
        self.gate = VersionGate(0)
        self.llm = None  # vllm.v1.engine.async_llm.AsyncLLM once started
        self.tokenizer = None
        self.vocab_size = 0
        self.max_model_len = 0
        self.eos_token_id: int | None = None
        self.reference_header: Header = {}
        self.openai: OpenAIServing | None = None
        self.last_swap_seconds: float | None = None
        self._swap_lock = asyncio.Lock()
        # vLLM forks the engine core from the thread that builds the engine, and the child's parent-death
        # signal (engine_child) is tied to that thread: it must live until the engine is shut down.
        self._builder = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-build")
        self._dead: BaseException | None = None
        # Set last in start(): every part a request uses exists before the engine says it is ready.
        self._started = False

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Build the engine (blocking work runs on a thread, so the HTTP server keeps answering)."""
        self.llm = await asyncio.get_running_loop().run_in_executor(self._builder, self._build)
        config = self.llm.model_config
        self.vocab_size = int(config.get_vocab_size())
        self.max_model_len = int(config.max_model_len)
        from shared.modeling import load_tokenizer

        self.tokenizer = await asyncio.to_thread(load_tokenizer, self.model_path)
        self.eos_token_id = self.tokenizer.eos_token_id
        self.reference_header = read_headers(safetensors_files(self.model_path))
        self.openai = build_openai_serving(
            self.llm, self.model_path, self.settings.served_model_name, self.settings.chat_template
        )
        self.metrics.version.set(self.gate.version)
        self._started = True
        log.info(
            "engine ready: %s, vocab %d, context %d, dtype %s", self.model_path, self.vocab_size,
            self.max_model_len, config.dtype,
        )

    def _build(self):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from services.rollout import engine_child

        engine_child.install()
        s = self.settings
        on_gpu = _cuda_available()
        options = dict(
            model=str(self.model_path),
            dtype=resolve_dtype(s.dtype),
            max_model_len=s.max_model_len,
            # CUDA graphs pay off on GPUs; on CPU compiling costs ~35 s and gains nothing.
            enforce_eager=not on_gpu,
            seed=s.seed,
            enable_prefix_caching=s.enable_prefix_caching,
            gpu_memory_utilization=s.gpu_memory_utilization,
            # Log-probs of the distribution actually sampled from (after temperature and top-p).
            logprobs_mode="processed_logprobs",
            worker_extension_cls=EXTENSION,
            disable_log_stats=True,
        )
        if not on_gpu:
            # vLLM 0.32 on CPU: a seeded request whose prefill is split over two steps crashes the
            # engine core ("CPU Generator does not use offset" when the runner rewinds its
            # generator). Without chunked prefill no prefill is split.
            options["enable_chunked_prefill"] = False
        options.update(s.engine_args)
        args = AsyncEngineArgs(**options)
        return AsyncLLM.from_engine_args(args)

    @property
    def ready(self) -> bool:
        return self._started and self.llm is not None and self._dead is None and not self.llm.errored

    @property
    def version(self) -> int:
        return self.gate.version

    @property
    def dead_reason(self) -> str | None:
        if self._dead is not None:
            return f"{type(self._dead).__name__}: {self._dead}"
        if self.llm is not None and self.llm.errored:
            return "the engine core died"
        return None

    def unfinished_requests(self) -> int:
        return self.llm.get_num_unfinished_requests() if self.llm is not None else 0

    def shutdown(self) -> None:
        if self.llm is None:
            self._builder.shutdown(wait=False)
            return
        llm, self.llm = self.llm, None
        llm.shutdown(timeout=self.settings.engine_shutdown_grace_s)
        # AsyncLLM.__del__ calls shutdown() again, at interpreter exit, when vLLM's module globals are
        # already gone (a TypeError on every clean exit): make the second call a no-op.
        llm.shutdown = lambda *args, **kwargs: None
        self._builder.shutdown(wait=False)

    # ------------------------------------------------------------------ generation

    def check(self, request: EngineRequest) -> int:
        """Reject what the engine must not run; return the max_tokens the context leaves room for."""
        s = self.settings
        if request.n > s.max_n:
            raise RequestRejected(f"n={request.n} exceeds the limit of {s.max_n}")
        if request.sampling.max_tokens > s.max_tokens:
            raise RequestRejected(f"max_tokens={request.sampling.max_tokens} exceeds the limit of {s.max_tokens}")
        context = request.context
        if not context:
            raise RequestRejected("the prompt is empty")
        parts = (("prompt_token_ids", request.prompt_token_ids), ("prefix_token_ids", request.prefix_token_ids))
        for name, ids in parts:
            bad = [t for t in ids if not 0 <= t < self.vocab_size]
            if bad:
                raise RequestRejected(f"{name} holds ids outside the vocabulary [0, {self.vocab_size}): {bad[:5]}")
        room = self.max_model_len - len(context)
        if room < 1:
            raise RequestRejected(
                f"prompt ({len(request.prompt_token_ids)} tokens) plus prefix ({len(request.prefix_token_ids)} "
                f"tokens) leaves no room in the context of {self.max_model_len} tokens"
            )
        return min(request.sampling.max_tokens, room)

    def tokenize(self, text: str, chat_template: bool = True) -> TokenIds:
        if len(text) > self.settings.max_prompt_chars:
            raise RequestRejected(f"prompt of {len(text)} characters exceeds {self.settings.max_prompt_chars}")
        if chat_template:
            from shared.modeling import prompt_token_ids

            return prompt_token_ids(self.tokenizer, text)
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def decode(self, token_ids: TokenIds) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    async def generate(self, requests: list[EngineRequest], source: str) -> tuple[int, list[list[Sample]]]:
        """Run ``requests`` together under one version; every request is checked before any runs."""
        budgets = [self.check(r) for r in requests]
        started = time.monotonic()
        outcome = "error"
        try:
            async with self.gate.hold() as version:
                results = await asyncio.gather(*(self._one(r, b) for r, b in zip(requests, budgets)))
            outcome = "ok"
        except RequestRejected:
            outcome = "rejected"
            raise
        finally:
            self.metrics.requests.labels(source, outcome).inc(len(requests))
        self.metrics.request_seconds.labels(source).observe(time.monotonic() - started)
        self.metrics.tokens.labels(source).inc(sum(len(s.token_ids) for samples in results for s in samples))
        return version, list(results)

    async def _one(self, request: EngineRequest, max_tokens: int) -> list[Sample]:
        if request.sampling.temperature == 0.0 and request.n > 1:
            # vLLM refuses n > 1 with greedy decoding; the samples are equal, so run n=1 requests
            # (the prefix cache computes the shared prompt once).
            single = EngineRequest(request.prompt_token_ids, request.prefix_token_ids, 1, request.sampling)
            groups = await asyncio.gather(*(self._engine_request(single, max_tokens) for _ in range(request.n)))
            return [sample for group in groups for sample in group]
        return await self._engine_request(request, max_tokens)

    async def _engine_request(self, request: EngineRequest, max_tokens: int) -> list[Sample]:
        from vllm import SamplingParams as VllmSamplingParams
        from vllm.exceptions import VLLMClientError
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.exceptions import EngineDeadError

        sp = request.sampling
        final = None
        try:
            params = VllmSamplingParams(
                n=request.n,
                temperature=sp.temperature,
                top_p=sp.top_p,
                max_tokens=max_tokens,
                seed=sp.seed,
                stop=list(sp.stop) or None,
                logprobs=0,  # the sampled token's log-prob only
                # With n > 1 the streaming kinds drop samples that finished before the last step.
                output_kind=RequestOutputKind.FINAL_ONLY,
            )
            async for output in self.llm.generate(
                TokensPrompt(prompt_token_ids=request.context), params, uuid.uuid4().hex
            ):
                final = output
        except VLLMClientError as exc:
            raise RequestRejected(str(exc)) from exc
        except EngineDeadError as exc:
            self._dead = exc
            raise EngineFailed(f"the engine died: {exc}") from exc
        if final is None or len(final.outputs) != request.n:
            got = 0 if final is None else len(final.outputs)
            raise EngineFailed(f"the engine returned {got} of {request.n} samples")
        return [self._sample(c) for c in sorted(final.outputs, key=lambda c: c.index)]

    @staticmethod
    def _sample(completion) -> Sample:
        if completion.finish_reason not in ("stop", "length"):
            raise EngineFailed(f"sample ended with finish reason {completion.finish_reason!r}")
        token_ids = list(completion.token_ids)
        # A stop on EOS keeps the EOS id as the last token (vLLM 0.32): the learner trains it.
        logprobs = [float(step[token].logprob) for token, step in zip(token_ids, completion.logprobs or [])]
        return Sample(
            token_ids=token_ids, logprobs=logprobs, text=completion.text, finish_reason=completion.finish_reason
        )

    # ------------------------------------------------------------------ weights

    def check_weights(self, source: list[Path] | SharedWeights) -> None:
        """WeightsError unless ``source`` has this model's tensor names and shapes (read from its header)."""
        header = source.header() if isinstance(source, SharedWeights) else read_headers(source)
        check_compatible(self.reference_header, header)

    async def swap(self, version: int, source: list[Path] | SharedWeights) -> float:
        """Load ``source`` (safetensors files, or a version in shared memory) as ``version`` once no
        generation runs; return the seconds the engine was held.

        Shielded: a caller that goes away (client disconnect, shutdown) must not stop a swap between
        the reload and the version change."""
        return await asyncio.shield(asyncio.ensure_future(self._swap(version, source)))

    async def _swap(self, version: int, source: list[Path] | SharedWeights) -> float:
        if isinstance(source, SharedWeights):
            method, args = "prft_reload_shared_weights", (source.name,)
        else:
            method, args = "prft_reload_weights", ([str(p) for p in source],)
        async with self._swap_lock:
            async with self.gate.exclusive():
                started = time.monotonic()
                # No hold runs now, but an aborted request may still be in the engine: let it end.
                await self.llm.pause_generation(mode="wait", clear_cache=True)
                try:
                    await self.llm.collective_rpc(method, args=args)
                    # Cached KV blocks were computed by the old weights.
                    if not await self.llm.reset_prefix_cache():
                        raise EngineFailed("the prefix cache could not be reset after a weight swap")
                except Exception as exc:
                    # The weights were checked against the served model's shapes first, so this is an
                    # engine fault; part of the model may hold new weights: stop serving (not ready).
                    self._dead = exc
                    raise EngineFailed(f"weight swap to v{version} failed: {exc}") from exc
                finally:
                    await self.llm.resume_generation()
                self.gate.version = version
                seconds = time.monotonic() - started
        self.last_swap_seconds = seconds
        self.metrics.version.set(version)
        self.metrics.swap_seconds.observe(seconds)
        return seconds

    async def weights_checksum(self) -> float:
        return (await self.llm.collective_rpc("prft_weights_checksum"))[0]
