"""Rollout service throughput and weight-swap figures, printed as a table.

1. In-process: the vLLM AsyncLLM engine built with the service's own engine arguments, called
   directly from this process (all requests submitted at once).
2. HTTP: the same workload through a real ``python -m services.rollout`` process, one concurrent
   client per prompt (POST /v1/generate with n samples each).
   Same prompts, seeds and sampling in both, so both generate the same tokens. Goal: HTTP tokens/s
   at least 0.95 x in-process.
3. Weight swap: POST /v1/weights (file:// and http://) on the default model and on a model of
   SmolLM2-135M's shape (Llama, 30 layers, hidden 576, vocabulary 49152, tied embeddings; random
   weights built locally, since no checkpoint can be downloaded: the swap time depends on the
   shapes, not on the values), and a manifest version (file transport) that the worker applies from
   memory. Figures: the push's answer (202, once validated), the time until the worker serves the
   version (polling GET /v1/weights), and the time the engine was held.
4. Start-up: from spawning a worker (worker loop on, with a private redis-server) to /readyz
   answering 200 and to its registry entry appearing in Redis (goal: ready within 10 s).

Workload default: 32 prompts x n=8 x up to 128 tokens on the built-in model (random init, so
samples rarely stop early), temperature 1.0.

    .venv/bin/python benchmarks/rollout_bench.py [--prompts 32] [--n 8] [--max-tokens 128] [--repeats 3]
    .venv/bin/python benchmarks/rollout_bench.py --startup-only [--startup-repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.server
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from launcher.processes import free_port, start_process, start_redis_server, wait_http_ready
from shared.api.http import RetryPolicy
from shared.api.rollout import GenerateRequest, RolloutClient, WeightUpdate
from shared.api.weights import WEIGHTS_FILE
from shared.datasets.arithmetic import ArithmeticDataset
from shared.modeling import cached_build, default_cache_dir, load_tokenizer, prompt_token_ids
from shared.weights.manifest import write_manifest
from shared.weights.settings import WeightsSettings

TOKEN = "bench-token"
SMOLLM2_135M_SHAPE = dict(
    hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
    vocab_size=49152, max_position_embeddings=2048, rope_theta=100000.0, tie_word_embeddings=True,
)


def workload(model_dir: Path, prompts: int, n: int, max_tokens: int) -> list[dict]:
    tokenizer = load_tokenizer(model_dir)
    problems = ArithmeticDataset().problems("warmup")[:prompts]
    return [
        {
            "prompt_token_ids": prompt_token_ids(tokenizer, p.prompt),
            "n": n,
            "sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": max_tokens, "seed": 1000 + i},
        }
        for i, p in enumerate(problems)
    ]


# ---------------------------------------------------------------------------------------------- in-process


def run_in_process(model_dir: Path, requests: list[dict], repeats: int, tmp: Path) -> list[tuple[float, int]]:
    from services.rollout.engine import RolloutEngine, configure_vllm_environment
    from services.rollout.metrics import RolloutMetrics
    from services.rollout.settings import RolloutSettings

    os.environ.setdefault("VLLM_CACHE_ROOT", str(tmp / "vllm-cache"))
    settings = RolloutSettings(model=model_dir, worker_enabled=False)
    configure_vllm_environment(settings)

    async def main() -> list[tuple[float, int]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        engine = RolloutEngine(settings, model_dir, RolloutMetrics())
        await engine.start()

        async def one(request: dict) -> int:
            s = request["sampling"]
            params = SamplingParams(
                n=request["n"], temperature=s["temperature"], top_p=s["top_p"], max_tokens=s["max_tokens"],
                seed=s["seed"], logprobs=0, output_kind=RequestOutputKind.FINAL_ONLY,
            )
            prompt = TokensPrompt(prompt_token_ids=request["prompt_token_ids"])
            async for output in engine.llm.generate(prompt, params, uuid.uuid4().hex):
                final = output
            return sum(len(c.token_ids) for c in final.outputs)

        try:
            await one({**requests[0], "n": 1, "sampling": {**requests[0]["sampling"], "max_tokens": 8}})  # warm-up
            runs = []
            for _ in range(repeats):
                started = time.perf_counter()
                tokens = sum(await asyncio.gather(*(one(r) for r in requests)))
                runs.append((time.perf_counter() - started, tokens))
            return runs
        finally:
            engine.shutdown()

    return asyncio.run(main())


# ---------------------------------------------------------------------------------------------- over HTTP


class Worker:
    """A rollout process; ``ready_s`` is the time from spawn to /readyz 200."""

    def __init__(self, model_dir: Path, tmp: Path, name: str, redis_url: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = name
        env = {
            "PRFT_AUTH__TOKEN": TOKEN,
            "PRFT_ROLLOUT__WORKER_ID": name,
            "PRFT_ROLLOUT__HEARTBEAT_S": "0.2",
            "VLLM_RPC_BASE_PATH": os.environ["VLLM_RPC_BASE_PATH"],
            "VLLM_CACHE_ROOT": str(tmp / "vllm-cache"),  # shared, as in a run: the first start fills it
        }
        argv = [sys.executable, "-m", "services.rollout", "--model", str(model_dir), "--port", str(self.port)]
        if redis_url:
            env["PRFT_REDIS__URL"] = redis_url
            env["PRFT_REDIS__NAMESPACE"] = f"bench-{name}"
        else:
            argv.append("--no-worker")
        self.started = time.perf_counter()
        self.process = start_process(name, argv, tmp / f"{name}.log", env=env)
        wait_http_ready(self.process, f"{self.url}/readyz", timeout=600, interval=0.05)
        self.ready_s = time.perf_counter() - self.started

    def stop(self) -> None:
        self.process.stop()


def run_http(url: str, requests: list[dict], repeats: int) -> list[tuple[float, int]]:
    bodies = [GenerateRequest.model_validate(r) for r in requests]

    async def main() -> list[tuple[float, int]]:
        no_retry = RetryPolicy(retries=0)  # a failure must show, not be hidden in the timing
        async with RolloutClient(url, retry=no_retry, max_connections=len(bodies) + 4) as client:

            async def one(request: GenerateRequest) -> int:
                return sum(len(s.token_ids) for s in (await client.generate(request)).samples)

            first = requests[0]
            warmup = {**first, "n": 1, "sampling": {**first["sampling"], "max_tokens": 8}}
            await one(GenerateRequest.model_validate(warmup))
            # Open one connection per client before timing, as long-lived clients would have.
            await asyncio.gather(*(client.version() for _ in bodies))
            runs = []
            for _ in range(repeats):
                started = time.perf_counter()
                tokens = sum(await asyncio.gather(*(one(r) for r in bodies)))
                runs.append((time.perf_counter() - started, tokens))
            return runs

    return asyncio.run(main())


async def swap_metric_sum(client: RolloutClient) -> float:
    value = await client.metric("rollout_weight_swap_seconds_sum")
    if value is None:
        raise RuntimeError("rollout_weight_swap_seconds_sum missing from /metrics")
    return value


def measure_swaps(url: str, model_dir: Path, repeats: int) -> dict[str, list[tuple[float, float, float]]]:
    """(push answered, until served, engine held) per push, for file:// and http:// sources and for a
    manifest version (file transport) applied from memory. The push is answered once validated; the
    worker fetches and swaps in the background, so "until served" polls GET /v1/weights."""
    weights = model_dir / WEIGHTS_FILE
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(model_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    server.RequestHandlerClass.log_message = lambda *args: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    published = Path(tempfile.mkdtemp(prefix="prft-bench-manifest-"))
    shutil.copy(weights, published / WEIGHTS_FILE)
    manifest = write_manifest(published / WEIGHTS_FILE, 0, WeightsSettings().bucket_bytes)
    http_uri = f"http://127.0.0.1:{server.server_address[1]}/{WEIGHTS_FILE}"
    sources = {
        "file://": lambda version: WeightUpdate(version=version, uri=weights.as_uri()),
        "http://": lambda version: WeightUpdate(version=version, uri=http_uri),
        "manifest (memory)": lambda version: WeightUpdate(
            version=version, uri=(published / WEIGHTS_FILE).as_uri(), manifest=manifest.as_uri(), transport="file"
        ),
    }
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in sources}

    async def pushes() -> None:
        async with RolloutClient(url, TOKEN, retry=RetryPolicy(retries=0)) as client:
            version = await client.version()
            for _ in range(repeats):
                for kind, update in sources.items():
                    version += 1
                    held_before = await swap_metric_sum(client)
                    started = time.perf_counter()
                    await client.push_weights(update(version))
                    answered = time.perf_counter() - started
                    await client.wait_for_version(version, timeout_s=600, poll_s=0.005)
                    served = time.perf_counter() - started
                    results[kind].append((answered, served, await swap_metric_sum(client) - held_before))

    try:
        asyncio.run(pushes())
    finally:
        server.shutdown()
        shutil.rmtree(published, ignore_errors=True)
    return results


def build_135m(out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from shared.base_policy import default_init_model
    from shared.modeling import save_model

    tokenizer = load_tokenizer(default_init_model())
    config = LlamaConfig(
        **SMOLLM2_135M_SHAPE, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, torch_dtype="float32",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    save_model(model, tokenizer, out)


class ContainerWorker:
    """A rollout worker in the project's image, started as compose or Kubernetes start a joining one
    (``docker run``; host network, so that it reaches the benchmark's Redis on loopback)."""

    def __init__(self, image: str, name: str, redis_url: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.container = f"prft-bench-{name}-{uuid.uuid4().hex[:8]}"
        env = {
            "PRFT_AUTH__TOKEN": TOKEN, "PRFT_ROLLOUT__WORKER_ID": name, "PRFT_ROLLOUT__HEARTBEAT_S": "0.2",
            "PRFT_REDIS__URL": redis_url, "PRFT_REDIS__NAMESPACE": f"bench-{name}",
        }
        argv = ["docker", "run", "--detach", "--network", "host", "--name", self.container]
        for key, value in env.items():
            argv += ["--env", f"{key}={value}"]
        argv += [image, "rollout", "--host", "127.0.0.1", "--port", str(self.port)]
        self.started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        else:
            raise TimeoutError(f"{self.container} not ready after 600 s:\n{self.logs()}")
        self.ready_s = time.perf_counter() - self.started

    def logs(self) -> str:
        return subprocess.run(["docker", "logs", "--tail", "40", self.container], capture_output=True, text=True).stdout

    def check_alive(self) -> None:
        state = subprocess.run(["docker", "inspect", "--format", "{{.State.Running}}", self.container],
                               capture_output=True, text=True).stdout.strip()
        if state != "true":
            raise RuntimeError(f"{self.container} exited:\n{self.logs()}")

    def terminate(self) -> int:
        """SIGTERM, as the container runtime sends it; the exit code once it has exited."""
        subprocess.run(["docker", "kill", "--signal", "TERM", self.container], check=True, capture_output=True)
        waited = subprocess.run(["docker", "wait", self.container], check=True, capture_output=True, text=True)
        return int(waited.stdout.strip())

    def stop(self) -> None:
        subprocess.run(["docker", "rm", "--force", self.container], capture_output=True)


class ProcessWorker(Worker):
    """A rollout process of this environment, with the worker loop on."""

    def check_alive(self) -> None:
        self.process.check_alive()

    def terminate(self) -> int:
        self.process.popen.send_signal(signal.SIGTERM)  # to the worker's process only, as a runtime sends it
        return self.process.popen.wait(120)


def measure_startup(start, redis_url: str, name: str) -> tuple[float, float, float]:
    """Seconds from ``start()`` to /readyz 200 and to the worker's registry entry in Redis, then, idle,
    from SIGTERM to its exit (which must be clean)."""
    from shared.bus import Keys, WorkerRegistry, connect

    client = connect(redis_url)
    worker = start()
    try:
        registry = WorkerRegistry(client, Keys(f"bench-{name}"))
        while registry.get(name) is None:
            worker.check_alive()
            time.sleep(0.02)
        registered_s = time.perf_counter() - worker.started
        signalled = time.perf_counter()
        code = worker.terminate()
        stopped_s = time.perf_counter() - signalled
        if code != 0:
            raise RuntimeError(f"{name} exited {code} after SIGTERM")
        return worker.ready_s, registered_s, stopped_s
    finally:
        worker.stop()
        client.close()


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--swap-repeats", type=int, default=3)
    parser.add_argument("--skip-135m", action="store_true", help="skip the 135M-parameter swap figures")
    parser.add_argument("--startup-only", action="store_true", help="measure the worker start-up only")
    parser.add_argument("--startup-repeats", type=int, default=2, help="warm starts per environment")
    parser.add_argument("--image", help="also start workers from this image (prefix-rft:cpu: make images)")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    console = Console()
    from shared.base_policy import default_init_model

    model_dir = default_init_model()
    tmp = Path(tempfile.mkdtemp(prefix="prft-rollout-bench-"))
    os.environ["VLLM_RPC_BASE_PATH"] = tempfile.mkdtemp(prefix="prft-bench-rpc-")  # short: a socket path
    try:
        run_benchmark(args, console, model_dir, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(os.environ["VLLM_RPC_BASE_PATH"], ignore_errors=True)


@dataclass
class Starts:
    """One environment's starts: (to /readyz, to registered, idle SIGTERM to exit) each."""

    label: str
    cold: tuple[float, float, float] | None  # the first start with vLLM's cache empty, where measured
    warm: list[tuple[float, float, float]]

    def rows(self) -> list[tuple[str, str, str]]:
        rows = []
        if self.cold:
            rows.append((f"{self.label}: start to /readyz, vLLM's cache empty (a machine's first) s",
                         f"{self.cold[0]:.1f}", ""))
        for index, figure in enumerate(("start to /readyz", "start to registered in Redis", "idle SIGTERM to exit")):
            values = [start[index] for start in self.warm]
            rows.append((f"{self.label}: {figure} s", f"{min(values):.1f}", f"{statistics.median(values):.1f}"))
        return rows

    def figures(self) -> dict:
        return {"label": self.label, "cold": self.cold, "warm": self.warm}


def measure_startups(model_dir: Path, tmp: Path, repeats: int, console: Console, image: str | None) -> list[Starts]:
    """Starts of a worker of this environment (the first with an empty vLLM cache, the rest sharing it,
    as a run's workers do) and, with ``image``, of the image's (whose cache the image holds)."""
    environments = [("this environment", lambda name: ProcessWorker(model_dir, tmp, name, redis_url=redis_url), True)]
    if image:
        environments.append((f"image {image}", lambda name: ContainerWorker(image, name, redis_url), False))
    results = []
    with console.status("worker start-up"):
        redis_process, redis_url = start_redis_server(tmp / "redis")
        try:
            for label, start, cold_first in environments:
                starts = []
                for i in range(repeats + cold_first):
                    name = f"startup-{len(results)}-{i}"
                    starts.append(measure_startup(functools.partial(start, name), redis_url, name))
                    ready_s, registered_s, stopped_s = starts[-1]
                    cold = " (vLLM's cache empty)" if cold_first and i == 0 else ""
                    console.print(
                        f"{label}, start {i + 1}{cold}: /readyz after {ready_s:.1f} s, registered after "
                        f"{registered_s:.1f} s; idle SIGTERM to exit {stopped_s:.1f} s"
                    )
                results.append(Starts(label, starts[0] if cold_first else None, starts[cold_first:]))
        finally:
            redis_process.stop()
    return results


def run_startup_only(args, console: Console, model_dir: Path, tmp: Path) -> None:
    load_start = os.getloadavg()[0]
    environments = measure_startups(model_dir, tmp, args.startup_repeats, console, args.image)
    table = Table(title="rollout worker start and stop (goals: ready within 10 s, idle exit within 2 s)")
    table.add_column("figure")
    table.add_column("best", justify="right")
    table.add_column("median", justify="right")
    for starts in environments:
        for row in starts.rows():
            table.add_row(*row)
    console.print(table)
    console.print(f"load average (1 min) at start {load_start:.2f}, at end {os.getloadavg()[0]:.2f}")
    if args.out:
        args.out.write_text(json.dumps({"startups": [starts.figures() for starts in environments]}, indent=1))


def run_benchmark(args, console: Console, model_dir: Path, tmp: Path) -> None:
    if args.startup_only:
        run_startup_only(args, console, model_dir, tmp)
        return
    requests = workload(model_dir, args.prompts, args.n, args.max_tokens)
    figures: dict = {"workload": {"prompts": args.prompts, "n": args.n, "max_tokens": args.max_tokens},
                     "load_average_start": os.getloadavg()[0]}

    with console.status("in-process engine"):
        in_process = run_in_process(model_dir, requests, args.repeats, tmp)
    with console.status("HTTP service"):
        worker = Worker(model_dir, tmp, "http")
        try:
            over_http = run_http(worker.url, requests, args.repeats)
            swaps_default = measure_swaps(worker.url, model_dir, args.swap_repeats)
        finally:
            worker.stop()

    swaps_135m = None
    if not args.skip_135m:
        with console.status("135M-parameter model (built once, cached)"):
            model_135m = cached_build(default_cache_dir(), "bench-smollm2-135m-shape-v1", build_135m)
            worker = Worker(model_135m, tmp, "http-135m")
            try:
                swaps_135m = measure_swaps(worker.url, model_135m, args.swap_repeats)
            finally:
                worker.stop()

    environments = measure_startups(model_dir, tmp, args.startup_repeats, console, args.image)

    def rate(runs):
        return [tokens / seconds for seconds, tokens in runs]

    tps_in, tps_http = rate(in_process), rate(over_http)
    if {t for _, t in in_process} != {t for _, t in over_http}:
        console.print("[yellow]warning: the two paths generated different token counts[/yellow]")
    table = Table(title=f"rollout: {args.prompts} prompts x n={args.n} x up to {args.max_tokens} tokens")
    table.add_column("figure")
    table.add_column("best", justify="right")
    table.add_column("median", justify="right")
    table.add_row("tokens per run", str(in_process[0][1]), "")
    table.add_row("in-process tokens/s", f"{max(tps_in):,.0f}", f"{statistics.median(tps_in):,.0f}")
    table.add_row("HTTP tokens/s", f"{max(tps_http):,.0f}", f"{statistics.median(tps_http):,.0f}")
    table.add_row("HTTP / in-process", f"{max(tps_http) / max(tps_in):.3f}",
                  f"{statistics.median(tps_http) / statistics.median(tps_in):.3f}")
    swap_sets = [("default model", swaps_default)] + ([("135M model", swaps_135m)] if swaps_135m else [])
    for label, swaps in swap_sets:
        for kind, rows in swaps.items():
            trips, served, held = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
            table.add_row(f"swap {label} {kind}: push answered s", f"{min(trips):.3f}",
                          f"{statistics.median(trips):.3f}")
            table.add_row(f"swap {label} {kind}: push to served s", f"{min(served):.3f}",
                          f"{statistics.median(served):.3f}")
            table.add_row(f"swap {label} {kind}: engine held s", f"{min(held):.3f}", f"{statistics.median(held):.3f}")
    for starts in environments:
        for row in starts.rows():
            table.add_row(*row)
    console.print(table)
    console.print(f"load average (1 min) at start {figures['load_average_start']:.2f}, at end {os.getloadavg()[0]:.2f}")

    figures.update(
        in_process_tokens_per_s=tps_in, http_tokens_per_s=tps_http, tokens_per_run=in_process[0][1],
        ratio_best=max(tps_http) / max(tps_in), ratio_median=statistics.median(tps_http) / statistics.median(tps_in),
        swap_default=swaps_default, swap_135m=swaps_135m, startups=[starts.figures() for starts in environments],
        load_average_end=os.getloadavg()[0],
    )
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
