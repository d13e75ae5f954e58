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

from services.learner.batching import TrainBatch, pack
from services.learner.engine import DistInfo
from services.learner.objective import entropy_keep_masks, policy_loss, token_logprobs_and_entropy
from services.learner.settings import LearnerSettings

# Fields that make a row contribute to the loss (or to the loss scale); zeroed in padding rows.
_LOSS_FIELDS = ("loss_mask", "advantages", "prefix_mask")


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


def empty_micro(batch: TrainBatch) -> TrainBatch:
    """A loss-free micro-batch of two tokens: what a rank with fewer packed micro-batches than the
    others runs, so every rank makes the same number of passes."""
    row = select_rows(batch, 0, 0, pad_to=1)  # row 0 with its loss fields zeroed
    return TrainBatch(
        **{
            f.name: getattr(row, f.name)[:, :2] if getattr(row, f.name).dim() == 2 else getattr(row, f.name)
            for f in dataclasses.fields(row)
        }
    )


@dataclass
class MiniBatch:
    micros: list[TrainBatch]  # this rank's micro-batches
    rows: int  # rows of the whole mini-batch (all ranks, no padding)
    loss_tokens: int  # loss tokens of the whole mini-batch
    prox: list[torch.Tensor] | None = None  # pi_prox log-probs per micro-batch
    keep: list[torch.Tensor] | None = None  # entropy-clipping decision per micro-batch
    threshold: float | None = None  # smallest kept prefix-token entropy


@dataclass
class Mismatch:
    """|log pi_learner - log pi_behaviour| over continuation tokens sampled by the weights the
    learner holds at the start of the step: what is left is the engines' numerical difference."""

    total: float = 0.0
    largest: float = 0.0
    tokens: int = 0

    def add(self, logprobs: torch.Tensor, micro: TrainBatch, version: int) -> None:
        mask = _continuation(micro) & (micro.policy_versions == version)[:, None]
        if not bool(mask.any()):
            return
        gap = (logprobs.detach() - micro.behaviour_logprobs)[mask].abs()
        self.total += float(gap.sum())
        self.largest = max(self.largest, float(gap.max()))
        self.tokens += int(mask.sum())

    def metrics(self, info: DistInfo) -> dict[str, float]:
        values = torch.tensor([self.total, float(self.tokens)], dtype=torch.float64, device=info.device)
        largest = torch.tensor([self.largest], dtype=torch.float64, device=info.device)
        if info.world_size > 1:
            dist.all_reduce(values)
            dist.all_reduce(largest, op=dist.ReduceOp.MAX)
        tokens = int(values[1])
        if tokens == 0:
            return {}
        return {
            "logprob_mismatch_mean": float(values[0]) / tokens,
            "logprob_mismatch_max": float(largest[0]),
            "logprob_mismatch_tokens": float(tokens),
        }


