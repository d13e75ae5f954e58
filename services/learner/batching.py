"""Trajectory groups (or SFT pairs) to padded training tensors.

One row per trajectory: ``prompt_token_ids + response_token_ids``, right-padded. Every per-token
tensor is indexed by the token's position in that row; the model's logits at position p-1 predict
the token at p (``objective.token_logprobs_and_entropy`` does that shift).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from services.learner.advantages import group_advantages
from services.learner.algorithm import AlgorithmSettings
from shared.messages import RolloutKind, Trajectory, TrajectoryGroup


@dataclass
class TrainBatch:
    """All [B, S] tensors cover prompt + response, right-padded; ``policy_versions`` is [B]."""

    input_ids: torch.Tensor  # long
    attention_mask: torch.Tensor  # long, 1 on real tokens
    loss_mask: torch.Tensor  # bool: response tokens that enter the loss
    prefix_mask: torch.Tensor  # bool: response tokens that came from a demonstration
    demonstration_mask: torch.Tensor  # bool: tokens of whole-demonstration (LUFFY / SFT) rows
    behaviour_logprobs: torch.Tensor  # float: behaviour log-prob on continuation tokens, 0 elsewhere
    advantages: torch.Tensor  # float: the row's advantage on loss tokens, 0 elsewhere
    policy_versions: torch.Tensor  # long [B]: version that generated the row, -1 if nothing was generated

    @property
    def rows(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device | str) -> TrainBatch:
        return TrainBatch(**{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)})

    def split(self, micro_batch_size: int) -> list[TrainBatch]:
        """Consecutive chunks of ``micro_batch_size`` rows (the last may be smaller).

        Each chunk is trimmed to its longest row: right padding that no row of the chunk uses costs
        compute and changes nothing (the loss never reads padding).
        """
        if micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
        starts = range(0, self.rows, micro_batch_size)
        return [self.slice_rows(start, min(start + micro_batch_size, self.rows)) for start in starts]

    def split_by_tokens(self, budget: int) -> list[TrainBatch]:
        """Consecutive chunks whose rows' tokens add up to at most ``budget``; a longer row goes alone.

        Consecutive, so the mini-batch's row order (which breaks entropy-clipping ties) is kept.
        """
        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        lengths = self.attention_mask.sum(dim=1).tolist()
        bounds, start, used = [], 0, 0
        for index, length in enumerate(lengths):
            if index > start and used + length > budget:
                bounds.append((start, index))
                start, used = index, 0
            used += length
        bounds.append((start, len(lengths)))
        return [self.slice_rows(a, b) for a, b in bounds]

    def slice_rows(self, start: int, stop: int) -> TrainBatch:
        """Rows [start, stop), trimmed to the longest of them."""
        width = max(int(self.attention_mask[start:stop].sum(dim=1).max()), 1)
        values = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)[start:stop]
            values[f.name] = value[:, :width] if value.dim() == 2 else value
        return TrainBatch(**values)


@dataclass
class Packed:
    """The real tokens of a padded batch laid end to end: one sequence of T tokens, no padding.

    ``position_ids`` restart at 0 on each row, which is how the model (and transformers' attention
    masks) tell rows apart: no token attends across a row boundary.
    """

    input_ids: torch.Tensor  # long [1, T]
    position_ids: torch.Tensor  # long [1, T]
    rows: torch.Tensor  # long [T]: the padded row of each packed token
    columns: torch.Tensor  # long [T]: its position in that row
    shape: tuple[int, int]  # the padded batch's [B, S]

    def unpack(self, values: torch.Tensor) -> torch.Tensor:
        """[1, T] per-token values of the packed sequence -> [B, S], 0 on padding.

        Column 0 stays 0, as in the padded path: its packed value came from the previous row's
        last logits.
        """
        out = values.new_zeros(self.shape)
        inside = self.columns > 0
        return out.index_put((self.rows[inside], self.columns[inside]), values[0, inside])


def pack(batch: TrainBatch) -> Packed:
    """Pack the rows of ``batch`` (right-padded, as every TrainBatch is)."""
    real = batch.attention_mask.bool()
    rows, columns = real.nonzero(as_tuple=True)  # row-major: row after row, positions in order
    return Packed(
        input_ids=batch.input_ids[rows, columns][None],
        position_ids=columns[None],
        rows=rows,
        columns=columns,
        shape=tuple(batch.input_ids.shape),
    )


@dataclass
class _Row:
    prompt: Sequence[int]
    response: Sequence[int]
    prefix_len: int  # response tokens from a demonstration
    demonstration: bool
    behaviour_logprobs: Sequence[float]  # one per continuation token
    advantage: float
    freeze_prefix: bool  # prefix tokens stay in the sequence but leave the loss
    policy_version: int


def _row(group: TrajectoryGroup, trajectory: Trajectory, advantage: float, settings: AlgorithmSettings) -> _Row:
    n = len(trajectory.response_token_ids)
    if trajectory.kind == RolloutKind.demonstration and trajectory.prefix_len != n:
        raise ValueError(f"group {group.id}: a demonstration trajectory must have prefix_len == {n}")
    if trajectory.kind == RolloutKind.on_policy and trajectory.prefix_len != 0:
        raise ValueError(f"group {group.id}: an on-policy trajectory has prefix_len {trajectory.prefix_len}")
    return _Row(
        prompt=group.prompt_token_ids,
        response=trajectory.response_token_ids,
        prefix_len=trajectory.prefix_len,
        demonstration=trajectory.kind == RolloutKind.demonstration,
        behaviour_logprobs=trajectory.behaviour_logprobs,
        advantage=advantage,
        # The ablation and the guard freeze a hybrid's prefix; a whole demonstration (LUFFY) would lose all
        # its tokens.
        freeze_prefix=trajectory.kind == RolloutKind.hybrid
        and (settings.freeze_prefix or _guarded(trajectory, settings)),
        policy_version=-1 if trajectory.policy_version is None else trajectory.policy_version,
    )


def _guarded(trajectory: Trajectory, settings: AlgorithmSettings) -> bool:
    threshold = settings.hybrid_guard_threshold
    return threshold is not None and trajectory.reward < threshold


def _stack(rows: list[_Row], pad_token_id: int, max_len: int | None) -> TrainBatch:
    if not rows:
        raise ValueError("no rows to collate")
    lengths = [len(r.prompt) + len(r.response) for r in rows]
    width = max(lengths) if max_len is None else min(max(lengths), max_len)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(shape, dtype=torch.long)
    loss_mask = torch.zeros(shape, dtype=torch.bool)
    prefix_mask = torch.zeros(shape, dtype=torch.bool)
    demonstration_mask = torch.zeros(shape, dtype=torch.bool)
    behaviour = torch.zeros(shape, dtype=torch.float32)
    advantages = torch.zeros(shape, dtype=torch.float32)
    for i, r in enumerate(rows):
        p = len(r.prompt)
        if p >= width:
            raise ValueError(f"a prompt of {p} tokens leaves no room for a response within max_len {width}")
        ids = (list(r.prompt) + list(r.response))[:width]
        end = len(ids)  # response positions are [p, end): the tail past max_len is cut
        input_ids[i, :end] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, :end] = 1
        prefix_end = min(p + r.prefix_len, end)
        loss_mask[i, p:end] = True
        prefix_mask[i, p:prefix_end] = True
        if r.freeze_prefix:
            loss_mask[i, p:prefix_end] = False
        if r.demonstration:
            demonstration_mask[i, p:end] = True
        if end > prefix_end:
            behaviour[i, prefix_end:end] = torch.tensor(r.behaviour_logprobs[: end - prefix_end], dtype=torch.float32)
        advantages[i] = torch.where(loss_mask[i], r.advantage, 0.0)
    return TrainBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        loss_mask=loss_mask,
        prefix_mask=prefix_mask,
        demonstration_mask=demonstration_mask,
        behaviour_logprobs=behaviour,
        advantages=advantages,
        policy_versions=torch.tensor([r.policy_version for r in rows], dtype=torch.long),
    )


def collate(
    groups: list[TrajectoryGroup], settings: AlgorithmSettings, pad_token_id: int, max_len: int | None = None
) -> TrainBatch:
    """Every trajectory of every group as one row, groups in order, trajectories in group order.

    ``max_len`` caps the row width: a longer row loses the tail of its response (those tokens leave
    the loss); a prompt that does not leave room for one response token is an error.
    """
    rows = []
    for group in groups:
        for trajectory, advantage in zip(group.trajectories, group_advantages(group, settings), strict=True):
            rows.append(_row(group, trajectory, advantage, settings))
    return _stack(rows, pad_token_id, max_len)


def sft_batch(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    settings: AlgorithmSettings,
    pad_token_id: int,
    max_len: int | None = None,
) -> TrainBatch:
    """SFT rows from (prompt_token_ids, demonstration_token_ids): every demonstration token is a loss
    token, a prefix token and a demonstration token, with advantage 1 (the SFT loss ignores it)."""
    del settings  # same call shape as collate; SFT has no algorithm-dependent layout
    rows = [
        _Row(
            prompt=prompt,
            response=demo,
            prefix_len=len(demo),
            demonstration=True,
            behaviour_logprobs=[],
            advantage=1.0,
            freeze_prefix=False,
            policy_version=-1,
        )
        for prompt, demo in pairs
    ]
    return _stack(rows, pad_token_id, max_len)
