"""Padding-free packing: a real (small, randomly initialised) Qwen2 gives the same log-probs, loss
and gradients on packed rows as on padded rows, so attention never crosses a row boundary."""

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from services.learner.algorithm import AlgorithmSettings
from services.learner.batching import collate, pack
from services.learner.objective import policy_loss
from services.learner.trainer import forward_logprobs
from shared.messages import RolloutKind, Trajectory, TrajectoryGroup

VOCAB = 64


def tiny_model(attention: str) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         attn_implementation=attention)
    return Qwen2ForCausalLM(config).double()


def groups(seed: int = 0) -> list[TrajectoryGroup]:
    """Two groups of rows of unequal lengths: hybrid, on-policy and short rows, so padding differs."""
    gen = torch.Generator().manual_seed(seed)

    def ids(n):
        return torch.randint(4, VOCAB, (n,), generator=gen).tolist()

    def traj(kind, n, prefix, reward):
        return Trajectory(kind=kind, response_token_ids=ids(n), prefix_len=prefix, policy_version=0,
                          behaviour_logprobs=(-torch.rand(n - prefix, generator=gen)).tolist(),
                          reward=reward, correct=reward > 0)

    out = []
    for g, prompt_len in enumerate((5, 9)):
        out.append(TrajectoryGroup(
            id=f"g{g}", prompt_id="p", issued_at_version=0, step=0, worker_id="w", prompt_token_ids=ids(prompt_len),
            trajectories=[traj(RolloutKind.hybrid, 17, 6, 1.0), traj(RolloutKind.on_policy, 3, 0, 0.0),
                          traj(RolloutKind.on_policy, 11, 0, 1.0), traj(RolloutKind.hybrid, 8, 8, 0.0)],
        ))
    return out


def loss_and_grads(model, batch, packed: bool, settings: AlgorithmSettings, temperature: float):
    model.zero_grad()
    logprobs, entropy = forward_logprobs(model, batch, temperature, packed)
    out = policy_loss(logprobs, entropy, batch, settings, logprobs.detach() - 0.05, agg_constant=32)
    out.loss.backward()
    return out, logprobs.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_rows_give_the_padded_loss_and_gradients(attention):
    model = tiny_model(attention)
    settings = AlgorithmSettings(n_rollouts=4, entropy_coef=0.01)  # entropy clipping and bonus on
    batch = collate(groups(), settings, pad_token_id=0)
    assert (batch.attention_mask == 0).any()  # there is padding to leave out
    padded, lp_padded, g_padded = loss_and_grads(model, batch, False, settings, 0.7)
    packed, lp_packed, g_packed = loss_and_grads(model, batch, True, settings, 0.7)
    real = batch.attention_mask.bool()
    assert torch.allclose(lp_packed[real], lp_padded[real], atol=1e-10)
    assert packed.loss.item() == pytest.approx(padded.loss.item(), rel=1e-10)
    assert packed.metrics == pytest.approx(padded.metrics, rel=1e-9, abs=1e-12)
    for name, grad in g_padded.items():
        assert torch.allclose(g_packed[name], grad, rtol=1e-8, atol=1e-12), name


def test_rows_attending_across_the_boundary_would_differ():
    """The check above can fail: the same packed sequence and positions with a cache (transformers
    then builds a plain causal mask, attention crossing rows) give other log-probs for the second row."""
    model = tiny_model("sdpa")
    batch = collate(groups(), AlgorithmSettings(n_rollouts=4), pad_token_id=0)
    two = batch.slice_rows(0, 2)
    sequence = pack(two)
    with torch.no_grad():
        apart = model(input_ids=sequence.input_ids, position_ids=sequence.position_ids, use_cache=False).logits
        across = model(input_ids=sequence.input_ids, position_ids=sequence.position_ids, use_cache=True).logits
        alone = model(input_ids=two.input_ids[1:, : int(two.attention_mask[1].sum())], use_cache=False).logits
    second = sequence.rows == 1
    assert torch.allclose(apart[0, second], alone[0], atol=1e-10)
    assert not torch.allclose(across[0, second], alone[0], atol=1e-4)
