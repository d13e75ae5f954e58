import pytest
import torch

from services.learner.algorithm import AlgorithmSettings
from services.learner.batching import TrainBatch, collate, pack, sft_batch
from shared.messages import RolloutKind, Trajectory, TrajectoryGroup

PAD = 0
PROMPT = [11, 12]


def _hybrid(reward: float = 1.0) -> Trajectory:
    # demonstration prefix 21 22, continuation 23 24 25 written by policy version 3
    return Trajectory(kind=RolloutKind.hybrid, response_token_ids=[21, 22, 23, 24, 25], prefix_len=2,
                      behaviour_logprobs=[-0.1, -0.2, -0.3], policy_version=3, reward=reward, correct=True)


def _on_policy(reward: float = 0.0) -> Trajectory:
    return Trajectory(kind=RolloutKind.on_policy, response_token_ids=[31, 32], prefix_len=0,
                      behaviour_logprobs=[-0.5, -0.6], policy_version=2, reward=reward, correct=False)


def _demonstration(reward: float = 1.0, prefix_len: int = 3) -> Trajectory:
    return Trajectory(kind=RolloutKind.demonstration, response_token_ids=[41, 42, 43], prefix_len=prefix_len,
                      behaviour_logprobs=[-1.0] * (3 - prefix_len), policy_version=None, reward=reward,
                      correct=True)


def _group(*trajectories: Trajectory, prompt=PROMPT, gid="g") -> TrajectoryGroup:
    return TrajectoryGroup(id=gid, prompt_id="p", issued_at_version=0, step=0, worker_id="w",
                           prompt_token_ids=prompt, trajectories=list(trajectories))


def _rows(tensor: torch.Tensor) -> list[list]:
    return tensor.tolist()


def test_hybrid_and_on_policy_row_layout():
    batch = collate([_group(_hybrid(), _on_policy())], AlgorithmSettings(), PAD)
    # rewards 1 and 0: advantages +0.5 and -0.5; width = 2 prompt + 5 response tokens
    assert _rows(batch.input_ids) == [[11, 12, 21, 22, 23, 24, 25], [11, 12, 31, 32, 0, 0, 0]]
    assert _rows(batch.attention_mask) == [[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]]
    assert _rows(batch.loss_mask) == [[0, 0, 1, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0, 0]]
    assert _rows(batch.prefix_mask) == [[0, 0, 1, 1, 0, 0, 0], [0] * 7]
    assert _rows(batch.demonstration_mask) == [[0] * 7, [0] * 7]
    assert torch.allclose(batch.behaviour_logprobs,
                          torch.tensor([[0, 0, 0, 0, -0.1, -0.2, -0.3], [0, 0, -0.5, -0.6, 0, 0, 0]]))
    assert _rows(batch.advantages) == [[0, 0, 0.5, 0.5, 0.5, 0.5, 0.5], [0, 0, -0.5, -0.5, 0, 0, 0]]
    assert _rows(batch.policy_versions) == [3, 2]
    assert batch.loss_mask.dtype == batch.prefix_mask.dtype == batch.demonstration_mask.dtype == torch.bool
    assert batch.input_ids.dtype == batch.attention_mask.dtype == batch.policy_versions.dtype == torch.long


def test_freeze_prefix_keeps_prefix_tokens_in_the_sequence_but_out_of_the_loss():
    settings = AlgorithmSettings.preset("prefix-rft-frozen-prefix")
    batch = collate([_group(_hybrid(), _on_policy())], settings, PAD)
    assert _rows(batch.input_ids)[0] == [11, 12, 21, 22, 23, 24, 25]
    assert _rows(batch.attention_mask)[0] == [1] * 7
    assert _rows(batch.loss_mask)[0] == [0, 0, 0, 0, 1, 1, 1]
    assert _rows(batch.prefix_mask)[0] == [0, 0, 1, 1, 0, 0, 0]
    assert _rows(batch.advantages)[0] == [0, 0, 0, 0, 0.5, 0.5, 0.5]


