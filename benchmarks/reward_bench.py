"""Reward service throughput: the same mixed items scored four ways, printed as a table.

1. the service's math verifier (``services.reward.verifiers.verify_math``: answer extraction,
   math-verify and the rules) called directly, one item after another, in this process;
2. the service (a real ``python -m services.reward`` process, over HTTP) with 1 verifier process;
3. the same with 2 verifier processes (``--workers`` to change the list);
4. the machine's ceiling for W processes: W forked copies of the direct run side by side.

Figures: items/s, and p50/p99 latency per request (for the direct run: per batch of the same size).
Goal: the service with W verifier processes reaches 0.9 x W x the direct rate, and agrees with the
direct run on every item it did not time out. For reference, a last line gives the rate of
``math_verify.parse`` + ``verify`` alone on the same two strings (a different verdict on some).

    .venv/bin/python benchmarks/reward_bench.py [--items 1000] [--batch 25] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import multiprocessing.synchronize
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from math_verify import parse, verify
from rich.console import Console
from rich.table import Table

from launcher.processes import free_port, start_process, wait_http_ready
from services.reward.verifiers import verify_math
from shared.api.http import RetryPolicy
from shared.api.reward import Health, RewardClient, ScoreItem, ScoreResult

FILLER = [
    "Let us set up the problem carefully.",
    r"We have $a + b = 2$ and $ab = \frac{1}{2}$, so we substitute.",
    "Expanding and collecting like terms gives a quadratic.",
    r"By the quadratic formula, $x = \frac{-b \pm \sqrt{b^2 - 4ac}}{2a}$.",
    "Checking the boundary cases rules out the extraneous root.",
    r"Hence the value of the expression is determined; note that $3 \cdot 4 = 12$.",
]


def _reasoning(rng: random.Random) -> str:
    return " ".join(rng.choice(FILLER) for _ in range(rng.randint(2, 6)))


def _pair(rng: random.Random, right: bool) -> tuple[str, str]:
    """One (answer in the response, reference) pair of a random notation; wrong when not ``right``."""
    kind = rng.randrange(12)
    a, b, c = rng.randint(1, 40), rng.randint(2, 9), rng.randint(1, 9)
    bump = 0 if right else rng.choice([1, 2, 3])
    if kind == 0:  # fraction vs decimal
        den = rng.choice([2, 4, 5, 8, 10, 20, 25])
        num = rng.randint(1, 99)
        return f"{(num + bump) / den:g}", rf"\frac{{{num}}}{{{den}}}"
    if kind == 1:  # decimal vs fraction
        return rf"\frac{{{2 * a + bump}}}{{4}}", f"{a / 2:g}"
    if kind == 2:  # roots
        return rf"\sqrt{{{b * b * c + bump}}}", rf"{b}\sqrt{{{c}}}" if c not in (1, 4, 9) else str(b * int(c**0.5))
    if kind == 3:  # intervals
        left, right_b = ("(", "]") if right else ("[", "]")
        return f"{left}{a}, {a + b}{right_b}", f"({a}, {a + b}]"
    if kind == 4:  # sets
        items = [a, a + b, a + b + c]
        shown = items[:-1] + [items[-1] + bump]
        rng.shuffle(shown)
        return r"\{" + ", ".join(map(str, shown)) + r"\}", r"\{" + ", ".join(map(str, items)) + r"\}"
    if kind == 5:  # matrices
        m = [a, b, c, a + b]
        shown = m[:3] + [m[3] + bump]
        return (
            rf"\begin{{pmatrix}} {shown[0]} & {shown[1]} \\ {shown[2]} & {shown[3]} \end{{pmatrix}}",
            rf"\begin{{pmatrix}}{m[0]}&{m[1]}\\{m[2]}&{m[3]}\end{{pmatrix}}",
        )
    if kind == 6:  # units
        return rf"{a + bump}\text{{ cm}}", str(a)
    if kind == 7:  # percentages
        return f"{(a + bump) / 100:g}", rf"{a}\%"
    if kind == 8:  # several answers
        return f"{a + b + bump}, {a}", f"{a}, {a + b}"
    if kind == 9:  # expressions
        return f"{b}x + {b * c + bump}", f"{b}(x + {c})"
    if kind == 10:  # negative integers
        return str(-(a * c) - bump), str(-(a * c))
    return rf"{a + bump}^\circ", str(a)  # degrees


@dataclass(frozen=True)
class Item:
    id: str
    response: str
    reference: str

    def as_json(self) -> dict:
        return {"id": self.id, "response": self.response, "reference": self.reference, "verifier": "math"}


def make_items(n: int, seed: int) -> list[Item]:
    rng = random.Random(seed)
    items = []
    for i in range(n):
        right = rng.random() < 0.5
        answer, reference = _pair(rng, right)
        style = rng.random()
        if style < 0.8:
            response = f"{_reasoning(rng)} Therefore the answer is $\\boxed{{{answer}}}$."
        elif style < 0.9:
            response = f"{_reasoning(rng)} The final answer is ${answer}$"
        else:
            response = f"{_reasoning(rng)} I could not finish this one."
        items.append(Item(f"{seed}-{i}", response, reference))
    return items


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _machine_cpu() -> float:
    """CPU seconds used so far by everything on the machine."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICK


