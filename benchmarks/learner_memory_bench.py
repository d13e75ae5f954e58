"""The learner's memory and throughput on this CPU: gradient checkpointing and padding-free packing.

1. Peak memory of one training step on rows of 2k tokens, gradient checkpointing off and on, and
   their ratio. Each setting runs in its own process (DeepSpeed, gloo, one rank); the peak is the
   process's resident-set high-water mark during the step (reset just before it, after a warm-up
   step has allocated the optimizer state) minus the resident set before it.
2. Tokens per second of a training step on the default job's rows, padded micro-batches of
   ``micro_batch`` rows against packed micro-batches of a token budget that makes the same number
   of passes on average. The rows are the default job's: 16 prompts of the built-in task x 8
   rollouts (7 sampled from the prompt, 1 continuing the first half of a demonstration) sampled
   from the built-in base policy at temperature 1, up to 256 tokens.

    PYTHONPATH=. .venv/bin/python benchmarks/learner_memory_bench.py [--memory-rows 4] [--row-tokens 2048]
        [--micro-batch 2] [--steps 3] [--shapes builtin|wide] [--prompts 16]
        [--skip-memory] [--skip-throughput]

Sampling the rows is the slow part on a busy machine (tens of minutes at a load of 10 on 2 cores):
they are kept in the system's temporary folder and reused by the next run with the same model and
prompts.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from learner_step import random_model_dir, synthetic_groups, timed_steps

BENCH_DIR = Path(tempfile.gettempdir()) / "prft-learner-bench"


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    # Writing 5 to clear_refs resets VmHWM (the peak resident set) to the current resident set.
    Path("/proc/self/clear_refs").write_text("5")


def model_shapes(name: str, max_positions: int) -> dict:
    """``builtin``: the default model's shapes; ``wide``: 4x its width and 2x its depth, where
    activations weigh more against the logits and the optimizer state."""
    from shared.modeling import DefaultModelSpec

    spec = DefaultModelSpec()
    if name == "wide":
        spec = spec.model_copy(update=dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                                           num_attention_heads=8, num_key_value_heads=2))
    return dict(vocab_size=spec.vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
                num_hidden_layers=spec.num_hidden_layers, num_attention_heads=spec.num_attention_heads,
                num_key_value_heads=spec.num_key_value_heads, max_position_embeddings=max_positions,
                tie_word_embeddings=True)


def trainer_for(model_dir: Path, **learner):
    from services.learner.engine import build_engine, init_distributed
    from services.learner.settings import LearnerSettings
    from services.learner.trainer import Trainer

    settings = LearnerSettings(model=str(model_dir), deepspeed={"zero_stage": 0, "gradient_clipping": 1.0},
                               optimizer={"lr": 1e-5}, **learner)
    info = init_distributed(settings)
    return Trainer(build_engine(settings, model_dir, info), settings, info), settings


# ------------------------------------------------------------------------- 1. memory (one process each)


def memory_child(args: argparse.Namespace) -> None:
    from services.learner.batching import collate

    torch.manual_seed(0)
    shapes = model_shapes(args.shapes, max_positions=max(args.row_tokens, 1024))
    model_dir = random_model_dir(shapes, BENCH_DIR / f"{args.shapes}-{args.row_tokens}")
    groups = synthetic_groups([args.row_tokens] * args.memory_rows, prompt_len=128, vocab=shapes["vocab_size"],
                              group_size=args.memory_rows)
    trainer, settings = trainer_for(
        model_dir, algorithm={"name": "prefix-rft", "n_rollouts": args.memory_rows},
        batch_prompts=1, mini_batch_prompts=1, micro_batch=args.micro_batch,
        gradient_checkpointing=args.checkpointing, sampling={"temperature": 1.0, "max_tokens": args.row_tokens},
    )
    batch = collate(groups, settings.algorithm, 0)
    trainer.train(batch, sft=False)  # allocates the optimizer state
    gc.collect()
    before = rss_kib("VmRSS")
    reset_peak()
    figures = timed_steps(trainer, batch, 1)
    peak = rss_kib("VmHWM")
    print(json.dumps({"checkpointing": args.checkpointing, "before_mib": before / 1024,
                      "step_peak_mib": (peak - before) / 1024, "step_s": figures.step_s}))


def run_memory(args: argparse.Namespace) -> None:
    results = {}
    for checkpointing in (False, True):
        argv = [sys.executable, __file__, "--memory-child", "--row-tokens", str(args.row_tokens),
                "--memory-rows", str(args.memory_rows), "--micro-batch", str(args.micro_batch), "--shapes", args.shapes]
        if checkpointing:
            argv.append("--checkpointing")
        # A fixed mmap threshold: glibc otherwise raises it as large blocks are freed, serves the
        # timed step from memory the warm-up step freed but kept, and the peak hides in it.
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "MALLOC_MMAP_THRESHOLD_": "131072",
               "MALLOC_TRIM_THRESHOLD_": "131072"}
        done = subprocess.run(argv, capture_output=True, text=True, env=env)
        if done.returncode:
            sys.exit(f"memory run (checkpointing={checkpointing}) failed:\n{done.stderr[-3000:]}")
        results[checkpointing] = json.loads(done.stdout.strip().splitlines()[-1])
    off, on = results[False], results[True]
    print(f"\n1. One training step, {args.memory_rows} rows of {args.row_tokens} tokens, micro-batches of "
          f"{args.micro_batch} rows, {args.shapes} shapes (DeepSpeed, gloo, fp32, one rank)")
    print(f"{'checkpointing':>14} {'resident before':>16} {'step peak (extra)':>18} {'step time':>10}")
    for name, r in (("off", off), ("on", on)):
        print(f"{name:>14} {r['before_mib']:>12.0f} MiB {r['step_peak_mib']:>14.0f} MiB {r['step_s']:>8.2f} s")
    print(f"peak ratio on/off: {on['step_peak_mib'] / off['step_peak_mib']:.2f}; "
          f"time ratio on/off: {on['step_s'] / off['step_s']:.2f}")


# ------------------------------------------------------------------------- 2. packed against padded


def default_job_groups(model_dir: Path | None, n_prompts: int = 16, n_rollouts: int = 8, max_tokens: int = 256,
                       seed: int = 0):
    """The default job's first step: rows sampled from the base policy (or ``model_dir``), as its
    rollout workers would; from the cache when an earlier run sampled the same ones."""
    from pydantic import TypeAdapter

    from shared.base_policy import default_base_policy
    from shared.messages import TrajectoryGroup
    from shared.modeling import load_tokenizer

    model_dir = (model_dir or default_base_policy()).resolve()
    tokenizer = load_tokenizer(model_dir)
    key = hashlib.sha256(f"{model_dir}|{n_prompts}|{n_rollouts}|{max_tokens}|{seed}".encode()).hexdigest()[:12]
    cache = BENCH_DIR / f"default-job-rows-{key}.json"
    adapter = TypeAdapter(list[TrajectoryGroup])
    if cache.is_file():
        print(f"rows from {cache}", flush=True)
        return adapter.validate_json(cache.read_bytes()), model_dir, tokenizer.pad_token_id
    print(f"sampling {n_prompts} prompts x {n_rollouts} rows from {model_dir} (kept in {cache})", flush=True)
    groups = sample_groups(model_dir, tokenizer, n_prompts, n_rollouts, max_tokens, seed)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(adapter.dump_json(groups))
    return groups, model_dir, tokenizer.pad_token_id


def sample_groups(model_dir: Path, tokenizer, n_prompts: int, n_rollouts: int, max_tokens: int, seed: int):
    from services.learner.settings import LearnerSettings
    from shared.messages import RolloutKind, Trajectory, TrajectoryGroup
    from shared.modeling import load_model, prompt_token_ids, response_token_ids

    model = load_model(model_dir).eval()
    problems = LearnerSettings().dataset.problems("train")[:n_prompts]
    torch.manual_seed(seed)
    groups = []
    for index, problem in enumerate(problems):
        prompt = prompt_token_ids(tokenizer, problem.prompt)
        demo = response_token_ids(tokenizer, problem.demonstrations[0])
        trajectories = []
        for prefix_len, count in ((len(demo) // 2, 1), (0, n_rollouts - 1)):
            context = prompt + demo[:prefix_len]
            with torch.no_grad():
                out = model.generate(
                    torch.tensor([context]), attention_mask=torch.ones(1, len(context), dtype=torch.long),
                    do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=max_tokens - prefix_len,
                    num_return_sequences=count, eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id, output_scores=True, return_dict_in_generate=True,
                )
            steps = torch.log_softmax(torch.stack(out.scores, dim=1).float(), dim=-1)  # [count, new, V]
            for row in range(count):
                new = out.sequences[row, len(context) :].tolist()
                if tokenizer.eos_token_id in new:
                    new = new[: new.index(tokenizer.eos_token_id) + 1]
                logprobs = [float(steps[row, i, t]) for i, t in enumerate(new)]
                trajectories.append(Trajectory(
                    kind=RolloutKind.hybrid if prefix_len else RolloutKind.on_policy,
                    response_token_ids=demo[:prefix_len] + new, prefix_len=prefix_len, behaviour_logprobs=logprobs,
                    policy_version=0, reward=float(len(trajectories) % 2), correct=False,
                ))
        groups.append(TrajectoryGroup(id=f"g{index}", prompt_id=problem.id, issued_at_version=0, step=0,
                                      worker_id="bench", prompt_token_ids=prompt, trajectories=trajectories))
        print(f"  prompt {index + 1}/{n_prompts}", flush=True)
    return groups


def run_throughput(args: argparse.Namespace) -> None:
    from services.learner.batching import collate
    from services.learner.settings import LearnerSettings

    groups, model_dir, pad = default_job_groups(args.policy, n_prompts=args.prompts)
    defaults = LearnerSettings()
    batch = collate(groups, defaults.algorithm, pad)
    lengths = batch.attention_mask.sum(dim=1)
    real, padded_tokens = int(lengths.sum()), 0
    for micro in batch.split(defaults.micro_batch):
        padded_tokens += micro.input_ids.numel()
    budget = int(defaults.micro_batch * lengths.float().mean())
    print(f"\n2. The default job's rows: {batch.rows} rows, {real} tokens, lengths {int(lengths.min())}-"
          f"{int(lengths.max())} (mean {float(lengths.float().mean()):.0f}); padded micro-batches of "
          f"{defaults.micro_batch} rows hold {padded_tokens} positions ({1 - real / padded_tokens:.0%} padding)")
    rows = []
    for name, extra in (("padded", {}), ("packed", {"micro_batch_tokens": budget})):
        print(f"training {name}: a warm-up step and {args.steps} timed", flush=True)
        trainer, _ = trainer_for(model_dir, **extra)
        passes = len(trainer._mini(batch, 0, batch.rows).micros)
        trainer.train(batch, sft=False)  # warm-up
        figures = timed_steps(trainer, batch, args.steps)
        rows.append((name, passes, figures))
        print(f"  {name}: {passes} passes, {figures.step_s:.2f} s per step, {figures.tokens_per_s:.0f} tokens/s",
              flush=True)
        del trainer
        gc.collect()
    print(f"{'':>8} {'passes':>7} {'step time':>10} {'tokens/s':>10}")
    for name, passes, f in rows:
        print(f"{name:>8} {passes:>7} {f.step_s:>8.2f} s {f.tokens_per_s:>10.0f}")
    print(f"packed / padded tokens/s: {rows[1][2].tokens_per_s / rows[0][2].tokens_per_s:.2f} "
          f"(budget {budget} tokens per pass, median of {args.steps} steps)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--row-tokens", type=int, default=2048)
    parser.add_argument("--memory-rows", type=int, default=4)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--shapes", choices=["builtin", "wide"], default="builtin")
    parser.add_argument("--policy", type=Path, default=None, help="model the rows are sampled from and trained "
                        "(default: the built-in base policy, what the default job starts from)")
    parser.add_argument("--prompts", type=int, default=16, help="prompts of the throughput batch (8 rows each; "
                        "the default job's is 16)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args)
        return
    if not args.skip_memory:
        run_memory(args)
    if not args.skip_throughput:
        run_throughput(args)


if __name__ == "__main__":
    main()