GUARD = AlgorithmSettings(hybrid_guard_threshold=0.5)


def test_the_guard_freezes_the_prefix_of_a_failed_hybrid_and_keeps_its_continuation_training():
    # rewards 0 (hybrid) and 1 (on-policy): advantages -0.5 and +0.5
    batch = collate([_group(_hybrid(reward=0.0), _on_policy(reward=1.0))], GUARD, PAD)
    assert _rows(batch.loss_mask)[0] == [0, 0, 0, 0, 1, 1, 1]
    assert _rows(batch.prefix_mask)[0] == [0, 0, 1, 1, 0, 0, 0]  # still known as prefix, still in the sequence
    assert _rows(batch.advantages)[0] == [0, 0, 0, 0, -0.5, -0.5, -0.5]
    assert _rows(batch.loss_mask)[1] == [0, 0, 1, 1, 0, 0, 0]  # on-policy rows are never guarded


def test_the_guard_leaves_a_successful_hybrid_whole_and_is_off_by_default():
    guarded = collate([_group(_hybrid(reward=1.0), _on_policy(reward=0.0))], GUARD, PAD)
    assert _rows(guarded.loss_mask)[0] == [0, 0, 1, 1, 1, 1, 1]
    assert AlgorithmSettings().hybrid_guard_threshold is None
    unguarded = collate([_group(_hybrid(reward=0.0), _on_policy(reward=1.0))], AlgorithmSettings(), PAD)
    assert _rows(unguarded.loss_mask)[0] == [0, 0, 1, 1, 1, 1, 1]
    assert _rows(unguarded.advantages)[0] == [0, 0, -0.5, -0.5, -0.5, -0.5, -0.5]


def test_the_guard_is_per_hybrid_and_never_touches_whole_demonstrations():
    settings = AlgorithmSettings(hybrid_guard_threshold=0.5, n_demonstration=1)
    failed, passed = _hybrid(reward=0.0), _hybrid(reward=1.0)
    batch = collate([_group(failed, passed, _demonstration(reward=0.0))], settings, PAD)
    assert _rows(batch.loss_mask) == [[0, 0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 0, 0]]


def test_demonstration_row():
    settings = AlgorithmSettings.preset("luffy", n_rollouts=2)
    batch = collate([_group(_on_policy(), _demonstration())], settings, PAD)
    assert _rows(batch.input_ids)[1] == [11, 12, 41, 42, 43]
    assert _rows(batch.loss_mask)[1] == [0, 0, 1, 1, 1]
    assert _rows(batch.prefix_mask)[1] == [0, 0, 1, 1, 1]
    assert _rows(batch.demonstration_mask) == [[0] * 5, [0, 0, 1, 1, 1]]
    assert _rows(batch.behaviour_logprobs)[1] == [0.0] * 5
    assert _rows(batch.advantages)[1] == [0, 0, 0.5, 0.5, 0.5]
    assert _rows(batch.policy_versions) == [2, -1]


def test_demonstration_must_be_all_prefix():
    with pytest.raises(ValueError, match="prefix_len"):
        collate([_group(_on_policy(), _demonstration(prefix_len=2))], AlgorithmSettings(), PAD)


def test_groups_are_flattened_in_order_with_their_own_advantages_and_prompts():
    first = _group(_hybrid(reward=1.0), _on_policy(reward=0.0), gid="a")
    second = _group(_on_policy(reward=1.0), _on_policy(reward=1.0), prompt=[13], gid="b")
    batch = collate([first, second], AlgorithmSettings(), PAD)
    assert batch.rows == 4
    assert _rows(batch.input_ids)[2] == [13, 31, 32, 0, 0, 0, 0]
    assert _rows(batch.loss_mask)[2] == [0, 1, 1, 0, 0, 0, 0]
    assert batch.advantages.sum(dim=1).tolist() == pytest.approx([2.5, -1.0, 0.0, 0.0])