@dataclass
class Run:
    name: str
    workers: int | None
    items_per_s: float
    latencies: list[float]
    correct: dict[str, bool]
    statuses: dict[str, str]
    cpu: dict[str, float]  # CPU seconds by role during the timed part; "other": processes not ours


def direct(items: list[Item], batch: int) -> Run:
    """The service's verifier in this process (no deadline), one item after another."""
    correct: dict[str, bool] = {}
    latencies = []
    machine, own = _machine_cpu(), time.process_time()
    started = time.perf_counter()
    for i in range(0, len(items), batch):
        t = time.perf_counter()
        for item in items[i : i + batch]:
            correct[item.id] = verify_math(item.response, item.reference).correct
        latencies.append(time.perf_counter() - t)
    rate = len(items) / (time.perf_counter() - started)
    own = time.process_time() - own
    cpu = {"verify": own, "other": _machine_cpu() - machine - own}
    return Run("verifier direct, 1 process", None, rate, latencies, correct, {k: "ok" for k in correct}, cpu)


def _direct_share(items: list[Item], start: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue) -> None:
    start.wait()
    own = time.process_time()
    correct = {item.id: verify_math(item.response, item.reference).correct for item in items}
    out.put((correct, time.process_time() - own))


def direct_parallel(items: list[Item], workers: int) -> Run:
    """The machine's own ceiling for W processes: W forked copies of this process (warm, no server,
    no HTTP) verify a share of the items each, at the same time. On cores that share caches and
    memory bandwidth, W processes together fall short of W x one process: the service cannot beat this."""
    context = multiprocessing.get_context("fork")
    start, out = context.Barrier(workers + 1), context.Queue()
    processes = [context.Process(target=_direct_share, args=(items[i::workers], start, out)) for i in range(workers)]
    for process in processes:
        process.start()
    machine = _machine_cpu()
    start.wait()
    started = time.perf_counter()
    shares = [out.get() for _ in processes]
    elapsed = time.perf_counter() - started
    for process in processes:
        process.join()
    correct = {k: v for share, _ in shares for k, v in share.items()}
    own = sum(cpu for _, cpu in shares)
    cpu = {"verify": own, "other": _machine_cpu() - machine - own}
    return Run(
        f"verifier direct, {workers} processes in parallel",
        None,
        len(items) / elapsed,
        [elapsed],
        correct,
        {k: "ok" for k in correct},
        cpu,
    )


def math_verify_alone(items: list[Item]) -> float:
    """Items/s of ``parse`` + ``verify`` on the two strings as they are (math-verify's defaults)."""
    started = time.perf_counter()
    for item in items:
        verify(parse(item.reference), parse(item.response))
    return len(items) / (time.perf_counter() - started)


async def _post_all(url: str, items: list[Item], batch: int, concurrency: int) -> tuple[float, list[float], list]:
    batches = [items[i : i + batch] for i in range(0, len(items), batch)]
    queue: asyncio.Queue[list[Item]] = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)
    latencies: list[float] = []
    results: list[ScoreResult] = []

    async def client_loop(client: RewardClient) -> None:
        while not queue.empty():
            chunk = queue.get_nowait()
            t = time.perf_counter()
            results.extend(await client.score([ScoreItem(**it.as_json()) for it in chunk]))
            latencies.append(time.perf_counter() - t)

    no_retry = RetryPolicy(retries=0)  # a failure must show, not be hidden in the timing
    async with RewardClient(url, 600.0, no_retry, max_connections=concurrency) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies, results


async def _health(url: str) -> Health:
    async with RewardClient(url) as client:
        return await client.health()


