"""The policy loss on hand-built rows; every expected number is worked out in the comments.

Rows are written as patterns, one character per position:
  '.' prompt token (attended, no loss)   '_' padding
  'P' hybrid prefix token                'C' generated continuation token
  'D' whole-demonstration token (LUFFY)  'F' frozen prefix token (prefix, not in the loss)
"""

import math

import pytest
import torch

from services.learner import objective
from services.learner.algorithm import AlgorithmSettings
from services.learner.batching import TrainBatch
from services.learner.objective import (
    entropy_keep_mask,
    entropy_keep_masks,
    loss_divisor,
    policy_loss,
    token_logprobs_and_entropy,
)

# No entropy clip and no entropy bonus unless a test asks for them.
PLAIN = AlgorithmSettings(entropy_clip=False, entropy_coef=0.0)


def make_batch(patterns: list[str], advantages: list[float], behaviour=None) -> TrainBatch:
    width = max(len(p) for p in patterns)
    rows = [p.ljust(width, "_") for p in patterns]

    def mask(chars: str) -> torch.Tensor:
        return torch.tensor([[c in chars for c in row] for row in rows], dtype=torch.bool)

    loss = mask("PCD")
    adv = torch.tensor(advantages, dtype=torch.float32)[:, None].expand(len(rows), width)
    return TrainBatch(
        input_ids=torch.ones(len(rows), width, dtype=torch.long),
        attention_mask=(~mask("_")).long(),
        loss_mask=loss,
        prefix_mask=mask("PDF"),
        demonstration_mask=mask("D"),
        behaviour_logprobs=torch.zeros(len(rows), width) if behaviour is None else torch.tensor(behaviour),
        advantages=torch.where(loss, adv, 0.0),
        policy_versions=torch.zeros(len(rows), dtype=torch.long),
    )


def leaf(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=True)


def run(batch, new, settings=PLAIN, old=None, entropy=None, agg=1, **kwargs):
    new = new if isinstance(new, torch.Tensor) else leaf(new)
    if entropy is None:
        entropy = torch.zeros_like(new)
    out = policy_loss(new, entropy, batch, settings, old, agg, **kwargs)
    out.loss.backward()
    out.loss = out.loss.detach()
    return out, new.grad


# ----------------------------------------------------------------------------- log-probs and entropy


def test_token_logprobs_and_entropy_hand_values():
    ln3 = math.log(3.0)
    # V = 2. Logits at position 0: [0, 0] -> p = (1/2, 1/2); at position 1: [ln 3, 0] -> p = (3/4, 1/4).
    logits = torch.tensor([[[0.0, 0.0], [ln3, 0.0], [5.0, 5.0]]], requires_grad=True)
    ids = torch.tensor([[1, 0, 1]])
    logprobs, entropy = token_logprobs_and_entropy(logits, ids)
    # token 0 at position 1 under (1/2, 1/2); token 1 at position 2 under (3/4, 1/4); position 0 gets 0
    assert logprobs.tolist()[0] == pytest.approx([0.0, math.log(0.5), math.log(0.25)], abs=1e-6)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))  # 0.562335
    assert entropy.tolist()[0] == pytest.approx([0.0, math.log(2.0), h], abs=1e-6)

    # d log p_y / d z = onehot(y) - p: position 0 predicts y=0 -> (1/2, -1/2); position 1 predicts y=1 -> (-3/4, 3/4)
    logprobs.sum().backward()
    assert torch.allclose(logits.grad[0], torch.tensor([[0.5, -0.5], [-0.75, 0.75], [0.0, 0.0]]), atol=1e-6)

    # two classes: dH/dz0 = -p0 p1 (z0 - z1) = -(3/16) ln 3 = -0.205990 at position 1; 0 at the uniform position 0
    logits.grad = None
    _, entropy = token_logprobs_and_entropy(logits, ids)
    entropy.sum().backward()
    g = 0.1875 * ln3
    assert torch.allclose(logits.grad[0], torch.tensor([[0.0, 0.0], [-g, g], [0.0, 0.0]]), atol=1e-6)


