"""What plain transformers computes for the same weights: the reference the rollout engine's output is
checked against."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from shared.modeling import load_model


@functools.lru_cache(maxsize=4)
def hf_model(path: str):
    return load_model(path).eval()


def hf_logprobs(model_dir: Path, context: list[int], continuation: list[int], temperature: float = 1.0):
    """Log-probs of every vocabulary token at each continuation position (one forward of context + continuation)."""
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        logits = hf_model(str(model_dir))(input_ids=ids).logits[0].double()
    steps = logits[len(context) - 1 : len(context) - 1 + len(continuation)]
    return torch.log_softmax(steps / (temperature or 1.0), dim=-1)


def hf_greedy(model_dir: Path, context: list[int], max_new_tokens: int, eos: int) -> list[int]:
    model = hf_model(str(model_dir))
    out: list[int] = []
    with torch.no_grad():
        step = model(input_ids=torch.tensor([context]), use_cache=True)
        for _ in range(max_new_tokens):
            token = int(step.logits[0, -1].argmax())
            out.append(token)
            if token == eos:
                break
            step = model(input_ids=torch.tensor([[token]]), past_key_values=step.past_key_values, use_cache=True)
    return out
