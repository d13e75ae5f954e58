"""DeepSpeed (one process, gloo) trains the default model on fixed trajectory groups: the loss falls.

The groups are built from the task's demonstrations with hand-made rewards: per prompt a hybrid (the
first half of the demonstration, continued by its second half, reward 1), the demonstration as an
on-policy sample (reward 1) and two samples answering another prompt (reward 0). Their behaviour
log-probs are the initial model's, as a rollout worker at version 0 would have returned them, so
the importance-weighted objective keeps falling while the policy moves away from version 0.
"""

import os
from pathlib import Path

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


def _trained(settings, groups, tokenizer, info, version=None):
    """One step from the initial weights: (metrics, the weights after it)."""
    trainer = Trainer(build_engine(settings, Path(settings.model), info), settings, info)
    metrics = trainer.train(collate(groups, settings.algorithm, tokenizer.pad_token_id), sft=False, version=version)
    weights = {name: p.detach().clone() for name, p in trainer.engine.module.named_parameters()}
    return metrics, weights


def test_packed_and_checkpointed_steps_equal_the_padded_step(default_init_dir, one_process_group):
    """The same step padded (one pass per mini-batch), packed in one pass, packed by a token budget
    into other micro-batches, and that with gradient checkpointing: the same loss where the passes
    are the same, the same gradient always. With Adam's eps at 1 and lr 1 the first update is
    g / (|g| + 1), about the gradient itself, so the weights after the step compare gradients
    element by element (at the usual eps, Adam's first step is lr x sign(g) and turns rounding in
    near-zero components into differences of lr)."""
    groups, tokenizer, _ = fixed_groups(default_init_dir, 4)
    base = dict(
        model=str(default_init_dir), algorithm={"name": "prefix-rft", "n_rollouts": 4, "entropy_coef": 0.01},
        batch_prompts=4, mini_batch_prompts=2, optimizer={"lr": 1.0, "eps": 1.0},
        deepspeed={"zero_stage": 2, "gradient_clipping": 1e9}, sampling={"temperature": 0.8, "max_tokens": 64},
    )
    lengths = collate(groups, LearnerSettings(**base).algorithm, tokenizer.pad_token_id).attention_mask.sum(1)
    budget = int(lengths[:3].sum())  # about three rows per packed micro-batch, split at other rows
    runs = {
        "padded": LearnerSettings(**base, micro_batch=8),
        "packed, one pass": LearnerSettings(**base, micro_batch=8, micro_batch_tokens=10**6),
        "packed": LearnerSettings(**base, micro_batch_tokens=budget),
        "packed+checkpointing": LearnerSettings(**base, micro_batch_tokens=budget, gradient_checkpointing=True),
    }
    initial = {name: p.detach().clone() for name, p in load_model(default_init_dir).named_parameters()}
    results = {name: _trained(s, groups, tokenizer, one_process_group) for name, s in runs.items()}
    print({name: (m["loss"], m["grad_norm"]) for name, (m, _) in results.items()})
    reference_metrics, reference = results["padded"]
    step = {k: reference[k] - initial[k] for k in initial}
    scale = max(float(d.abs().max()) for d in step.values())
    assert scale > 1e-4  # the step moved the weights
    for name in ("packed, one pass", "packed", "packed+checkpointing"):
        metrics, weights = results[name]
        assert metrics["grad_norm"] == pytest.approx(reference_metrics["grad_norm"], rel=1e-5), name
        gap = max(float((weights[k] - initial[k] - step[k]).abs().max()) for k in initial)
        assert gap < 1e-5 * scale, (name, gap, scale)
    assert results["packed, one pass"][0]["loss"] == pytest.approx(reference_metrics["loss"], rel=1e-5)


@pytest.fixture(scope="module")
def sampled_groups(tmp_path_factory, default_init_dir):
    """Groups whose continuations the real rollout engine (vLLM) sampled at temperature 0.7 from the
    initial weights, as version 0, with the engine's own behaviour log-probs."""
    import httpx

    from tests.helpers.rollout import start_rollout

    tokenizer = load_tokenizer(default_init_dir)
    problems = ArithmeticDataset(train_size=4).problems("train")
    process, url = start_rollout(tmp_path_factory.mktemp("temperature"), default_init_dir)
    groups = []
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            for index, problem in enumerate(problems):
                prompt = prompt_token_ids(tokenizer, problem.prompt)
                demo = response_token_ids(tokenizer, problem.demonstrations[0])
                trajectories = []
                for prefix in ([], demo[: len(demo) // 2]):
                    reply = client.post("/v1/generate", json={
                        "prompt_token_ids": prompt, "prefix_token_ids": prefix, "n": 2,
                        "sampling": {"temperature": 0.7, "max_tokens": 48, "seed": index},
                    })
                    assert reply.status_code == 200, reply.text
                    body = reply.json()
                    for j, sample in enumerate(body["samples"]):
                        trajectories.append(Trajectory(
                            kind=RolloutKind.hybrid if prefix else RolloutKind.on_policy,
                            response_token_ids=prefix + sample["token_ids"], prefix_len=len(prefix),
                            behaviour_logprobs=sample["logprobs"], policy_version=body["model_version"],
                            reward=float(j % 2), correct=j % 2 == 1,
                        ))
                groups.append(TrajectoryGroup(
                    id=f"t{index}", prompt_id=problem.id, issued_at_version=0, step=0, worker_id="vllm",
                    prompt_token_ids=prompt, trajectories=trajectories,
                ))
    finally:
        process.stop()
    assert {t.policy_version for g in groups for t in g.trajectories} == {0}
    return groups, tokenizer


@pytest.mark.parametrize("mini_batch_prompts", [4, 2])  # one pass without a proximal pass; with one
def test_mismatch_with_the_engine_at_temperature_0_7_is_numerical(
    sampled_groups, default_init_dir, one_process_group, mini_batch_prompts
):
    """At the first step the learner holds the weights that sampled: its log-probs at the rollout
    temperature match the engine's to float rounding. Taken at temperature 1 (the learner ignoring
    the temperature) they are another distribution's, and the metric shows it."""
    groups, tokenizer = sampled_groups
    common = dict(
        model=str(default_init_dir), algorithm={"name": "prefix-rft", "n_rollouts": 4},
        batch_prompts=4, mini_batch_prompts=mini_batch_prompts, micro_batch=16, deepspeed={"zero_stage": 2},
    )
    tempered = LearnerSettings(**common, sampling={"temperature": 0.7, "max_tokens": 48})
    metrics, _ = _trained(tempered, groups, tokenizer, one_process_group, version=0)
    print("mismatch at T=0.7:", metrics["logprob_mismatch_mean"], metrics["logprob_mismatch_max"])
    continuation = sum(len(t.behaviour_logprobs) for g in groups for t in g.trajectories)
    assert metrics["logprob_mismatch_tokens"] == continuation > 0
    assert metrics["logprob_mismatch_mean"] < 1e-3
    # rows sampled by another version are not compared
    other, _ = _trained(tempered, groups, tokenizer, one_process_group, version=1)
    assert "logprob_mismatch_mean" not in other

    untempered = LearnerSettings(**common, sampling={"temperature": 1.0, "max_tokens": 48})
    wrong, _ = _trained(untempered, groups, tokenizer, one_process_group, version=0)
    print("mismatch when the learner ignores T:", wrong["logprob_mismatch_mean"])
    assert wrong["logprob_mismatch_mean"] > 0.05