def test_token_logprobs_and_entropy_match_log_softmax_in_chunks(monkeypatch):
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 11, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 11, (3, 6))
    monkeypatch.setattr(objective, "_CHUNK_LOGITS", 11 * 4)  # 4 positions per chunk: 18 positions, 5 chunks
    assert torch.autograd.gradcheck(lambda z: token_logprobs_and_entropy(z, ids), (logits,))
    logprobs, entropy = token_logprobs_and_entropy(logits, ids)
    reference = torch.log_softmax(logits, dim=-1)
    expected_lp = reference[:, :-1].gather(2, ids[:, 1:, None]).squeeze(2)
    expected_h = -(reference.exp() * reference).sum(-1)[:, :-1]
    assert torch.allclose(logprobs[:, 1:], expected_lp) and torch.all(logprobs[:, 0] == 0)
    assert torch.allclose(entropy[:, 1:], expected_h) and torch.all(entropy[:, 0] == 0)


@pytest.mark.parametrize("temperature", [0.7, 1.3])
def test_token_logprobs_and_entropy_are_those_of_the_tempered_distribution(monkeypatch, temperature):
    """The engine samples from softmax(logits / T) and reports that distribution's log-probs: the
    learner's must be of the same one, values and gradients, chunked or not."""
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 13, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 13, (2, 5))
    monkeypatch.setattr(objective, "_CHUNK_LOGITS", 13 * 3)
    assert torch.autograd.gradcheck(lambda z: token_logprobs_and_entropy(z, ids, temperature), (logits,))
    logprobs, entropy = token_logprobs_and_entropy(logits, ids, temperature)
    reference = torch.log_softmax(logits / temperature, dim=-1)
    expected_lp = reference[:, :-1].gather(2, ids[:, 1:, None]).squeeze(2)
    expected_h = -(reference.exp() * reference).sum(-1)[:, :-1]
    assert torch.allclose(logprobs[:, 1:], expected_lp) and torch.allclose(entropy[:, 1:], expected_h)
    # ...and not of the untempered one, by more than any tolerance the mismatch metric could hide
    plain, _ = token_logprobs_and_entropy(logits, ids)
    assert (plain[:, 1:] - logprobs[:, 1:]).abs().mean() > 0.05


def test_token_logprobs_refuse_a_temperature_of_zero():
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs_and_entropy(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), 0.0)


# ----------------------------------------------------------------------------- PPO clip and dual clip


@pytest.mark.parametrize("kind", ["P", "C"])
@pytest.mark.parametrize(
    ("advantage", "ratio", "loss", "grad", "clipped", "dual"),
    [
        # A > 0: loss = max(-r, -clip(r, 0.8, 1.2)) * A
        (1.0, 1.1, -1.1, -1.1, 0, 0),  # inside the range: -A r, gradient -A r
        (1.0, 1.5, -1.2, 0.0, 1, 0),  # above 1 + eps: -A (1.2), no gradient
        (1.0, 0.5, -0.5, -0.5, 0, 0),  # below 1 - eps: max(-0.5, -0.8) = -0.5 keeps the gradient
        (2.0, 1.5, -2.4, 0.0, 1, 0),  # -2 x 1.2
        # A < 0
        (-1.0, 0.5, 0.8, 0.0, 1, 0),  # max(0.5, 0.8) = 0.8 clipped
        (-1.0, 1.5, 1.5, 1.5, 0, 0),  # max(1.5, 1.2) = 1.5, below the dual bound 3
        (-1.0, 2.9, 2.9, 2.9, 0, 0),
        (-1.0, 4.0, 3.0, 0.0, 0, 1),  # min(max(4, 1.2), 3) = 3: dual clip
        (-2.0, 5.0, 6.0, 0.0, 0, 1),  # min(10, 2 x 3) = 6
    ],
)
def test_ppo_clip_and_dual_clip(kind, advantage, ratio, loss, grad, clipped, dual):
    # one token; pi_prox = old = 0, so r = exp(new); for 'C' the behaviour log-prob equals pi_prox (weight 1)
    batch = make_batch([kind], [advantage])
    out, g = run(batch, [[math.log(ratio)]], old=torch.zeros(1, 1))
    assert float(out.loss) == pytest.approx(loss, abs=1e-6)
    assert g.item() == pytest.approx(grad, abs=1e-6)
    assert out.metrics["clip_fraction"] == clipped
    assert out.metrics["dual_clip_fraction"] == dual


