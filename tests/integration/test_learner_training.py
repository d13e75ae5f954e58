"""DeepSpeed (one process, gloo) trains the default model on fixed trajectory groups: the loss falls.

The groups are built from the task's demonstrations with hand-made rewards: per prompt a hybrid (the
first half of the demonstration, continued by its second half, reward 1), the demonstration as an
on-policy sample (reward 1) and two samples answering another prompt (reward 0). Their behaviour
log-probs are the initial model's, as a rollout worker at version 0 would have returned them, so
the importance-weighted objective keeps falling while the policy moves away from version 0.
"""

import os

import pytest
import torch

from launcher.processes import free_port
from services.learner.batching import collate, sft_batch
from services.learner.engine import build_engine, init_distributed
from services.learner.settings import LearnerSettings
from services.learner.trainer import Trainer
from shared.datasets.arithmetic import ArithmeticDataset
from shared.messages import RolloutKind, Trajectory, TrajectoryGroup
from shared.modeling import load_model, load_tokenizer, prompt_token_ids, response_token_ids

pytestmark = pytest.mark.integration


@torch.no_grad()
def continuation_logprobs(model, prompt: list[int], response: list[int], prefix_len: int) -> list[float]:
    ids = torch.tensor([prompt + response])
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    token_lp = logprobs.gather(-1, targets[:, None]).squeeze(-1)[len(prompt) - 1 :]
    return token_lp[prefix_len:].tolist()


def fixed_groups(model_dir, n_prompts: int) -> list[TrajectoryGroup]:
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir).eval()
    problems = ArithmeticDataset(train_size=n_prompts).problems("train")
    groups = []
    for index, problem in enumerate(problems):
        prompt = prompt_token_ids(tokenizer, problem.prompt)
        demo = response_token_ids(tokenizer, problem.demonstrations[0])
        wrong = response_token_ids(tokenizer, problems[(index + 1) % len(problems)].demonstrations[0])
        cut = len(demo) // 2

        def traj(kind, response, prefix_len, reward, prompt=prompt):
            return Trajectory(
                kind=kind, response_token_ids=response, prefix_len=prefix_len, policy_version=0,
                behaviour_logprobs=continuation_logprobs(model, prompt, response, prefix_len),
                reward=reward, correct=reward > 0,
            )

        groups.append(
            TrajectoryGroup(
                id=f"g{index}", prompt_id=problem.id, issued_at_version=0, step=0, worker_id="fixed",
                prompt_token_ids=prompt,
                trajectories=[
                    traj(RolloutKind.hybrid, demo, cut, 1.0),
                    traj(RolloutKind.on_policy, demo, 0, 1.0),
                    traj(RolloutKind.on_policy, wrong, 0, 0.0),
                    traj(RolloutKind.on_policy, wrong, 0, 0.0),
                ],
            )
        )
    return groups, tokenizer, [(prompt_token_ids(tokenizer, p.prompt),
                                response_token_ids(tokenizer, p.demonstrations[0])) for p in problems]


@pytest.fixture(scope="module")
def one_process_group():
    """A one-process gloo group, kept for the rest of the session: DeepSpeed holds on to the group
    it first saw, so it is never destroyed and re-created. The launcher variables (DeepSpeed reads
    LOCAL_RANK when it builds an engine) are restored after this module, so processes started by
    later tests do not inherit them."""
    keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    saved = {key: os.environ.get(key) for key in keys}
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    info = init_distributed(LearnerSettings())
    assert info.world_size == 1
    yield info
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_loss_falls_on_fixed_groups(default_init_dir, one_process_group):
    settings = LearnerSettings(
        model=str(default_init_dir),
        algorithm={"name": "prefix-rft", "n_rollouts": 4},
        batch_prompts=4, mini_batch_prompts=2, micro_batch=4,
        optimizer={"lr": 1e-3}, deepspeed={"zero_stage": 2}, sampling={"max_tokens": 64},
    )
    groups, tokenizer, sft_pairs = fixed_groups(default_init_dir, settings.batch_prompts)
    engine = build_engine(settings, default_init_dir, one_process_group)
    trainer = Trainer(engine, settings, one_process_group)
    batch = collate(groups, settings.algorithm, tokenizer.pad_token_id)

    steps = [trainer.train(batch, sft=False) for _ in range(15)]
    losses = [m["loss"] for m in steps]
    # Entropy-based clipping ranked the prefix tokens of each mini-batch (2 forward passes each).
    assert all(m["kept_entropy_threshold"] > 0 for m in steps)
    kept = sum(m["entropy_clip_kept_fraction"] for m in steps) / len(steps)
    assert 0.1 < kept < 0.35, kept
    print("prefix-rft losses:", " ".join(f"{x:.4f}" for x in losses))
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.05, (first, last)

    nll = [trainer.train(sft_batch(sft_pairs, settings.algorithm, tokenizer.pad_token_id), sft=True)["loss"]
           for _ in range(6)]
    print("sft losses:", " ".join(f"{x:.4f}" for x in nll))
    assert nll[-1] < 0.9 * nll[0]


def test_micro_batching_leaves_the_gradient_unchanged(default_init_dir, one_process_group):
    """One forward pass over the mini-batch, or six uneven micro-batches: the same gradient."""
    groups = fixed_groups(default_init_dir, 4)[0]
    tokenizer = load_tokenizer(default_init_dir)
    norms = {}
    for micro_batch in (16, 3):
        settings = LearnerSettings(
            model=str(default_init_dir), algorithm={"name": "prefix-rft", "n_rollouts": 4},
            batch_prompts=4, mini_batch_prompts=4, micro_batch=micro_batch,
            optimizer={"lr": 1e-3}, deepspeed={"zero_stage": 2, "gradient_clipping": 1e9},  # norm only
        )
        info = one_process_group
        trainer = Trainer(build_engine(settings, default_init_dir, info), settings, info)
        metrics = trainer.train(collate(groups, settings.algorithm, tokenizer.pad_token_id), sft=False)
        norms[micro_batch] = metrics["grad_norm"]
    print("gradient norms:", norms)
    assert norms[3] == pytest.approx(norms[16], rel=1e-4)
