"""Does entropy-based clipping keep the demonstration tokens the base policy gets wrong?

Prefix-RFT keeps the advantage on the top 20% of prefix tokens by the policy's entropy. On the
built-in task, the base policy's errors on three-step stories are where a demonstration teaches
something; this script scores every token of those demonstrations under the base policy and
prints how many of the tokens where greedy decoding would disagree with the demonstration sit
above the top-20% entropy threshold (computed over all the demonstrations' tokens together, as
one mini-batch of prefixes would be).

With ``--demonstrations teacher`` (or another style) it scores those traces instead; the mean
log-prob per token says how far a style is from the base policy's own distribution.
``prefix-rft probe`` prints that figure with the hybrid reward, on the training split.

    .venv/bin/python benchmarks/entropy_clip_probe.py [--model DIR] [--problems 60] [--top 0.2]
        [--demonstrations column|teacher|...]
"""

from __future__ import annotations

import argparse
import typing
from pathlib import Path

import torch

from launcher.probes import score_demonstrations
from shared.datasets.arithmetic import ArithmeticDataset, DemoStyle
from shared.modeling import load_model, load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="default: the built-in base policy")
    parser.add_argument("--problems", type=int, default=60)
    parser.add_argument("--top", type=float, default=0.2)
    parser.add_argument("--demonstrations", choices=typing.get_args(DemoStyle), default="column")
    args = parser.parse_args()
    if not 0 < args.top <= 1:
        parser.error(f"--top {args.top}: must be in (0, 1]")
    if args.model is None:
        from shared.base_policy import default_base_policy

        args.model = default_base_policy()
    tokenizer, model = load_tokenizer(args.model), load_model(args.model).eval()
    candidates = ArithmeticDataset(demonstrations=args.demonstrations).problems("train")[: args.problems * 10]
    problems = [p for p in candidates if p.prompt.count("Then ") == 3][: args.problems]
    demo_logprobs, entropies, disagree = zip(*score_demonstrations(model, tokenizer, problems))
    entropy, wrong, logprob = torch.cat(entropies), torch.cat(disagree), torch.cat(demo_logprobs)
    threshold = torch.quantile(entropy, 1 - args.top)
    kept = wrong & (entropy >= threshold)
    print(
        f"three-step {args.demonstrations} demonstrations: {min(len(problems), args.problems)}, "
        f"tokens: {entropy.numel()}, mean log-prob per token under the model: {float(logprob.mean()):.3f}"
    )
    median = float(entropy.median())
    print(f"top-{args.top:.0%} entropy threshold: {float(threshold):.4f} (median token entropy {median:.4f})")
    print(f"tokens where greedy decoding disagrees with the demonstration: {int(wrong.sum())}")
    print(f"  of which entropy clipping keeps: {int(kept.sum())} ({float(kept.sum() / max(wrong.sum(), 1)):.0%})")
    print(
        f"  their median entropy {float(entropy[wrong].median()):.3f}, median demonstration log-prob "
        f"{float(logprob[wrong].median()):.2f}"
    )


if __name__ == "__main__":
    main()