def test_clip_fractions_over_a_row():
    # tokens: (A=1, r=1.1) inside, (A=1, r=1.5) clipped, (A=-1, r=0.5) clipped, (A=-1, r=4) dual
    batch = make_batch(["PP", "PP"], [1.0, -1.0])
    new = [[math.log(1.1), math.log(1.5)], [math.log(0.5), math.log(4.0)]]
    out, _ = run(batch, new, old=torch.zeros(2, 2))
    assert out.metrics["clip_fraction"] == pytest.approx(0.5)
    assert out.metrics["dual_clip_fraction"] == pytest.approx(0.25)
    # (-1.1 - 1.2 + 0.8 + 3) / (agg 1 x 2 rows) = 0.75
    assert float(out.loss) == pytest.approx(0.75, abs=1e-6)


def test_asymmetric_clip_range():
    settings = PLAIN.model_copy(update={"clip_eps_low": 0.1, "clip_eps_high": 0.3})
    batch = make_batch(["P", "P"], [1.0, -1.0])
    # A=1, r=1.5 -> -1.3 ; A=-1, r=0.5 -> max(0.5, 0.9) = 0.9 ; sum / 2 rows = -0.2
    out, _ = run(batch, [[math.log(1.5)], [math.log(0.5)]], settings=settings, old=torch.zeros(2, 1))
    assert float(out.loss) == pytest.approx(-0.2, abs=1e-6)


# ----------------------------------------------------------------------------- behaviour log-probs


def test_continuation_tokens_use_behaviour_logprobs_and_prefix_tokens_do_not():
    batch = make_batch(["PPCC"], [1.0], behaviour=[[-7.0, -9.0, -1.5, -0.5]])
    new = [[-1.0, -1.0, -1.0, -1.0]]
    old = torch.tensor(new)  # pi_prox = current policy: ratio 1 everywhere
    out, g = run(batch, new, old=old)
    # weights: prefix 1, 1; continuation min(e^{-1 + 1.5}, 2) = e^0.5 = 1.648721, e^{-1 + 0.5} = e^-0.5 = 0.606531
    w2, w3 = math.exp(0.5), math.exp(-0.5)
    assert float(out.loss) == pytest.approx(-(2.0 + w2 + w3), abs=1e-5)  # -4.255252
    assert g.tolist()[0] == pytest.approx([-1.0, -1.0, -w2, -w3], abs=1e-5)
    assert out.metrics["tis_mean"] == pytest.approx((w2 + w3) / 2, abs=1e-5)

    # the behaviour log-probs on prefix positions are never read
    batch.behaviour_logprobs[0, :2] = torch.tensor([0.0, 3.0])
    same, _ = run(batch, new, old=old)
    assert float(same.loss) == pytest.approx(float(out.loss), abs=1e-6)

    # on a continuation position they are: e^{-1 + 5} = e^4 is truncated at tis_cap = 2
    batch.behaviour_logprobs[0, 2] = -5.0
    changed, g = run(batch, new, old=old)
    assert float(changed.loss) == pytest.approx(-(2.0 + 2.0 + w3), abs=1e-5)  # -4.606531
    assert g.tolist()[0] == pytest.approx([-1.0, -1.0, -2.0, -w3], abs=1e-5)
    assert changed.metrics["tis_truncated_fraction"] == pytest.approx(0.5)


def test_weight_is_taken_from_the_proximal_policy_and_multiplies_the_clipped_loss():
    batch = make_batch(["PC"], [1.0], behaviour=[[0.0, -1.5]])
    new = [[-1.0, -1.0]]
    old = torch.tensor([[-1.3, -1.2]])
    out, g = run(batch, new, old=old)
    # prefix: r = e^{0.3} = 1.35 clipped to 1.2 (pi_old of a prefix token is the recomputed -1.3, weight 1)
    # continuation: r = e^{0.2} = 1.22 clipped to 1.2; weight e^{-1.2 + 1.5} = e^{0.3} = 1.349859
    assert float(out.loss) == pytest.approx(-1.2 - 1.2 * math.exp(0.3), abs=1e-5)  # -2.819831
    assert g.tolist()[0] == pytest.approx([0.0, 0.0], abs=1e-6)


