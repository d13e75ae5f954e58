"""The Prefix-RFT objective (method.md, "Loss") and the SFT loss, on one batch of rows.

Per token t of row i, with advantage A_i, the current policy pi_theta, the proximal policy pi_prox
and, for generated tokens, the behaviour policy pi_beh that sampled them:

* PPO tokens (hybrid prefix, hybrid continuation, on-policy continuation), decoupled PPO as in
  AReaL: r_t = pi_theta / pi_prox,
  loss_t = w_t * max(-A r_t, -A clip(r_t, 1 - eps_low, 1 + eps_high)), and for A < 0 the dual clip
  loss_t = w_t * min(max(...), -A c). pi_prox is the policy at the start of the optimizer step: the
  ``old_logprobs`` the trainer recomputes before the step's first update, or, when it passes None
  (one update per batch), ``new_logprobs.detach()``, which is the same policy (the ratio is 1 and
  only its gradient is used).
  w_t = min(pi_prox / pi_beh, tis_cap), detached, on continuation tokens: the truncated importance
  weight that corrects for the rollout having been sampled by older weights. Prefix tokens were
  written by the demonstrator, whose probabilities are unknown: pi_old for them IS pi_prox and
  their weight is 1; their behaviour log-prob is never read.
* Demonstration tokens (whole-demonstration rows, LUFFY): loss_t = -A f(pi_theta) with the shaped
  ratio f(p) = p / (p + gamma), no clipping, no importance weight.
* Entropy-based clipping: among the hybrid prefix tokens of the rows passed in (loss tokens that
  have ``prefix_mask`` and not ``demonstration_mask``), A is kept on the k = ceil(top * n) tokens
  of highest current entropy and set to 0 on the others (see ``entropy_keep_mask``).
* Aggregation (Dr.GRPO): pg_loss = sum of loss_t over all loss tokens / (agg_constant * B), with B
  the number of rows passed in (rows without loss tokens count): each row's token sum divided by
  the run's constant, averaged over rows. The entropy bonus is aggregated the same way and
  subtracted with ``entropy_coef``. No KL term.
* SFT (``sft=True``): the mean negative log-likelihood over the loss tokens, nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from services.learner.algorithm import AlgorithmSettings
from services.learner.batching import TrainBatch

# Positions (rows of the flattened [B*S, V] logits) per chunk: about 2^24 logits, 64 MiB in fp32.
_CHUNK_LOGITS = 1 << 24


class _TokenLogprobEntropy(torch.autograd.Function):
    """log softmax(logits / T)[target] and the entropy of softmax(logits / T), per row of [N, V] logits.

    Chunked over rows in both passes and saving only the logits (which the model's graph keeps
    anyway) and the per-row log-normaliser, so no [N, V] softmax is kept for the backward pass. The
    temperature is applied chunk by chunk for the same reason (``logits / T`` would be a copy).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, temperature: float):
        n, vocab = logits.shape
        chunk = max(1, _CHUNK_LOGITS // vocab)
        dtype = torch.promote_types(logits.dtype, torch.float32)  # bf16 logits are reduced in fp32
        logprob = torch.empty(n, dtype=dtype, device=logits.device)
        entropy = torch.empty(n, dtype=dtype, device=logits.device)
        lse = torch.empty(n, dtype=dtype, device=logits.device)
        for s in range(0, n, chunk):
            part = logits[s : s + chunk].to(dtype)
            if temperature != 1.0:
                part = part / temperature
            part_lse = torch.logsumexp(part, dim=-1)
            probs = (part - part_lse[:, None]).exp_()
            lse[s : s + chunk] = part_lse
            entropy[s : s + chunk] = part_lse - torch.linalg.vecdot(probs, part)
            logprob[s : s + chunk] = part.gather(1, targets[s : s + chunk, None]).squeeze(1) - part_lse
        ctx.save_for_backward(logits, targets, lse, entropy)
        ctx.chunk = chunk
        ctx.temperature = temperature
        return logprob, entropy

    @staticmethod
    def backward(ctx, grad_logprob: torch.Tensor, grad_entropy: torch.Tensor):
        logits, targets, lse, entropy = ctx.saved_tensors
        grad = torch.empty_like(logits)
        temperature = ctx.temperature
        for s in range(0, logits.shape[0], ctx.chunk):
            e = s + ctx.chunk
            scaled = logits[s:e].to(lse.dtype)
            if temperature != 1.0:
                scaled = scaled / temperature
            logp = scaled - lse[s:e, None]
            probs = logp.exp()
            # d logp[y] / d z = onehot(y) - p ;  d H / d z = -p (log p + H); in place to spare [chunk, V] buffers
            g = logp.add_(entropy[s:e, None]).mul_(grad_entropy[s:e, None]).add_(grad_logprob[s:e, None])
            g.mul_(probs).neg_()
            g.scatter_add_(1, targets[s:e, None], grad_logprob[s:e, None])
            if temperature != 1.0:
                g.div_(temperature)  # d(z / T) / dz
            grad[s:e] = g
        return grad, None, None


def token_logprobs_and_entropy(
    logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, S, V] logits, [B, S] ids -> ([B, S] log pi(token_p | < p), [B, S] entropy of pi(. | < p)).

    pi = softmax(logits / temperature): at the rollout's temperature these are log-probs of the
    distribution the engine sampled from, which its behaviour log-probs are. Aligned to the token
    position: the logits at p-1 give the values at p; position 0 gets 0. Both outputs are at least
    float32 and carry gradients.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b, s, vocab = logits.shape
    # The logits at the last position predict nothing; giving them target 0 avoids copying a [B, S-1, V] slice.
    targets = torch.cat([input_ids[:, 1:], torch.zeros_like(input_ids[:, :1])], dim=1)
    logprob, entropy = _TokenLogprobEntropy.apply(
        logits.reshape(b * s, vocab), targets.reshape(-1), float(temperature)
    )
    zero = logprob.new_zeros(b, 1)
    logprob = torch.cat([zero, logprob.view(b, s)[:, :-1]], dim=1)
    entropy = torch.cat([zero, entropy.view(b, s)[:, :-1]], dim=1)
    return logprob, entropy


def top_entropy(values: torch.Tensor, top: float) -> tuple[torch.Tensor, float | None]:
    """Positions in ``values`` (1-D) of the k = ceil(top * n) highest, and the k-th highest value.

    Ties are broken by position (the earlier one wins, a stable sort), so exactly k are chosen
    however many values equal the k-th. ``top * n`` is rounded to 9 decimals first, so that
    0.2 * 15 keeps 3, not 4. (empty, None) when ``values`` is empty.
    """
    n = values.numel()
    if n == 0:
        return values.new_zeros(0, dtype=torch.long), None
    k = min(n, math.ceil(round(top * n, 9)))
    order = torch.sort(values, descending=True, stable=True).indices[:k]
    return order, float(values[order[-1]])


def entropy_keep_mask(entropy: torch.Tensor, candidates: torch.Tensor, top: float) -> tuple[torch.Tensor, float | None]:
    """The candidates whose advantage survives entropy-based clipping, and the smallest kept entropy.

    Exactly k = ceil(top * n) of the n candidate tokens are kept: those of highest entropy, ties
    broken by position in row-major order (the earlier token wins), so the count never depends on
    ties. Returns (all False, None) when there is no candidate.
    """
    masks, threshold = entropy_keep_masks([entropy], [candidates], top)
    return masks[0], threshold


Gather = Callable[[torch.Tensor], tuple[torch.Tensor, int]]


def entropy_keep_masks(
    entropies: Sequence[torch.Tensor], candidates: Sequence[torch.Tensor], top: float, gather: Gather | None = None
) -> tuple[list[torch.Tensor], float | None]:
    """``entropy_keep_mask`` over one mini-batch given in parts: the same k tokens as one call on it.

    ``entropies`` and ``candidates`` are the parts (micro-batches) this process holds, in the
    mini-batch's row order. With several ranks, ``gather(local)`` returns every rank's candidate
    entropies concatenated in rank order (ranks hold consecutive rows) and the offset of this
    rank's own; the order of the concatenation is then the mini-batch's row-major order, which is
    what breaks ties in the single call.
    """
    local = torch.cat([e.detach()[c].float() for e, c in zip(entropies, candidates, strict=True)])
    values, offset = gather(local) if gather is not None else (local, 0)
    order, threshold = top_entropy(values, top)
    mine = order[(order >= offset) & (order < offset + local.numel())] - offset
    kept = torch.zeros(local.numel(), dtype=torch.bool, device=local.device)
    kept[mine] = True
    masks = []
    start = 0
    for c in candidates:
        mask = torch.zeros_like(c, dtype=torch.bool)
        count = int(c.sum())
        mask[c] = kept[start : start + count]
        start += count
        masks.append(mask)
    return masks, threshold


LossScale = Literal["constant", "micro_batch_max_length"]


def loss_divisor(batch: TrainBatch, agg_constant: int, loss_scale: LossScale) -> float:
    """What the token sums of ``batch`` are divided by.

    ``constant`` (Dr.GRPO as method.md states it): the run's constant times the rows, so each row's
    token sum / constant is averaged over rows. ``micro_batch_max_length`` (the authors' code, verl's
    "seq-mean-token-sum-norm"): the longest response of these rows; the trainer then divides by the
    number of micro-batches instead of weighting by rows, so the step's loss is the mean over
    micro-batches of (token sum / longest response), about rows-per-micro-batch times larger than
    ``constant`` when the longest response is the constant.
    """
    if loss_scale == "constant":
        return float(agg_constant * batch.rows)
    response = batch.loss_mask | batch.prefix_mask
    return float(max(int(response.sum(dim=1).max()), 1))


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar to backward
    metrics: dict[str, float]


def _share(numerator: torch.Tensor, denominator: torch.Tensor) -> float:
    count = float(denominator.sum())
    return float(numerator.sum()) / count if count else 0.0


def _sft_loss(new_logprobs: torch.Tensor, entropy: torch.Tensor, batch: TrainBatch) -> LossOutput:
    mask = batch.loss_mask
    tokens = mask.sum().clamp(min=1)
    nll = -(torch.where(mask, new_logprobs, 0.0)).sum() / tokens
    return LossOutput(
        loss=nll,
        metrics={
            "sft_nll": float(nll.detach()),
            "entropy": _share(torch.where(mask, entropy.detach(), 0.0), mask),
            "loss_tokens": float(mask.sum()),
        },
    )


def policy_loss(
    new_logprobs: torch.Tensor,
    entropy: torch.Tensor,
    batch: TrainBatch,
    settings: AlgorithmSettings,
    old_logprobs: torch.Tensor | None,
    agg_constant: int,
    sft: bool = False,
    *,
    entropy_keep: torch.Tensor | None = None,
    loss_scale: LossScale = "constant",
) -> LossOutput:
    """The loss of the module docstring over the rows of ``batch``.

    ``new_logprobs`` and ``entropy`` come from ``token_logprobs_and_entropy`` (with gradients);
    ``old_logprobs`` are pi_prox's log-probs (no gradient) or None. ``entropy_keep``, when given,
    replaces the entropy-clipping decision made from these rows: a trainer that wants the top
    fraction over a whole mini-batch split into several calls computes it with ``entropy_keep_mask``
    over the mini-batch and passes each call its rows. ``loss_scale`` chooses the divisor of the
    token sums (see ``loss_divisor``).
    """
    if sft:
        return _sft_loss(new_logprobs, entropy, batch)
    if agg_constant < 1:
        raise ValueError(f"agg_constant must be >= 1, got {agg_constant}")

    loss_mask = batch.loss_mask
    demo = loss_mask & batch.demonstration_mask
    ppo = loss_mask & ~batch.demonstration_mask
    prefix = ppo & batch.prefix_mask  # hybrid prefix tokens
    continuation = ppo & ~batch.prefix_mask
    advantages = torch.where(loss_mask, batch.advantages, 0.0)

    threshold = None
    keep = prefix
    if entropy_keep is not None:
        keep = prefix & entropy_keep
    elif settings.entropy_clip:
        keep, threshold = entropy_keep_mask(entropy, prefix, settings.entropy_clip_top)
    advantages = torch.where(prefix & ~keep, 0.0, advantages)

    # Log-ratios are zeroed off their tokens, so padding can never put inf or nan into the graph.
    prox = new_logprobs.detach() if old_logprobs is None else old_logprobs.detach()
    log_ratio = torch.where(ppo, new_logprobs - prox, 0.0)
    ratio = torch.exp(log_ratio)
    log_tis = torch.where(continuation, prox - batch.behaviour_logprobs, 0.0)
    tis = torch.clamp(torch.exp(log_tis), max=settings.tis_cap)

    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - settings.clip_eps_low, 1.0 + settings.clip_eps_high)
    ppo_loss = torch.maximum(unclipped, clipped)
    dual_bound = -advantages * settings.dual_clip_c
    dual = (advantages < 0) & (ppo_loss > dual_bound)
    ppo_loss = torch.where(dual, dual_bound, ppo_loss) * tis

    pi = torch.exp(torch.where(demo, new_logprobs, 0.0))
    demo_loss = -advantages * pi / (pi + settings.luffy_gamma)

    token_loss = torch.where(ppo, ppo_loss, 0.0) + torch.where(demo, demo_loss, 0.0)
    denominator = loss_divisor(batch, agg_constant, loss_scale)
    pg_loss = token_loss.sum() / denominator

    entropy_mask = continuation if settings.entropy_on_continuation_only else loss_mask
    entropy_term = torch.where(entropy_mask, entropy, 0.0).sum() / denominator
    loss = pg_loss - settings.entropy_coef * entropy_term

    with torch.no_grad():
        k3 = ratio - 1.0 - log_ratio  # k3 estimator of KL(pi_prox || pi_theta)
        metrics = {
            "pg_loss": float(pg_loss),
            "entropy_agg": float(entropy_term),  # the entropy sum / (agg_constant x rows), before entropy_coef
            "entropy": _share(torch.where(loss_mask, entropy.detach(), 0.0), loss_mask),
            "clip_fraction": _share(ppo & (clipped > unclipped), ppo),
            "dual_clip_fraction": _share(ppo & dual, ppo),
            "tis_mean": _share(torch.where(continuation, tis, 0.0), continuation),
            "tis_truncated_fraction": _share(continuation & (log_tis > math.log(settings.tis_cap)), continuation),
            "kept_entropy_threshold": threshold if threshold is not None else 0.0,
            "entropy_clip_kept_fraction": _share(keep, prefix),
            "prefix_token_share": _share(loss_mask & batch.prefix_mask, loss_mask),
            "kl_approx": _share(torch.where(ppo, k3, 0.0), ppo),
            "loss_tokens": float(loss_mask.sum()),
        }
    return LossOutput(loss=loss, metrics=metrics)
