"""What the learner benchmarks share: a randomly initialised model of given shapes, rows of given
lengths as trajectory groups, and one timed training step through the real Trainer and engine.

Imported by ``learner_memory_bench.py`` (CPU) and ``gpu_learner_check.py`` (one GPU); run those.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from shared.messages import RolloutKind, Trajectory, TrajectoryGroup

# Qwen2.5-Math-1.5B's config.json, with positions raised as the paper's recipe prepares it for
# 8k responses (rope_theta 40000 there; it changes no shape).
QWEN25_MATH_1_5B = dict(
    vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
    num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=16384, rope_theta=40000.0,
    tie_word_embeddings=True,
)


def random_model_dir(shapes: dict, out_dir: Path, dtype: torch.dtype = torch.float32, seed: int = 0) -> Path:
    """A Qwen2 causal LM of ``shapes`` with random weights, saved as a Hugging Face directory (the
    learner loads its model from one). Reused when ``out_dir`` already holds it."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if (out_dir / "config.json").is_file():
        return out_dir
    torch.manual_seed(seed)
    config = Qwen2Config(**shapes, bos_token_id=0, eos_token_id=1, pad_token_id=0)
    with torch.device("cpu"):
        model = Qwen2ForCausalLM(config).to(dtype)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def synthetic_groups(
    lengths: list[int], prompt_len: int, vocab: int, group_size: int, seed: int = 0
) -> list[TrajectoryGroup]:
    """Rows of the given total lengths (prompt + response), ``group_size`` per group sharing a
    prompt; the first row of each group is hybrid (half its response a demonstration prefix),
    the others on-policy, sampled by version 0 with made-up behaviour log-probs and rewards."""
    rng = random.Random(seed)
    if len(lengths) % group_size:
        raise ValueError(f"{len(lengths)} rows do not make groups of {group_size}")
    groups = []
    for g in range(len(lengths) // group_size):
        prompt = [rng.randrange(2, vocab) for _ in range(prompt_len)]
        trajectories = []
        for j, total in enumerate(lengths[g * group_size : (g + 1) * group_size]):
            n = max(total - prompt_len, 1)
            prefix = n // 2 if j == 0 else 0
            trajectories.append(Trajectory(
                kind=RolloutKind.hybrid if prefix else RolloutKind.on_policy,
                response_token_ids=[rng.randrange(2, vocab) for _ in range(n)], prefix_len=prefix,
                behaviour_logprobs=[-rng.random() * 3 for _ in range(n - prefix)], policy_version=0,
                reward=float(j % 2), correct=j % 2 == 1,
            ))
        groups.append(TrajectoryGroup(id=f"g{g}", prompt_id=f"p{g}", issued_at_version=0, step=0, worker_id="bench",
                                      prompt_token_ids=prompt, trajectories=trajectories))
    return groups


@dataclass
class StepFigures:
    step_s: float  # median over the timed steps
    tokens: int  # real (unpadded) tokens of the batch
    loss: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.step_s


def timed_steps(trainer, batch, steps: int, before_each=None, after_each=None) -> StepFigures:
    """``steps`` training steps on ``batch``; the median wall time (synchronised on CUDA)."""
    times, loss = [], float("nan")
    for _ in range(steps):
        if before_each:
            before_each()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        metrics = trainer.train(batch, sft=False)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        loss = metrics["loss"]
        if after_each:
            after_each()
    times.sort()
    return StepFigures(step_s=times[len(times) // 2], tokens=int(batch.attention_mask.sum()), loss=loss)