class Trainer:
    def __init__(self, engine, settings: LearnerSettings, info: DistInfo):
        self.engine = engine
        self.settings = settings
        self.info = info
        self.temperature = settings.logprob_temperature

    def train(self, batch: TrainBatch, sft: bool, version: int | None = None) -> dict[str, float]:
        """One step on ``batch`` (the whole batch, identical on every rank); returns rank 0's metrics.

        ``version``: the weight version the engine holds now, when it is one that was published. The
        continuation tokens it sampled give the step's training/inference mismatch metrics
        (``logprob_mismatch_*``, over every rank, so every rank passes the same value); None: not
        measured.
        """
        settings = self.settings
        batch = batch.to(self.info.device)
        n_mini = settings.batch_prompts // settings.mini_batch_prompts
        mini_rows = math.ceil(batch.rows / n_mini)
        starts = range(0, batch.rows, mini_rows)
        minis = [self._mini(batch, start, min(start + mini_rows, batch.rows)) for start in starts]
        mismatch = Mismatch() if version is not None and not sft else None
        prox_pass = not sft and self._needs_prox_pass(minis)
        if prox_pass:
            for mini in minis:
                self._prox_pass(mini, mismatch, version)

        sums: dict[str, float] = defaultdict(float)
        count = 0
        self.engine.train()
        for _ in range(1 if sft else settings.ppo_epochs):
            for mini in minis:
                # Without a proximal pass there is one mini-batch and one epoch: this forward is
                # at the step's starting weights.
                for metrics in self._update(mini, sft, None if prox_pass else mismatch, version):
                    for key, value in metrics.items():
                        sums[key] += value
                    count += 1
        out = {key: value / count for key, value in sums.items()}
        thresholds = [m.threshold for m in minis if m.threshold is not None]
        if thresholds:
            out["kept_entropy_threshold"] = sum(thresholds) / len(thresholds)
        if mismatch is not None:
            out.update(mismatch.metrics(self.info))
        grad_norm = self.engine.get_global_grad_norm()
        if grad_norm is not None:
            out["grad_norm"] = float(grad_norm)
        out["lr"] = float(self.engine.get_lr()[0])
        return out

    def _mini(self, batch: TrainBatch, start: int, stop: int) -> MiniBatch:
        """This rank's micro-batches of mini-batch rows [start, stop)."""
        world, rank = self.info.world_size, self.info.rank
        per_rank = math.ceil((stop - start) / world)
        mini = MiniBatch(micros=[], rows=stop - start, loss_tokens=int(batch.loss_mask[start:stop].sum()))
        budget = self.settings.micro_batch_tokens
        if budget is None:
            lo = start + rank * per_rank
            shard = select_rows(batch, lo, min(lo + per_rank, stop), pad_to=per_rank)
            mini.micros = shard.split(self.settings.micro_batch)
            return mini
        # Packed micro-batches vary in rows; every rank works out every rank's split (they all hold
        # the batch) and pads its own with empty micro-batches to the longest, so the passes line up.
        splits = []
        for r in range(world):
            lo, hi = min(start + r * per_rank, stop), min(start + (r + 1) * per_rank, stop)
            splits.append(batch.slice_rows(lo, hi).split_by_tokens(budget) if hi > lo else [])
        passes = max(len(split) for split in splits)
        mini.micros = splits[rank] + [empty_micro(batch)] * (passes - len(splits[rank]))
        return mini

    def _needs_prox_pass(self, minis: list[MiniBatch]) -> bool:
        if len(minis) > 1 or self.settings.ppo_epochs > 1:
            return True
        clip_over_mini = self.settings.algorithm.entropy_clip and self.settings.entropy_clip_scope == "mini_batch"
        return clip_over_mini and (self.info.world_size > 1 or len(minis[0].micros) > 1)

    def _forward(self, micro: TrainBatch, sft: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """At the rollout temperature unless SFT: the demonstrations were not sampled, and SFT's
        likelihood is the model's own."""
        temperature = 1.0 if sft else self.temperature
        return forward_logprobs(self.engine, micro, temperature, packed=self.settings.micro_batch_tokens is not None)

    @torch.no_grad()
    def _prox_pass(self, mini: MiniBatch, mismatch: Mismatch | None, version: int | None) -> None:
        self.engine.eval()
        outputs = [self._forward(micro, sft=False) for micro in mini.micros]
        self.engine.train()
        mini.prox = [logprobs.detach() for logprobs, _ in outputs]
        if mismatch is not None:
            for (logprobs, _), micro in zip(outputs, mini.micros):
                mismatch.add(logprobs, micro, version)
        algo = self.settings.algorithm
        if algo.entropy_clip and self.settings.entropy_clip_scope == "mini_batch":
            gather = (lambda local: _all_gather_1d(local, self.info)) if self.info.world_size > 1 else None
            mini.keep, mini.threshold = entropy_keep_masks(
                [entropy for _, entropy in outputs],
                [_prefix_candidates(micro) for micro in mini.micros],
                algo.entropy_clip_top,
                gather,
            )

    def _update(
        self, mini: MiniBatch, sft: bool, mismatch: Mismatch | None, version: int | None
    ) -> list[dict[str, float]]:
        settings = self.settings
        metrics = []
        for index, micro in enumerate(mini.micros):
            self.engine.set_gradient_accumulation_boundary(index == len(mini.micros) - 1)
            new_logprobs, entropy = self._forward(micro, sft)
            if mismatch is not None:
                mismatch.add(new_logprobs, micro, version)
            out = policy_loss(
                new_logprobs,
                entropy,
                micro,
                settings.algorithm,
                mini.prox[index] if mini.prox is not None else None,
                settings.agg_constant,
                sft=sft,
                entropy_keep=mini.keep[index] if mini.keep is not None else None,
                loss_scale=settings.loss_scale,
            )
            # The engine averages gradients over ranks, hence the world size. The policy loss is a
            # mean over the micro-batch's rows (or, at the authors' scale, one micro-batch's part of
            # a mean over micro-batches), the SFT loss a mean over its loss tokens.
            if sft:
                share = float(micro.loss_mask.sum()) / max(mini.loss_tokens, 1)
            elif settings.loss_scale == "micro_batch_max_length":
                share = 1.0 / len(mini.micros)
            else:
                share = micro.rows / mini.rows
            self.engine.backward(out.loss * (share * self.info.world_size), scale_wrt_gas=False)
            metrics.append({"loss": float(out.loss.detach()), **out.metrics})
        self.engine.step()
        return metrics


def forward_logprobs(
    model, micro: TrainBatch, temperature: float, packed: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, S] log-probs and entropies of ``micro``'s tokens under ``model`` (an engine or a module).

    ``packed``: the rows run as one padding-free sequence and the values come back in the padded
    layout, equal to the padded run's up to float rounding.
    """
    if not packed:
        logits = model(input_ids=micro.input_ids, attention_mask=micro.attention_mask).logits
        return token_logprobs_and_entropy(logits, micro.input_ids, temperature)
    sequence = pack(micro)
    # No attention mask and no cache: transformers then reads the restarting position ids as row
    # boundaries (a block-diagonal causal mask for sdpa and eager, varlen kernels for flash
    # attention). With a cache it would not look, and rows would attend across.
    logits = model(input_ids=sequence.input_ids, position_ids=sequence.position_ids, use_cache=False).logits
    logprobs, entropy = token_logprobs_and_entropy(logits, sequence.input_ids, temperature)
    return sequence.unpack(logprobs), sequence.unpack(entropy)


def _prefix_candidates(micro: TrainBatch) -> torch.Tensor:
    """Hybrid prefix tokens in the loss: the tokens entropy-based clipping ranks."""
    return micro.loss_mask & micro.prefix_mask & ~micro.demonstration_mask


def _continuation(micro: TrainBatch) -> torch.Tensor:
    """Generated tokens in the loss: those with a behaviour log-prob."""
    return micro.loss_mask & ~micro.prefix_mask & ~micro.demonstration_mask


def _all_gather_1d(local: torch.Tensor, info: DistInfo) -> tuple[torch.Tensor, int]:
    """Every rank's ``local`` concatenated in rank order, and where this rank's own starts."""
    size = torch.tensor([local.numel()], device=local.device)
    sizes = [torch.zeros_like(size) for _ in range(info.world_size)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    padded = torch.full((max(counts),), float("-inf"), device=local.device)
    padded[: local.numel()] = local
    gathered = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(gathered, padded)
    values = torch.cat([g[:count] for g, count in zip(gathered, counts)])
    return values, sum(counts[: info.rank])
