"""One optimizer step on every rank: the proximal pass, then mini-batch updates with the policy loss.

Every rank holds the whole batch (broadcast from rank 0) and trains on its own slice of each
mini-batch. Slices are padded to equal sizes with rows that carry no loss, so every rank runs the
same number of forward/backward passes (the collectives of ZeRO must line up). The trainer owns the
accumulation boundary: each micro-batch's loss is weighted by its share of the mini-batch, the
engine averages gradients over ranks, and ``engine.step()`` runs once per mini-batch.

The proximal pass (no gradient, before the step's first update) gives pi_prox for every token and
the entropies that entropy-based clipping ranks over the whole mini-batch, across micro-batches and
ranks. It is skipped when neither is needed: one update per batch makes pi_prox the current policy,
and a mini-batch that is a single forward pass on a single rank ranks its own entropies.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.distributed as dist

from services.learner.batching import TrainBatch
from services.learner.engine import DistInfo
from services.learner.objective import policy_loss, token_logprobs_and_entropy
from services.learner.settings import LearnerSettings

# Fields that make a row contribute to the loss; zeroed in padding rows.
_LOSS_FIELDS = ("loss_mask", "advantages")


def select_rows(batch: TrainBatch, start: int, stop: int, pad_to: int) -> TrainBatch:
    """Rows [start, stop) of ``batch``, padded to ``pad_to`` rows with loss-free copies of row 0."""
    rows = batch.rows
    index = list(range(start, min(stop, rows)))
    n_pad = pad_to - len(index)
    index += [0] * n_pad
    values = {}
    for f in dataclasses.fields(batch):
        value = getattr(batch, f.name)[index].clone()
        if n_pad and f.name in _LOSS_FIELDS:
            value[len(index) - n_pad :] = 0
        values[f.name] = value
    return type(batch)(**values)


@dataclass
class MiniBatch:
    micros: list[TrainBatch]  # this rank's micro-batches
    rows: int  # rows of the whole mini-batch (all ranks, no padding)
    loss_tokens: int  # loss tokens of the whole mini-batch
    prox: list[torch.Tensor] | None = None  # pi_prox log-probs per micro-batch
    keep: list[torch.Tensor] | None = None  # entropy-clipping decision per micro-batch
    threshold: float | None = None  # smallest kept prefix-token entropy


class Trainer:
    def __init__(self, engine, settings: LearnerSettings, info: DistInfo):
        self.engine = engine
        self.settings = settings
        self.info = info

    def train(self, batch: TrainBatch, sft: bool) -> dict[str, float]:
        """One step on ``batch`` (the whole batch, identical on every rank); returns rank 0's metrics."""
        settings = self.settings
        batch = batch.to(self.info.device)
        n_mini = settings.batch_prompts // settings.mini_batch_prompts
        mini_rows = math.ceil(batch.rows / n_mini)
        starts = range(0, batch.rows, mini_rows)
        minis = [self._mini(batch, start, min(start + mini_rows, batch.rows)) for start in starts]
        if not sft and self._needs_prox_pass(minis):
            for mini in minis:
                self._prox_pass(mini)

        sums: dict[str, float] = defaultdict(float)
        count = 0
        self.engine.train()
        for _ in range(1 if sft else settings.ppo_epochs):
            for mini in minis:
                for metrics in self._update(mini, sft):
                    for key, value in metrics.items():
                        sums[key] += value
                    count += 1
        out = {key: value / count for key, value in sums.items()}
        thresholds = [m.threshold for m in minis if m.threshold is not None]
        if thresholds:
            out["kept_entropy_threshold"] = sum(thresholds) / len(thresholds)
        grad_norm = self.engine.get_global_grad_norm()
        if grad_norm is not None:
            out["grad_norm"] = float(grad_norm)
        out["lr"] = float(self.engine.get_lr()[0])
        return out

    def _mini(self, batch: TrainBatch, start: int, stop: int) -> MiniBatch:
        """This rank's micro-batches of mini-batch rows [start, stop)."""
        world, rank = self.info.world_size, self.info.rank
        per_rank = math.ceil((stop - start) / world)
        lo = start + rank * per_rank
        shard = select_rows(batch, lo, min(lo + per_rank, stop), pad_to=per_rank)
        return MiniBatch(
            micros=shard.split(self.settings.micro_batch),
            rows=stop - start,
            loss_tokens=int(batch.loss_mask[start:stop].sum()),
        )

    def _needs_prox_pass(self, minis: list[MiniBatch]) -> bool:
        if len(minis) > 1 or self.settings.ppo_epochs > 1:
            return True
        clip_over_mini = self.settings.algorithm.entropy_clip and self.settings.entropy_clip_scope == "mini_batch"
        return clip_over_mini and (self.info.world_size > 1 or len(minis[0].micros) > 1)

    def _forward(self, micro: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.engine(input_ids=micro.input_ids, attention_mask=micro.attention_mask).logits
        return token_logprobs_and_entropy(logits, micro.input_ids)

    @torch.no_grad()
    def _prox_pass(self, mini: MiniBatch) -> None:
        self.engine.eval()
        outputs = [self._forward(micro) for micro in mini.micros]
        self.engine.train()
        mini.prox = [logprobs.detach() for logprobs, _ in outputs]
        algo = self.settings.algorithm
        if algo.entropy_clip and self.settings.entropy_clip_scope == "mini_batch":
            candidates = [_prefix_candidates(micro) for micro in mini.micros]
            values = torch.cat([entropy[c] for (_, entropy), c in zip(outputs, candidates)])
            threshold = self._kth_largest(values, algo.entropy_clip_top)
            if threshold is None:
                mini.keep = [torch.zeros_like(c) for c in candidates]
            else:
                mini.keep = [c & (entropy >= threshold) for (_, entropy), c in zip(outputs, candidates)]
                mini.threshold = threshold

    def _kth_largest(self, local: torch.Tensor, top: float) -> float | None:
        """The entropy of the k-th highest prefix token over every rank's share of the mini-batch."""
        values = _all_gather_1d(local.float(), self.info) if self.info.world_size > 1 else local.float()
        n = values.numel()
        if n == 0:
            return None
        k = min(n, math.ceil(round(top * n, 9)))
        return float(torch.topk(values, k).values[-1])

    def _update(self, mini: MiniBatch, sft: bool) -> list[dict[str, float]]:
        settings = self.settings
        metrics = []
        for index, micro in enumerate(mini.micros):
            self.engine.set_gradient_accumulation_boundary(index == len(mini.micros) - 1)
            new_logprobs, entropy = self._forward(micro)
            out = policy_loss(
                new_logprobs,
                entropy,
                micro,
                settings.algorithm,
                mini.prox[index] if mini.prox is not None else None,
                settings.agg_constant,
                sft=sft,
                entropy_keep=mini.keep[index] if mini.keep is not None else None,
            )
            # The engine averages gradients over ranks, hence the world size. The policy loss is a
            # mean over the micro-batch's rows, the SFT loss a mean over its loss tokens.
            if sft:
                share = float(micro.loss_mask.sum()) / max(mini.loss_tokens, 1)
            else:
                share = micro.rows / mini.rows
            self.engine.backward(out.loss * (share * self.info.world_size), scale_wrt_gas=False)
            metrics.append({"loss": float(out.loss.detach()), **out.metrics})
        self.engine.step()
        return metrics


def _prefix_candidates(micro: TrainBatch) -> torch.Tensor:
    """Hybrid prefix tokens in the loss: the tokens entropy-based clipping ranks."""
    return micro.loss_mask & micro.prefix_mask & ~micro.demonstration_mask


def _all_gather_1d(local: torch.Tensor, info: DistInfo) -> torch.Tensor:
    size = torch.tensor([local.numel()], device=local.device)
    sizes = [torch.zeros_like(size) for _ in range(info.world_size)]
    dist.all_gather(sizes, size)
    longest = int(max(int(s) for s in sizes))
    padded = torch.full((longest,), float("-inf"), device=local.device)
    padded[: local.numel()] = local
    gathered = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(s)] for g, s in zip(gathered, sizes)])