def test_without_old_logprobs_the_proximal_policy_is_the_current_one():
    batch = make_batch(["PC"], [-1.0], behaviour=[[0.0, -1.5]])
    out, g = run(batch, [[-1.0, -1.0]], old=None)
    # ratio 1; continuation weight min(e^{-1 + 1.5}, 2) = e^0.5; loss = (1 + e^0.5) for A = -1
    assert float(out.loss) == pytest.approx(1.0 + math.exp(0.5), abs=1e-5)
    assert g.tolist()[0] == pytest.approx([1.0, math.exp(0.5)], abs=1e-5)
    assert out.metrics["kl_approx"] == 0.0


def test_padding_with_extreme_values_does_not_poison_the_loss():
    batch = make_batch([".PC_"], [1.0], behaviour=[[-1e4, -1e4, -1.0, -1e4]])
    new = leaf([[-1e4, -1.0, -1.0, -1e4]])
    out, g = run(batch, new, old=torch.tensor([[0.0, -1.0, -1.0, 50.0]]))
    assert float(out.loss) == pytest.approx(-2.0, abs=1e-6)
    assert torch.isfinite(g).all()
    assert g.tolist()[0] == pytest.approx([0.0, -1.0, -1.0, 0.0])


# ----------------------------------------------------------------------------- LUFFY


def test_luffy_shaped_ratio_and_its_gradient():
    # pi = 0.5 and 0.9, gamma = 0.1: f = 0.5 / 0.6 = 0.833333 and 0.9 / 1.0 = 0.9; A = 0.5
    # old log-probs (ln 0.1: ratios 5 and 9) and behaviour log-probs are ignored: no clipping, no weight
    batch = make_batch(["DD"], [0.5], behaviour=[[-3.0, -3.0]])
    new = [[math.log(0.5), math.log(0.9)]]
    out, g = run(batch, new, old=torch.full((1, 2), math.log(0.1)))
    assert float(out.loss) == pytest.approx(-0.5 * (0.5 / 0.6 + 0.9), abs=1e-6)  # -0.866667
    # d/d log pi [-A pi / (pi + gamma)] = -A gamma pi / (pi + gamma)^2: -0.5 x 0.05 / 0.36, -0.5 x 0.09 / 1.0
    assert g.tolist()[0] == pytest.approx([-0.5 * 0.05 / 0.36, -0.5 * 0.09], abs=1e-6)  # -0.069444, -0.045
    assert out.metrics["clip_fraction"] == 0.0


def test_luffy_negative_advantage():
    batch = make_batch(["D"], [-1.0])
    out, g = run(batch, [[math.log(0.5)]])
    assert float(out.loss) == pytest.approx(0.5 / 0.6, abs=1e-6)
    assert g.item() == pytest.approx(0.05 / 0.36, abs=1e-6)  # 0.138889


# ----------------------------------------------------------------------------- aggregation