@contextlib.contextmanager
def running_service(workers: int, warmup: list[Item], batch: int, concurrency: int, logdir: Path) -> Iterator[Service]:
    port = free_port()
    process = start_process(
        f"reward-{workers}",
        [sys.executable, "-m", "services.reward", "--port", str(port), "--workers", str(workers)],
        logdir / f"reward-{workers}.log",
        env={"PRFT_REWARD__LOG_LEVEL": "warning"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ready(process, f"{url}/healthz", timeout=120)
        asyncio.run(_post_all(url, warmup, batch, concurrency))
        yield Service(workers, url, process.pid)
    finally:
        process.stop()


@dataclass
class Service:
    workers: int
    url: str
    pid: int

    def run(self, items: list[Item], batch: int, concurrency: int) -> Run:
        pids = asyncio.run(_health(self.url)).worker_pids
        before = {"workers": sum(map(_proc_cpu, pids)), "server": _proc_cpu(self.pid)}
        machine, client = _machine_cpu(), time.process_time()
        elapsed, latencies, results = asyncio.run(_post_all(self.url, items, batch, concurrency))
        cpu = {
            "verify": sum(map(_proc_cpu, pids)) - before["workers"],
            "server": _proc_cpu(self.pid) - before["server"],
            "client": time.process_time() - client,
        }
        cpu["other"] = _machine_cpu() - machine - sum(cpu.values())
        if asyncio.run(_health(self.url)).worker_pids != pids:
            raise RuntimeError("verifier processes were replaced during the run: CPU figures would be wrong")
        return Run(
            f"service, {self.workers} verifier process{'es' if self.workers > 1 else ''}",
            self.workers,
            len(items) / elapsed,
            latencies,
            {r.id: r.correct for r in results},
            {r.id: r.status.value for r in results},
            cpu,
        )


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=25, help="items per request")
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight")
    parser.add_argument("--workers", default="1,2", help="comma-separated counts of verifier processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1, help="repeat all runs; report each one's fastest round")
    args = parser.parse_args()

    items = make_items(args.items, args.seed)
    warmup = make_items(100, args.seed + 1)
    for item in warmup[:20]:  # math-verify's first calls build its parsers
        verify_math(item.response, item.reference)
        verify(parse(item.reference), parse(item.response))
    worker_counts = [int(x) for x in args.workers.split(",")]
    rounds: list[list[Run]] = []
    with tempfile.TemporaryDirectory(prefix="reward-bench-") as logdir, contextlib.ExitStack() as stack:
        services = [
            stack.enter_context(running_service(w, warmup, args.batch, args.concurrency, Path(logdir)))
            for w in worker_counts
        ]
        # Rounds interleave the three ways, so a burst of load from elsewhere hits them alike.
        for _ in range(args.rounds):
            rounds.append(
                [direct(items, args.batch)]
                + [direct_parallel(items, w) for w in worker_counts if w > 1]
                + [svc.run(items, args.batch, args.concurrency) for svc in services]
            )
    # Per way, its fastest round: the one least disturbed by whatever else ran on the machine.
    runs = [max((r[i] for r in rounds), key=lambda run: run.items_per_s) for i in range(len(rounds[0]))]
    mismatches = sum(
        run.correct[k] != r[0].correct[k]
        for r in rounds
        for run in r[1:]
        for k, status in run.statuses.items()
        if status == "ok"
    )

    base = runs[0]
    ceiling = {1: base.items_per_s} | {
        int(run.name.split(", ")[1].split()[0]): run.items_per_s for run in runs if "in parallel" in run.name
    }
    table = Table(
        title=f"Reward scoring: {args.items} mixed items, {args.batch} per request, "
        f"{args.concurrency} requests in flight, {os.cpu_count()} CPUs, best of {args.rounds} round(s)"
    )
    columns = ["run", "items/s", "x direct", "goal", "x W in parallel", "p50 ms", "p99 ms", "timeouts", "errors"]
    columns += ["agreement"]
    columns += ["CPU ms/item: verify", "server", "client", "not ours (s)"]
    for column in columns:
        table.add_column(column, justify="left" if column == "run" else "right")
    ok = True
    for run in runs:
        speedup = run.items_per_s / base.items_per_s
        goal = ""
        if run.workers is not None:
            goal = f">= {0.9 * run.workers:.2f} " + ("met" if speedup >= 0.9 * run.workers else "MISSED")
        compared = [k for k, s in run.statuses.items() if s == "ok"]
        agree = sum(run.correct[k] == base.correct[k] for k in compared)
        ok &= agree == len(compared) and (run.workers is None or speedup >= 0.9 * run.workers)
        table.add_row(
            run.name,
            f"{run.items_per_s:.1f}",
            f"{speedup:.2f}",
            goal,
            "" if run.workers is None else f"{run.items_per_s / ceiling[run.workers]:.2f}",
            f"{1000 * statistics.median(run.latencies):.0f}",
            f"{1000 * _percentile(run.latencies, 99):.0f}",
            str(sum(s == "timeout" for s in run.statuses.values())),
            str(sum(s == "error" for s in run.statuses.values())),
            f"{agree}/{len(compared)}" + ("" if agree == len(compared) else " MISMATCH"),
            *(f"{1000 * run.cpu[k] / len(items):.2f}" if k in run.cpu else "" for k in ("verify", "server", "client")),
            f"{run.cpu['other']:.1f}",
        )
    Console(width=200).print(table)
    print(
        f"correct per the direct verifier: {sum(base.correct.values())}/{len(items)}; "
        f"disagreements over all rounds: {mismatches}"
    )
    print(
        f"for reference, math-verify alone (parse + verify on the raw strings): {math_verify_alone(items):.1f} items/s"
    )
    ok &= mismatches == 0
    if len(rounds) > 1:
        for i, run in enumerate(runs):
            # Each round's verifier CPU per item next to its outside load: whether a cost comes
            # with a quiet or a busy machine only shows across rounds, not in the best one alone.
            rates = ", ".join(
                f"{r[i].items_per_s:.1f} (not ours {r[i].cpu['other']:.1f} s, "
                f"verify {1000 * r[i].cpu['verify'] / len(r[i].correct):.2f} ms/item)"
                for r in rounds
            )
            print(f"items/s per round, {run.name}: {rates}")
    print("'not ours': CPU seconds other processes on this machine used during the run; figures are only")
    print("comparable when it is near 0.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
