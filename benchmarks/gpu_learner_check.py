"""The learner alone on one GPU at the paper's scale: memory, step time and tokens/s.

A randomly initialised model with Qwen2.5-Math-1.5B's shapes, trained by the real Trainer and
DeepSpeed engine (bf16, one rank, NCCL, ZeRO stage 2 by default) on one group of rows whose total
lengths are drawn between a quarter of and the full row size (2k, 4k, 8k tokens), as RL responses
vary; each row size with gradient checkpointing off and on, padded micro-batches of
``--micro-batch`` rows and packed micro-batches of ``--micro-batch`` x row-size tokens. Printed
as a table: peak GPU memory (allocated, over the timed steps, optimizer state included), median
step time and tokens per second (real tokens, no padding). A setting that runs out of memory
prints OOM and the next one runs.

One engine serves every setting (checkpointing is switched on the model, packing is the
trainer's), so the 3 GB model is loaded once. Needs torch with CUDA, DeepSpeed and transformers;
no model download (the weights are random) and no vLLM.

    PYTHONPATH=. python benchmarks/gpu_learner_check.py [--rows 2048,4096,8192] [--group 8] [--micro-batch 2]
        [--steps 3] [--zero-stage 2] [--work-dir /tmp/prft-gpu-check]
    PYTHONPATH=. python benchmarks/gpu_learner_check.py --dry-run   # on CPU: tiny shapes, gloo, fp32, same path
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from learner_step import QWEN25_MATH_1_5B, random_model_dir, synthetic_groups, timed_steps

TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True)
PROMPT_TOKENS = 256


@dataclass
class Row:
    row_tokens: int
    checkpointing: bool
    packed: bool
    passes: int = 0
    peak_gib: float | None = None
    step_s: float | None = None
    tokens_per_s: float | None = None
    note: str = ""


def row_lengths(row_tokens: int, count: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(row_tokens // 4, row_tokens) for _ in range(count)]


def settings_for(args, model_dir: Path, row_tokens: int, packed: bool, checkpointing: bool):
    from services.learner.settings import LearnerSettings

    return LearnerSettings(
        model=str(model_dir),
        algorithm={"name": "prefix-rft", "n_rollouts": args.group},
        batch_prompts=1, mini_batch_prompts=1, micro_batch=args.micro_batch,
        micro_batch_tokens=args.micro_batch * row_tokens if packed else None,
        gradient_checkpointing=checkpointing,
        sampling={"temperature": 1.0, "max_tokens": row_tokens},
        optimizer={"lr": 1e-6},
        deepspeed={"zero_stage": args.zero_stage, "dtype": args.dtype, "backend": args.backend},
    )


def measure(args, engine, info, settings, batch) -> Row:
    from services.learner.engine import set_gradient_checkpointing
    from services.learner.trainer import Trainer

    checkpointing = settings.use_gradient_checkpointing
    row = Row(settings.sampling.max_tokens, checkpointing, settings.micro_batch_tokens is not None)
    set_gradient_checkpointing(engine.module, checkpointing)
    trainer = Trainer(engine, settings, info)
    row.passes = len(trainer._mini(batch.to(info.device), 0, batch.rows).micros)
    cuda = info.device.type == "cuda"
    try:
        trainer.train(batch, sft=False)  # warm-up: kernels, allocator
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        figures = timed_steps(trainer, batch, args.steps)
    except torch.OutOfMemoryError:
        row.note = "OOM"
        engine.optimizer.zero_grad()
        return row
    finally:
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    row.peak_gib = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    row.step_s, row.tokens_per_s = figures.step_s, figures.tokens_per_s
    return row


def print_table(rows: list[Row], title: str) -> None:
    print(f"\n{title}")
    print("| row tokens | checkpointing | packing | passes | peak memory | step time | tokens/s |")
    print("|---:|:---:|:---:|---:|---:|---:|---:|")
    for r in rows:
        peak = f"{r.peak_gib:.1f} GiB" if r.peak_gib is not None else ("-" if not r.note else r.note)
        step = f"{r.step_s:.2f} s" if r.step_s is not None else r.note or "-"
        rate = f"{r.tokens_per_s:,.0f}" if r.tokens_per_s is not None else r.note or "-"
        print(f"| {r.row_tokens} | {'on' if r.checkpointing else 'off'} | {'on' if r.packed else 'off'} | "
              f"{r.passes} | {peak} | {step} | {rate} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="2048,4096,8192", help="row sizes in tokens, comma-separated")
    parser.add_argument("--group", type=int, default=8, help="rows per step (one group)")
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--zero-stage", type=int, default=2, choices=[0, 1, 2, 3])
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "prft-gpu-check")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, rows of 64/128/256, gloo, fp32")
    args = parser.parse_args()
    if args.dry_run:
        shapes, sizes, args.dtype, args.backend, args.steps = TINY, [64, 128, 256], "fp32", "gloo", 1
        model_dtype = torch.float32
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device: this check is for a GPU machine (--dry-run runs its CPU path)")
        shapes, args.dtype, args.backend, model_dtype = QWEN25_MATH_1_5B, "bf16", "nccl", torch.bfloat16
        sizes = [int(s) for s in args.rows.split(",")]
    prompt_tokens = min(PROMPT_TOKENS, min(sizes) // 4)

    from services.learner.batching import collate
    from services.learner.engine import build_engine, init_distributed

    name = "tiny" if args.dry_run else "qwen2.5-math-1.5b-shapes"
    model_dir = random_model_dir(shapes, args.work_dir / name, dtype=model_dtype)
    first = settings_for(args, model_dir, max(sizes), packed=False, checkpointing=False)
    info = init_distributed(first)
    engine = build_engine(first, model_dir, info)
    print(f"model {name}: {sum(p.numel() for p in engine.module.parameters()) / 1e9:.2f} B parameters, "
          f"{args.dtype}, ZeRO-{args.zero_stage}, {args.backend}, device {info.device}"
          + (f" ({torch.cuda.get_device_name()})" if info.device.type == "cuda" else ""))

    rows = []
    for size in sizes:
        groups = synthetic_groups(row_lengths(size, args.group, seed=size), prompt_tokens, shapes["vocab_size"],
                                  group_size=args.group)
        # The least memory first: a setting that runs out leaves the others measured.
        for checkpointing, packed in ((True, True), (True, False), (False, True), (False, False)):
            settings = settings_for(args, model_dir, size, packed, checkpointing)
            batch = collate(groups, settings.algorithm, pad_token_id=0)
            row = measure(args, engine, info, settings, batch)
            rows.append(row)
            print_table([row], f"{size} tokens, checkpointing {checkpointing}, packing {packed}:")
    print_table(rows, f"One training step, {args.group} rows of a quarter to all of the row size, micro-batches of "
                      f"{args.micro_batch} rows or {args.micro_batch} x row-size tokens (packed)")


if __name__ == "__main__":
    main()