def test_dr_grpo_aggregation_divides_by_the_constant_and_the_number_of_rows():
    # row 0: three tokens with A = 1, row 1: one token with A = 2, row 2: a row without loss tokens
    batch = make_batch(["CCC", "C__", "___"], [1.0, 2.0, 0.0])
    new = [[-1.0, -1.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    batch.behaviour_logprobs = torch.tensor(new)  # weight 1
    out, g = run(batch, new, agg=4)
    # token losses -1, -1, -1, -2: sum -5 / (4 x 3 rows) = -5/12 (a per-sequence token mean would give -1)
    assert float(out.loss) == pytest.approx(-5 / 12, abs=1e-6)
    assert torch.allclose(g, torch.tensor([[-1 / 12] * 3, [-2 / 12, 0, 0], [0, 0, 0]]))
    out8, _ = run(batch, new, agg=8)
    assert float(out8.loss) == pytest.approx(-5 / 24, abs=1e-6)


def test_authors_loss_scale_divides_by_the_longest_response_of_the_rows():
    # responses of 3, 1 and 4 positions (the frozen prefix counts: it is part of the response)
    batch = make_batch(["..CCC", ".C", "FFCC"], [1.0, 2.0, 1.0])
    assert loss_divisor(batch, 7, "constant") == 21.0
    assert loss_divisor(batch, 7, "micro_batch_max_length") == 4.0
    new = torch.zeros(3, 5)
    batch.behaviour_logprobs = new.clone()
    out, g = run(batch, new.tolist(), loss_scale="micro_batch_max_length", agg=7)
    # token losses -1 x 3, -2, -1 x 2: sum -7 / 4
    assert float(out.loss) == pytest.approx(-7 / 4)
    assert g[1, 1].item() == pytest.approx(-2 / 4)


def test_entropy_bonus_is_aggregated_like_the_loss():
    batch = make_batch(["PCC", "C__"], [0.0, 0.0])
    entropy = leaf([[0.5, 1.0, 2.0], [3.0, 0.0, 0.0]])
    settings = PLAIN.model_copy(update={"entropy_coef": 0.1})
    out = policy_loss(torch.zeros(2, 3), entropy, batch, settings, None, 2)
    out.loss.backward()
    # -0.1 x (0.5 + 1 + 2 + 3) / (2 x 2) = -0.1625
    assert float(out.loss.detach()) == pytest.approx(-0.1625, abs=1e-6)
    assert torch.allclose(entropy.grad, torch.tensor([[-0.025, -0.025, -0.025], [-0.025, 0.0, 0.0]]))

    only = settings.model_copy(update={"entropy_on_continuation_only": True})
    out = policy_loss(torch.zeros(2, 3), entropy.detach(), batch, only, None, 2)
    assert float(out.loss) == pytest.approx(-0.1 * 6.0 / 4, abs=1e-6)  # -0.15


# ----------------------------------------------------------------------------- entropy-based clipping


CLIP = AlgorithmSettings(entropy_clip=True, entropy_clip_top=0.2, entropy_coef=0.0)


def test_entropy_clip_keeps_the_top_fifth_of_the_prefix_tokens_of_the_batch():
    batch = make_batch(["PPPPPCC", "CC", "PPPPPC"], [1.0, 1.0, 1.0])
    entropy = torch.tensor([
        [0.1, 0.9, 0.3, 0.5, 0.2, 5.0, 5.0],  # continuation entropies are high but are not candidates
        [9.0, 9.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # no prefix in this row
        [0.8, 0.4, 0.7, 0.6, 0.05, 1.0, 0.0],
    ])
    new = torch.zeros(3, 7)
    batch.behaviour_logprobs = new.clone()
    # 10 prefix tokens, k = ceil(0.2 x 10) = 2: entropies 0.9 (row 0) and 0.8 (row 2) keep A
    out, g = run(batch, leaf(new.tolist()), settings=CLIP, entropy=entropy)
    t = -1 / 3  # -A / (agg 1 x 3 rows)
    assert torch.allclose(g, torch.tensor([
        [0, t, 0, 0, 0, t, t],
        [t, t, 0, 0, 0, 0, 0],
        [t, 0, 0, 0, 0, t, 0],
    ]))
    assert out.metrics["kept_entropy_threshold"] == pytest.approx(0.8)
    assert out.metrics["entropy_clip_kept_fraction"] == pytest.approx(0.2)
    assert float(out.loss) == pytest.approx(-7 / 3, abs=1e-6)  # 2 kept prefix + 5 continuation tokens

    # top 25%: k = ceil(2.5) = 3 adds 0.7 (row 2, position 2)
    quarter = CLIP.model_copy(update={"entropy_clip_top": 0.25})
    out, g = run(batch, leaf(new.tolist()), settings=quarter, entropy=entropy)
    assert g[2, 2].item() == pytest.approx(t)
    assert out.metrics["kept_entropy_threshold"] == pytest.approx(0.7)


def test_entropy_clip_ties_keep_exactly_k_tokens_earliest_first():
    batch = make_batch(["PP", "PPP"], [1.0, 1.0])
    entropy = torch.tensor([[0.3, 0.5, 0.0], [0.5, 0.5, 0.1]])
    # 5 candidates, k = 1; three tokens tie at 0.5: the first in row-major order (row 0, position 1) wins
    _, g = run(batch, leaf(torch.zeros(2, 3).tolist()), settings=CLIP, entropy=entropy)
    assert (g != 0).tolist() == [[False, True, False], [False, False, False]]
    # top 40%: k = 2, the next 0.5 in order is row 1, position 0
    settings = CLIP.model_copy(update={"entropy_clip_top": 0.4})
    out, g = run(batch, leaf(torch.zeros(2, 3).tolist()), settings=settings, entropy=entropy)
    assert (g != 0).tolist() == [[False, True, False], [True, False, False]]
    assert out.metrics["kept_entropy_threshold"] == pytest.approx(0.5)


@pytest.mark.parametrize(("n", "top", "k"), [(15, 0.2, 3), (7, 0.2, 2), (10, 0.2, 2), (1, 0.2, 1), (4, 1.0, 4)])
def test_entropy_keep_count(n, top, k):
    # 0.2 x 15 is 3.0000000000000004 in floating point: the count must still be 3
    entropy = torch.arange(n, dtype=torch.float32)[None]
    keep, threshold = entropy_keep_mask(entropy, torch.ones(1, n, dtype=torch.bool), top)
    assert int(keep.sum()) == k
    assert keep[0, n - k :].all()  # the k largest
    assert threshold == n - k


def _parts(entropy: torch.Tensor, candidates: torch.Tensor, bounds: list[tuple[int, int]]):
    return [entropy[a:b] for a, b in bounds], [candidates[a:b] for a, b in bounds]


@pytest.mark.parametrize("top", [0.2, 0.5])
def test_equal_entropies_across_micro_batches_and_ranks_keep_exactly_k(top):
    """A mini-batch of 6 rows whose 23 candidates all have the same entropy, split over 2 ranks of
    3 rows, each in micro-batches of 2 and 1 rows: exactly k = ceil(top x 23) tokens are kept, the
    same ones as one call on the whole mini-batch (the earliest in row-major order)."""
    width = 5
    candidates = torch.zeros(6, width, dtype=torch.bool)
    for row, (start, stop) in enumerate([(1, 4), (2, 5), (0, 5), (1, 4), (1, 5), (0, 5)]):
        candidates[row, start:stop] = True
    n = int(candidates.sum())
    assert n == 23
    entropy = torch.full((6, width), 0.7)
    single, single_threshold = entropy_keep_mask(entropy, candidates, top)
    k = math.ceil(top * n)
    assert int(single.sum()) == k

    ranks = [(0, 3), (3, 6)]
    micro_bounds = [(0, 2), (2, 3)]
    shares = []
    for a, b in ranks:
        e, c = _parts(entropy[a:b], candidates[a:b], micro_bounds)
        shares.append((e, c))
    every_rank = torch.cat([torch.cat([x[m] for x, m in zip(e, c)]) for e, c in shares])
    kept_rows = []
    for rank, (e, c) in enumerate(shares):
        offset = sum(int(m.sum()) for _, earlier in shares[:rank] for m in earlier)

        def gather(local, offset=offset):
            assert torch.equal(local, every_rank[offset : offset + local.numel()])
            return every_rank, offset

        masks, threshold = entropy_keep_masks(e, c, top, gather)
        assert threshold == single_threshold
        kept_rows.append(torch.cat([torch.nn.functional.pad(m, (0, width - m.shape[1])) for m in masks]))
    kept = torch.cat(kept_rows)
    assert int(kept.sum()) == k
    assert torch.equal(kept, single)

    # one rank, three micro-batches: the same decision
    e, c = _parts(entropy, candidates, [(0, 2), (2, 5), (5, 6)])
    masks, _ = entropy_keep_masks(e, c, top)
    assert torch.equal(torch.cat(masks), single)


def test_entropy_clip_on_a_batch_without_prefix_tokens():
    batch = make_batch(["CC", "C_"], [1.0, -1.0])
    new = [[-1.0, -2.0], [-1.0, 0.0]]
    batch.behaviour_logprobs = torch.tensor(new)
    entropy = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    clipped, g_clip = run(batch, new, settings=CLIP, entropy=entropy)
    plain, g_plain = run(batch, new, settings=PLAIN, entropy=entropy)
    assert float(clipped.loss) == pytest.approx(float(plain.loss))
    assert torch.equal(g_clip, g_plain)
    assert clipped.metrics["kept_entropy_threshold"] == 0.0
    assert clipped.metrics["entropy_clip_kept_fraction"] == 0.0
    keep, threshold = entropy_keep_mask(entropy, torch.zeros(2, 2, dtype=torch.bool), 0.2)
    assert threshold is None and not keep.any()


def test_entropy_clip_leaves_demonstration_rows_alone():
    # the LUFFY row's high entropies are not candidates: the top 20% of the 5 hybrid prefix tokens is one token
    batch = make_batch(["DDD", "PPPPP"], [1.0, 1.0])
    entropy = torch.tensor([[9.0, 9.0, 9.0, 0.0, 0.0], [0.1, 0.2, 0.5, 0.3, 0.4]])
    out, g = run(batch, leaf(torch.full((2, 5), math.log(0.5)).tolist()), settings=CLIP, entropy=entropy)
    luffy_grad = -0.05 / 0.36 / 2  # -A gamma pi / (pi + gamma)^2 / 2 rows
    assert g[0, :3].tolist() == pytest.approx([luffy_grad] * 3, abs=1e-6)
    assert (g[1] != 0).tolist() == [False, False, True, False, False]
    assert out.metrics["kept_entropy_threshold"] == pytest.approx(0.5)


def test_frozen_prefix_tokens_get_no_gradient_and_are_not_candidates():
    batch = make_batch(["FFCC"], [1.0])
    new = [[-1.0, -1.0, -1.0, -1.0]]
    batch.behaviour_logprobs = torch.tensor(new)
    out, g = run(batch, new, settings=CLIP, entropy=torch.tensor([[5.0, 5.0, 0.0, 0.0]]))
    assert g.tolist() == [[0.0, 0.0, -1.0, -1.0]]
    assert out.metrics["kept_entropy_threshold"] == 0.0


def test_the_hybrid_guard_leaves_a_failed_hybrids_prefix_without_gradient_but_trains_its_continuation():
    """From trajectories through the batch to the gradient: the guard acts where collate builds the loss mask."""
    from services.learner.batching import collate
    from shared.messages import RolloutKind, Trajectory, TrajectoryGroup

    hybrid = Trajectory(kind=RolloutKind.hybrid, response_token_ids=[21, 22, 23, 24], prefix_len=2,
                        behaviour_logprobs=[-1.0, -1.0], policy_version=0, reward=0.0, correct=False)
    on_policy = Trajectory(kind=RolloutKind.on_policy, response_token_ids=[31, 32, 33, 34], prefix_len=0,
                           behaviour_logprobs=[-1.0] * 4, policy_version=0, reward=1.0, correct=True)
    group = TrajectoryGroup(id="g", prompt_id="p", issued_at_version=0, step=0, worker_id="w",
                            prompt_token_ids=[11], trajectories=[hybrid, on_policy])
    new = [[0.0, -1.0, -1.0, -1.0, -1.0]] * 2
    grads = {}
    for threshold in (None, 0.5):
        settings = AlgorithmSettings(entropy_clip=False, entropy_coef=0.0, hybrid_guard_threshold=threshold)
        _, g = run(collate([group], settings, pad_token_id=0), new, settings=settings)
        grads[threshold] = g[0].tolist()
    # A = -0.5 on the hybrid; ratio 1, weight 1: d/dlogp of -A r / (agg 1 x 2 rows) = +0.25 per loss token
    assert grads[None] == pytest.approx([0.0, 0.25, 0.25, 0.25, 0.25])
    assert grads[0.5] == pytest.approx([0.0, 0.0, 0.0, 0.25, 0.25])


def test_given_keep_mask_replaces_the_batch_decision():
    batch = make_batch(["PPC"], [1.0])
    new = [[0.0, 0.0, 0.0]]
    batch.behaviour_logprobs = torch.tensor(new)
    keep = torch.tensor([[False, True, False]])
    entropy = torch.tensor([[9.0, 0.0, 0.0]])  # on its own the batch would keep position 0
    _, g = run(batch, new, settings=CLIP, entropy=entropy, entropy_keep=keep)
    assert g.tolist() == [[0.0, -1.0, -1.0]]


# ----------------------------------------------------------------------------- SFT


def test_sft_is_the_token_mean_negative_log_likelihood():
    batch = make_batch(["DDD", "D__"], [-5.0, 3.0])  # advantages are ignored
    new = [[-1.0, -2.0, -3.0], [-3.0, -7.0, -7.0]]
    out, g = run(batch, new, old=torch.zeros(2, 3), sft=True)
    assert float(out.loss) == pytest.approx((1 + 2 + 3 + 3) / 4)
    assert g.tolist() == [[-0.25, -0.25, -0.25], [-0.25, 0.0, 0.0]]
    assert out.metrics["sft_nll"] == pytest.approx(2.25)
