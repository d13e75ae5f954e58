"""The default base policy: the built-in model after a short supervised warm-up on easy problems.

The warm-up makes the policy weak but not hopeless on the training split (it has seen shorter
stories only), so RL gets reward signal and demonstrations of longer stories still teach something.
The result is cached on disk, keyed by everything that determines it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from shared.datasets.arithmetic import ArithmeticDataset, Difficulty
from shared.modeling import (
    DefaultModelSpec,
    build_default_model,
    cached_build,
    default_cache_dir,
    load_model,
    load_tokenizer,
    prompt_token_ids,
    response_token_ids,
    save_model,
)

if TYPE_CHECKING:  # torch is imported by the warm-up: a cached policy is found without it
    import torch

log = logging.getLogger(__name__)

# Bump when the build or warm-up code changes in a way that changes the weights.
BUILD_REVISION = 1


class WarmupSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(700, ge=0)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-3, gt=0)
    warmup_steps: int = Field(20, ge=0)
    seed: int = 0


class DefaultPolicySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: DefaultModelSpec = DefaultModelSpec()
    dataset: ArithmeticDataset = ArithmeticDataset()
    warmup: WarmupSpec = WarmupSpec()

    @field_validator("dataset")
    @classmethod
    def _own_style(cls, dataset: ArithmeticDataset) -> ArithmeticDataset:
        # The base policy is what the column style is the own distribution of: its tokenizer and
        # warm-up are built from column demonstrations. Teacher demonstrations are for training runs.
        if dataset.demonstrations != "column":
            raise ValueError(f"the base policy is built from column demonstrations, not {dataset.demonstrations!r}")
        return dataset

    def cache_name(self, stage: str) -> str:
        # The random init does not depend on the warm-up, so changing the warm-up keeps it. The
        # demonstration style is always "column" here; leaving it out keeps the keys of caches built
        # before the field existed.
        excluded: dict = {"dataset": {"demonstrations"}}
        if stage == "init":
            excluded["warmup"] = True
        # Under its former name "task", so caches built before the rename keep their keys.
        fields = self.model_dump(mode="json", exclude=excluded)
        # A difficulty's min_start and wording came later: at their defaults they are left out, so those
        # caches keep their keys too.
        for difficulty in ("warmup", "train", "test", "ood"):
            for later in ("min_start", "wording"):
                if fields["dataset"][difficulty][later] == Difficulty.model_fields[later].default:
                    del fields["dataset"][difficulty][later]
        fields = {("task" if key == "dataset" else key): value for key, value in fields.items()}
        determined_by = json.dumps(fields, separators=(",", ":"))
        digest = hashlib.sha256(f"{BUILD_REVISION}:{stage}:{determined_by}".encode()).hexdigest()[:12]
        return f"default-{stage}-{digest}"


def default_init_model(spec: DefaultPolicySpec = DefaultPolicySpec(), cache_dir: Path | None = None) -> Path:
    """Tokenizer + randomly initialised model (seconds to build)."""
    cache_dir = cache_dir or default_cache_dir()

    def build(out: Path) -> None:
        corpus = [p.prompt + "\n" + d for p in spec.dataset.problems("warmup")[:5000] for d in p.demonstrations]
        corpus += [p.prompt + "\n" + d for p in spec.dataset.problems("ood")[:500] for d in p.demonstrations]
        build_default_model(spec.model, corpus, out)

    return cached_build(cache_dir, spec.cache_name("init"), build)


def default_base_policy(spec: DefaultPolicySpec = DefaultPolicySpec(), cache_dir: Path | None = None) -> Path:
    """The warmed-up base policy every built-in run starts from."""
    cache_dir = cache_dir or default_cache_dir()
    init = default_init_model(spec, cache_dir)
    return cached_build(cache_dir, spec.cache_name("base"), lambda out: warm_up(init, spec, out))


def warm_up(init_dir: Path, spec: DefaultPolicySpec, out_dir: Path) -> None:
    import torch

    torch.manual_seed(spec.warmup.seed)
    tokenizer = load_tokenizer(init_dir)
    model = load_model(init_dir)
    examples = [
        _sft_example(tokenizer, p.prompt, d) for p in spec.dataset.problems("warmup") for d in p.demonstrations
    ]
    rng = random.Random(spec.warmup.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.warmup.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_with_warmup(spec.warmup))
    model.train()
    with _warmup_progress() as progress:
        task = progress.add_task("warming up the base policy", total=spec.warmup.steps, loss=float("nan"))
        for step in range(spec.warmup.steps):
            batch = rng.sample(examples, spec.warmup.batch_size)
            input_ids, labels = _pad(batch, tokenizer.pad_token_id)
            loss = model(input_ids=input_ids, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            progress.update(task, advance=1, loss=loss.item())
            if step % 50 == 0 or step == spec.warmup.steps - 1:
                log.info("warm-up step %d/%d loss %.4f", step + 1, spec.warmup.steps, loss.item())
    model.eval()
    save_model(model, tokenizer, out_dir)


def _warmup_progress() -> Progress:
    # On stderr: `prefix-rft build-default-model` prints the model's path on stdout for scripts.
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps, loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )


def _sft_example(tokenizer, prompt: str, demonstration: str) -> tuple[list[int], list[int]]:
    prompt_ids = prompt_token_ids(tokenizer, prompt)
    response_ids = response_token_ids(tokenizer, demonstration)
    return prompt_ids + response_ids, [-100] * len(prompt_ids) + response_ids


def _pad(batch, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, (ids, labs) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
    return input_ids, labels


def _cosine_with_warmup(spec: WarmupSpec):
    def factor(step: int) -> float:
        if step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        progress = (step - spec.warmup_steps) / max(1, spec.steps - spec.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor
