"""Bytes per token of a trajectory group on the bus: the JSON codec (schema 1) against the binary arrays
of schema 2 (token ids and log-probs as little-endian arrays of the narrowest exact dtype).

Three kinds of groups: real ones left in a finished run's Redis (``--run``: its append-only file is
loaded into a private redis-server), groups of the built-in model's shape (its vocabulary, 8 responses,
text decoded by its tokenizer), and groups of the paper's shape (a 151,646-token vocabulary, 8 responses
of 8,192 tokens, 4 bytes of text per token). Bytes per token = every field of the stream entry divided by
the group's response tokens. Log-probs are float32 values, as the engine returns them.

    .venv/bin/python benchmarks/codec_bench.py [--run runs/redis-flat-bench/run] [--groups 20]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from launcher.processes import start_redis_server
from shared.bus import Keys, LedgerQueries, codec, connect
from shared.messages import RolloutKind, Trajectory, TrajectoryGroup

PAPER_VOCAB = 151_646


def synthetic(rng: random.Random, vocab: int, rollouts: int, tokens: int, text_of) -> TrajectoryGroup:
    trajectories = []
    for i in range(rollouts):
        n = rng.randint(tokens // 2, tokens)
        ids = [rng.randrange(vocab) for _ in range(n)]
        prefix = n // 3 if i % 2 else 0  # every other response continues a demonstration prefix
        logprobs = np.float32(-np.random.default_rng(i).exponential(0.7, n - prefix)).astype(float).tolist()
        trajectories.append(Trajectory(
            kind=RolloutKind.hybrid if prefix else RolloutKind.on_policy, response_token_ids=ids, prefix_len=prefix,
            behaviour_logprobs=logprobs, policy_version=3, reward=float(i % 2), correct=bool(i % 2),
            finish_reason="stop", text=text_of(ids),
        ))
    prompt = [rng.randrange(vocab) for _ in range(rng.randint(40, 200))]
    return TrajectoryGroup(id=f"run-{rng.randrange(10**8):08d}", prompt_id="p", issued_at_version=3, step=10,
                           worker_id="worker-0", prompt_token_ids=prompt, trajectories=trajectories)


def builtin_groups(n: int, rng: random.Random) -> list[TrajectoryGroup]:
    from shared.base_policy import default_base_policy
    from shared.modeling import load_tokenizer

    tokenizer = load_tokenizer(default_base_policy())
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    return [synthetic(rng, len(tokenizer), 8, 96, decode) for _ in range(n)]


def paper_groups(n: int, rng: random.Random) -> list[TrajectoryGroup]:
    return [synthetic(rng, PAPER_VOCAB, 8, 8192, lambda ids: "x" * (4 * len(ids))) for _ in range(n)]


def run_groups(run_dir: Path) -> list[TrajectoryGroup]:
    """The groups still in a stopped run's trajectories stream (the consumed ones are trimmed)."""
    config = yaml.safe_load((run_dir / "job.yaml").read_text())
    with tempfile.TemporaryDirectory(prefix="prft-codec-") as tmp:
        shutil.copytree(run_dir / "redis" / "appendonlydir", Path(tmp) / "appendonlydir")
        process, url = start_redis_server(Path(tmp), appendonly=True)
        try:
            client = connect(url, reconnect=False)
            groups = LedgerQueries(client, Keys(config["redis"]["namespace"])).groups()
            client.close()
        finally:
            process.stop()
    return groups


def v1(message: TrajectoryGroup) -> dict[bytes, bytes]:
    """What the JSON codec (schema 1) wrote."""
    return {b"v": b"1", b"t": type(message).__name__.encode(),
            b"d": message.model_dump_json(exclude_defaults=True).encode()}


def measure(groups: list[TrajectoryGroup]) -> dict[str, float]:
    tokens = sum(len(t.response_token_ids) for g in groups for t in g.trajectories)
    out: dict[str, float] = {"groups": len(groups), "response tokens": tokens}
    for name, encode in (("json", v1), ("binary", codec.encode)):
        started = time.perf_counter()
        entries = [encode(g) for g in groups]
        encode_s = time.perf_counter() - started
        started = time.perf_counter()
        decoded = [codec.decode(TrajectoryGroup, e) for e in entries]
        decode_s = time.perf_counter() - started
        assert decoded == groups, f"{name}: a group did not round-trip"
        size = sum(len(k) + len(v) for e in entries for k, v in e.items())
        text = sum(len(t.text.encode()) for g in groups for t in g.trajectories)
        out[f"{name} B/token"] = size / tokens
        out[f"{name} B/token without text"] = (size - text) / tokens
        out[f"{name} encode+decode us/token"] = (encode_s + decode_s) / tokens * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="a finished run's directory (job.yaml, redis/appendonlydir)")
    parser.add_argument("--groups", type=int, default=20, help="synthetic groups per shape")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.groups < 1:
        parser.error(f"--groups {args.groups}: at least 1")
    rng = random.Random(args.seed)
    sets = {"built-in model shape": builtin_groups(args.groups, rng),
            "paper shape (8 x 8k tokens)": paper_groups(max(1, args.groups // 5), rng)}
    if args.run is not None:
        real = run_groups(args.run)
        if not real:
            parser.error(f"--run {args.run}: no trajectory group is left in its stream")
        sets = {f"real groups of {args.run}": real, **sets}
    results = {name: measure(groups) for name, groups in sets.items()}
    table = Table(title="trajectory group on the bus: JSON (schema 1) vs binary arrays (schema 2)")
    columns = list(next(iter(results.values())))
    table.add_column("groups of")
    for column in columns:
        table.add_column(column, justify="right")
    for name, row in results.items():
        table.add_row(name, *(f"{row[c]:.0f}" if c in ("groups", "response tokens") else f"{row[c]:.2f}"
                              for c in columns))
    Console(width=200).print(table)
    for name, row in results.items():
        print(f"{name}: {row['json B/token']:.2f} -> {row['binary B/token']:.2f} bytes per token "
              f"({row['json B/token'] / row['binary B/token']:.2f}x smaller)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
