"""Evaluation through a rollout worker and the reward service (both over HTTP).

Greedy accuracy (pass@1 at temperature 0) and, with k samples at a temperature, avg@k (mean
correctness over the k samples) and pass@k (any of the k correct).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from shared.api.reward import RewardClient, ScoreItem
from shared.api.rollout import GenerateRequest, GenerateResponse, RolloutClient, SamplingParams
from shared.modeling import prompt_token_ids
from shared.problems import Problem


class EvalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(4, ge=0)  # samples per problem for avg@k / pass@k; 0 = greedy only
    temperature: float = Field(0.6, ge=0)
    max_tokens: int = Field(192, ge=1)
    concurrency: int = Field(8, ge=1)
    score_batch: int = Field(64, ge=1)


class EvalResult(BaseModel):
    split: str
    n_problems: int
    greedy_accuracy: float
    avg_at_k: float | None
    pass_at_k: float | None
    k: int
    mean_response_tokens: float
    model_versions: list[int]  # versions that answered (one, unless weights changed during the evaluation)


async def evaluate(
    problems: Sequence[Problem],
    tokenizer,
    rollout_url: str,
    reward_url: str,
    split: str,
    settings: EvalSettings = EvalSettings(),
    on_progress: Callable[[int], None] | None = None,
) -> EvalResult:
    if not problems:
        raise ValueError(f"split {split!r} has no problems to evaluate")
    limiter = asyncio.Semaphore(settings.concurrency)
    # A call may take minutes: many generations or a batch of scores on a small CPU machine.
    async with (
        RolloutClient(rollout_url, timeout_s=600.0) as rollout,
        RewardClient(reward_url, timeout_s=600.0) as reward,
    ):

        async def generate(problem: Problem, n: int, temperature: float) -> GenerateResponse:
            request = GenerateRequest(
                prompt_token_ids=prompt_token_ids(tokenizer, problem.prompt),
                n=n,
                sampling=SamplingParams(temperature=temperature, max_tokens=settings.max_tokens, seed=0),
            )
            async with limiter:
                return await rollout.generate(request)

        async def one_problem(problem: Problem) -> tuple[GenerateResponse, GenerateResponse | None]:
            greedy = await generate(problem, 1, 0.0)
            sampled = await generate(problem, settings.k, settings.temperature) if settings.k else None
            if on_progress is not None:
                on_progress(1)
            return greedy, sampled

        generations = await asyncio.gather(*(one_problem(p) for p in problems))

        items: list[ScoreItem] = []
        for index, (problem, (greedy, sampled)) in enumerate(zip(problems, generations)):
            samples = list(greedy.samples) + (list(sampled.samples) if sampled else [])
            for j, sample in enumerate(samples):
                items.append(ScoreItem(id=f"{index}:{j}", response=sample.text, reference=problem.answer))
        correct: dict[str, bool] = {}
        for start in range(0, len(items), settings.score_batch):
            for result in await reward.score(items[start : start + settings.score_batch]):
                correct[result.id] = result.correct

    n = len(problems)
    greedy_hits = sum(correct[f"{i}:0"] for i in range(n))
    avg_at_k = pass_at_k = None
    if settings.k:
        per_problem = [[correct[f"{i}:{j}"] for j in range(1, settings.k + 1)] for i in range(n)]
        avg_at_k = sum(sum(hits) / settings.k for hits in per_problem) / n
        pass_at_k = sum(any(hits) for hits in per_problem) / n
    lengths = [len(g.samples[0].token_ids) for g, _ in generations]
    versions = sorted({g.model_version for g, _ in generations} | {s.model_version for _, s in generations if s})
    return EvalResult(
        split=split,
        n_problems=n,
        greedy_accuracy=greedy_hits / n,
        avg_at_k=avg_at_k,
        pass_at_k=pass_at_k,
        k=settings.k,
        mean_response_tokens=sum(lengths) / n,
        model_versions=versions,
    )


def problems_for_split(split: str, limit: int, seed: int = 0) -> list[Problem]:
    """``id`` / ``ood``: the built-in task's test splits; anything else: a data file."""
    from pathlib import Path

    from shared.data import load_problems
    from shared.datasets.arithmetic import ArithmeticDataset

    if split in ("id", "ood"):
        return ArithmeticDataset(seed=seed).problems("test" if split == "id" else "ood")[:limit]
    path = Path(split)
    if not path.is_file():
        raise ValueError(f"--split {split!r} is neither 'id', 'ood' nor an existing data file")
    return load_problems(path)[:limit]
