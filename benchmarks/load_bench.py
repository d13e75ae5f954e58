"""Load on the reward and rollout services: requests/s, p50/p99 latency and failures at 1, 8 and 32
concurrent clients, printed as a table. Loopback only; every level is bounded in requests and in time.

- reward: POST /v1/score with ``--items`` mixed math items per request (reward_bench's items), a
  real ``python -m services.reward`` process with ``--reward-workers`` verifier workers;
- rollout: POST /v1/generate, one arithmetic prompt, n=``--n`` samples of up to ``--max-tokens``
  tokens (rollout_bench's workload), a real ``python -m services.rollout`` process on the built-in model.

A failure is any answer other than 200, or a transport error or a timeout (``--timeout`` seconds).

    .venv/bin/python benchmarks/load_bench.py [--requests 200] [--seconds 60] [--clients 1 8 32]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from reward_bench import make_items, running_service
from rich.console import Console
from rich.table import Table
from rollout_bench import Worker, workload

from shared.api.http import RetryPolicy, ServiceRefused, ServiceUnavailable
from shared.api.reward import RewardClient, ScoreItem
from shared.api.rollout import GenerateRequest, RolloutClient


@dataclass
class Level:
    service: str
    clients: int
    requests: int
    seconds: float
    latencies: list[float]
    failures: int
    first_failure: str | None

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        if len(self.latencies) == 1:
            return self.latencies[0]
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q) - 1]


Client = TypeVar("Client", RewardClient, RolloutClient)
NO_RETRY = RetryPolicy(retries=0)  # under load every failure counts: none is retried away


async def _load(
    client: Client, send: Callable[[Client, int], Awaitable[object]], clients: int, requests: int, seconds: float
) -> tuple[int, float, list[float], int, str | None]:
    """``clients`` loops sending requests until ``requests`` were sent or ``seconds`` passed."""
    counter = itertools.count()
    latencies: list[float] = []
    failures = 0
    first_failure: str | None = None
    deadline = time.perf_counter() + seconds

    async def client_loop() -> None:
        nonlocal failures, first_failure
        while time.perf_counter() < deadline and (i := next(counter)) < requests:
            started = time.perf_counter()
            try:
                await send(client, i)
                problem = None
            except (ServiceRefused, ServiceUnavailable) as exc:
                problem = str(exc)
            if problem is None:
                latencies.append(time.perf_counter() - started)
            else:
                failures += 1
                first_failure = first_failure or problem

    async with client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return len(latencies) + failures, elapsed, latencies, failures, first_failure


def run_levels(
    service: str,
    connect: Callable[[int], Client],
    send: Callable[[Client, int], Awaitable[object]],
    args,
    console: Console,
) -> list[Level]:
    """``connect(n)``: a client for ``n`` concurrent requests; ``send(client, i)``: the i-th request."""
    asyncio.run(_load(connect(2), send, 2, 4, args.seconds))  # warm-up, not measured
    levels = []
    for clients in args.clients:
        with console.status(f"{service}: {clients} concurrent clients"):
            sent, elapsed, latencies, failures, first = asyncio.run(
                _load(connect(clients), send, clients, args.requests, args.seconds)
            )
        levels.append(Level(service, clients, sent, elapsed, latencies, failures, first))
    return levels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="most requests per level")
    parser.add_argument("--seconds", type=float, default=60.0, help="most seconds per level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--items", type=int, default=4, help="items per score request")
    parser.add_argument("--reward-workers", type=int, default=1)
    parser.add_argument("--n", type=int, default=2, help="samples per generate request")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a request counts as failed")
    parser.add_argument("--only", choices=["reward", "rollout"], help="load one service only")
    args = parser.parse_args()
    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="prft-load-bench-"))
    os.environ["VLLM_RPC_BASE_PATH"] = tempfile.mkdtemp(prefix="prft-load-rpc-")  # short: a socket path
    levels: list[Level] = []
    try:
        if args.only in (None, "reward"):
            items = [ScoreItem(**item.as_json()) for item in make_items(4096, seed=7)]

            def score(client: RewardClient, i: int) -> Awaitable[object]:
                start = (i * args.items) % (len(items) - args.items)
                return client.score(items[start : start + args.items])

            with running_service(args.reward_workers, make_items(8, seed=1), args.items, 1, tmp) as reward:

                def reward_client(n: int) -> RewardClient:
                    return RewardClient(reward.url, args.timeout, NO_RETRY, max_connections=n)

                levels += run_levels("reward", reward_client, score, args, console)
        if args.only in (None, "rollout"):
            from shared.base_policy import default_init_model

            model_dir = default_init_model()
            requests = [GenerateRequest.model_validate(r) for r in workload(model_dir, 64, args.n, args.max_tokens)]
            worker = Worker(model_dir, tmp, "load")

            def rollout_client(n: int) -> RolloutClient:
                return RolloutClient(worker.url, timeout_s=args.timeout, retry=NO_RETRY, max_connections=n)

            def generate(client: RolloutClient, i: int) -> Awaitable[object]:
                return client.generate(requests[i % len(requests)])

            try:
                levels += run_levels("rollout", rollout_client, generate, args, console)
            finally:
                worker.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(os.environ["VLLM_RPC_BASE_PATH"], ignore_errors=True)
    print_table(levels, args, console)
    failed = sum(level.failures for level in levels)
    if failed:
        raise SystemExit(f"{failed} requests failed under load")


def print_table(levels: list[Level], args, console: Console) -> None:
    table = Table(
        title=f"Load (loopback; at most {args.requests} requests or {args.seconds:.0f} s per level; "
        f"score: {args.items} items/request, {args.reward_workers} verifier worker(s); "
        f"generate: n={args.n}, max_tokens={args.max_tokens}; load average {os.getloadavg()[0]:.1f})"
    )
    for column in ("service", "clients", "requests", "requests/s", "p50 ms", "p99 ms", "failures"):
        table.add_column(column, justify="left" if column == "service" else "right")
    for level in levels:
        table.add_row(
            level.service,
            str(level.clients),
            str(level.requests),
            f"{level.rate:.1f}",
            f"{1000 * level.percentile(50):.0f}",
            f"{1000 * level.percentile(99):.0f}",
            str(level.failures),
        )
    console.print(table)
    for level in levels:
        if level.first_failure:
            console.print(f"{level.service} x{level.clients}: first failure: {level.first_failure}")


if __name__ == "__main__":
    main()