def test_max_len_cuts_the_response_tail():
    batch = collate([_group(_hybrid(), _on_policy())], AlgorithmSettings(), PAD, max_len=5)
    assert _rows(batch.input_ids) == [[11, 12, 21, 22, 23], [11, 12, 31, 32, 0]]
    assert _rows(batch.loss_mask) == [[0, 0, 1, 1, 1], [0, 0, 1, 1, 0]]
    assert batch.behaviour_logprobs.tolist()[0] == pytest.approx([0, 0, 0, 0, -0.1])
    with pytest.raises(ValueError, match="no room"):
        collate([_group(_hybrid())], AlgorithmSettings(), PAD, max_len=2)


def test_split_trims_each_chunk_to_its_longest_row():
    batch = collate([_group(_on_policy(), _on_policy(), _hybrid())], AlgorithmSettings(), PAD)
    chunks = batch.split(2)
    assert [c.rows for c in chunks] == [2, 1]
    assert chunks[0].input_ids.shape == (2, 4)  # prompt 2 + 2 on-policy tokens
    assert chunks[1].input_ids.shape == (1, 7)
    assert _rows(chunks[1].prefix_mask) == [[0, 0, 1, 1, 0, 0, 0]]
    assert _rows(chunks[1].policy_versions) == [3]
    assert torch.equal(chunks[0].behaviour_logprobs, batch.behaviour_logprobs[:2, :4])
    moved = chunks[0].to("cpu")
    assert isinstance(moved, TrainBatch) and torch.equal(moved.input_ids, chunks[0].input_ids)


def test_sft_batch():
    batch = sft_batch([([5, 6], [7, 8, 9]), ([5], [7])], AlgorithmSettings.preset("sft"), PAD)
    assert _rows(batch.input_ids) == [[5, 6, 7, 8, 9], [5, 7, 0, 0, 0]]
    assert _rows(batch.attention_mask) == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert _rows(batch.loss_mask) == [[0, 0, 1, 1, 1], [0, 1, 0, 0, 0]]
    assert torch.equal(batch.prefix_mask, batch.loss_mask)
    assert torch.equal(batch.demonstration_mask, batch.loss_mask)
    assert _rows(batch.advantages) == [[0, 0, 1, 1, 1], [0, 1, 0, 0, 0]]
    assert _rows(batch.behaviour_logprobs) == [[0.0] * 5, [0.0] * 5]
    assert _rows(batch.policy_versions) == [-1, -1]


def test_split_by_tokens_takes_consecutive_rows_within_the_budget():
    # rows of 4, 4 and 7 tokens
    batch = collate([_group(_on_policy(), _on_policy(), _hybrid())], AlgorithmSettings(), PAD)
    assert [c.rows for c in batch.split_by_tokens(8)] == [2, 1]
    assert [c.rows for c in batch.split_by_tokens(15)] == [3]
    assert [c.rows for c in batch.split_by_tokens(11)] == [2, 1]  # 4 + 4 + 7 > 11
    # a row longer than the budget goes alone, never dropped nor cut
    chunks = batch.split_by_tokens(3)
    assert [c.rows for c in chunks] == [1, 1, 1]
    assert chunks[2].input_ids.shape == (1, 7)
    with pytest.raises(ValueError, match="budget"):
        batch.split_by_tokens(0)


def test_pack_lays_rows_end_to_end_with_positions_restarting_per_row():
    batch = collate([_group(_on_policy(), _hybrid())], AlgorithmSettings(), PAD)
    packed = pack(batch)
    assert packed.input_ids.tolist() == [[11, 12, 31, 32, 11, 12, 21, 22, 23, 24, 25]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6]]
    values = torch.arange(1.0, 12.0)[None]
    # back to the padded layout; column 0 (which no logits predict) and padding stay 0
    assert packed.unpack(values).tolist() == [[0, 2, 3, 4, 0, 0, 0], [0, 6, 7, 8, 9, 10, 11]]
