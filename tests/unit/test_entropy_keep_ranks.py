"""Entropy clipping over a mini-batch held by two real gloo ranks: exactly k tokens kept in all,
the same ones as one call on the whole mini-batch, with every candidate's entropy equal. At the
top 20% every kept token is on rank 0; at the top 80% they span both ranks."""

import math

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from services.learner.engine import DistInfo
from services.learner.objective import entropy_keep_mask, entropy_keep_masks
from services.learner.trainer import _all_gather_1d
from shared.net import free_port

TOPS = (0.2, 0.8)
WIDTH = 6
# Candidate spans per row of a 6-row mini-batch: 3 rows per rank, micro-batches of 2 and 1 rows.
SPANS = [(1, 5), (2, 6), (0, 6), (1, 4), (3, 6), (0, 2)]
ROWS_PER_RANK = 3
MICROS = [(0, 2), (2, 3)]


def mini_batch() -> tuple[torch.Tensor, torch.Tensor]:
    candidates = torch.zeros(len(SPANS), WIDTH, dtype=torch.bool)
    for row, (start, stop) in enumerate(SPANS):
        candidates[row, start:stop] = True
    return torch.full((len(SPANS), WIDTH), 1.25), candidates


def rank_main(rank: int, port: int, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        entropy, candidates = mini_batch()
        rows = slice(rank * ROWS_PER_RANK, (rank + 1) * ROWS_PER_RANK)
        entropies = [entropy[rows][a:b] for a, b in MICROS]
        cands = [candidates[rows][a:b] for a, b in MICROS]
        info = DistInfo(rank=rank, world_size=2, local_rank=rank, device=torch.device("cpu"))
        for top in TOPS:
            masks, threshold = entropy_keep_masks(entropies, cands, top, lambda local: _all_gather_1d(local, info))
            out[(rank, top)] = (torch.cat(masks), threshold)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_keep_exactly_k_equal_entropy_tokens():
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(rank_main, args=(free_port(), out), nprocs=2, join=True)
        results = dict(out)
    entropy, candidates = mini_batch()
    n = int(candidates.sum())
    for top in TOPS:
        single, single_threshold = entropy_keep_mask(entropy, candidates, top)
        kept = torch.cat([results[(0, top)][0], results[(1, top)][0]])
        assert int(kept.sum()) == math.ceil(top * n) == int(single.sum()), top
        assert torch.equal(kept, single), top  # the earliest tokens of the mini-batch, whichever rank holds them
        assert results[(0, top)][1] == results[(1, top)][1] == single_threshold
    assert results[(1, 0.8)][0].any() and not results[(1, 0.2)][0].any()
