"""Evaluation through a rollout worker and the reward service (both over HTTP).

Per problem: one greedy sample (pass@1 at temperature 0) and, with ``k`` samples at a temperature,
avg@k (mean correctness over the k samples, the paper's avg@32 on AIME/AMC) and pass@j for each j
asked, by the unbiased estimator of Chen et al. (2021): 1 - C(k-c, j) / C(k, j) with c correct of k.
Every sample can be kept as an :class:`EvalSample` (the per-sample JSONL of ``prefix-rft eval``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from math import comb
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.api.reward import RewardClient, ScoreItem, ScoreResult
from shared.api.rollout import GenerateRequest, GenerateResponse, RolloutClient, SamplingParams
from shared.data import SUFFIXES, ColumnMapping, DataFormatError, PromptSettings, load_problems, with_system_prompt
from shared.datasets.arithmetic import ArithmeticDataset
from shared.modeling import prompt_token_ids
from shared.problems import Problem

BUILTIN_SPLITS = ("id", "ood")


class EvalSettings(BaseModel):
    """The ``eval`` section of a job file (``--set eval.k=32``): how every evaluation samples and scores."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(4, ge=0)  # samples per problem for avg@k / pass@k; 0 = greedy only (the paper: 32)
    temperature: float = Field(0.6, ge=0)  # of the k samples (the paper: 0.6)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(192, ge=1)
    # pass@j reported for each j (at most k); empty: pass@k alone.
    pass_at: list[int] = Field(default_factory=list)
    seed: int = 0
    concurrency: int = Field(8, ge=1)
    score_batch: int = Field(64, ge=1)
    # Columns of benchmark files whose names are not the usual ones (see shared.data).
    columns: ColumnMapping = ColumnMapping()

    @model_validator(mode="after")
    def _pass_at_within_k(self) -> EvalSettings:
        wrong = [j for j in self.pass_at if not 1 <= j <= self.k]
        if wrong:
            raise ValueError(f"pass_at {wrong}: each must be between 1 and k ({self.k})")
        return self

    @property
    def pass_ks(self) -> list[int]:
        return sorted(set(self.pass_at or [self.k])) if self.k else []


class EvalSample(BaseModel):
    """One line of ``samples.jsonl``: one response to one problem and its verdict."""

    benchmark: str
    problem_id: str
    sample: int  # 0: the greedy response; 1..k: the samples at the temperature
    temperature: float
    prompt: str  # the prompt as the model saw it (chat template applied)
    response: str
    extracted: str | None  # the answer the verifier read from the response
    reference: str
    reward: float
    correct: bool
    status: str  # the reward service's verdict: ok, or why it could not verify (timeout, error, ...)
    response_tokens: int
    model_version: int


class EvalResult(BaseModel):
    split: str
    n_problems: int
    greedy_accuracy: float
    avg_at_k: float | None
    pass_at_k: float | None  # pass@k with k the number of samples
    k: int
    temperature: float | None = None
    pass_at: dict[int, float] = Field(default_factory=dict)  # j -> unbiased pass@j
    mean_response_tokens: float
    model_versions: list[int]  # versions that answered (one, unless weights changed during the evaluation)


def pass_at(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: the chance that k drawn without
    replacement hold at least one correct (Chen et al., 2021)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n and 0 <= c <= n (n={n}, c={c})")
    return 1.0 - comb(n - c, k) / comb(n, k)


async def evaluate_samples(
    problems: Sequence[Problem],
    tokenizer,
    rollout_url: str,
    reward_url: str,
    split: str,
    settings: EvalSettings = EvalSettings(),
    on_progress: Callable[[int], None] | None = None,
) -> tuple[EvalResult, list[EvalSample]]:
    if not problems:
        raise ValueError(f"{split!r} has no problems to evaluate")
    limiter = asyncio.Semaphore(settings.concurrency)
    prompts = [prompt_token_ids(tokenizer, p.messages()) for p in problems]
    # A call may take minutes: many generations or a batch of scores on a small CPU machine.
    async with (
        RolloutClient(rollout_url, timeout_s=600.0) as rollout,
        RewardClient(reward_url, timeout_s=600.0) as reward,
    ):

        async def generate(prompt: list[int], n: int, temperature: float) -> GenerateResponse:
            top_p = settings.top_p if temperature > 0 else 1.0
            sampling = SamplingParams(
                temperature=temperature, top_p=top_p, max_tokens=settings.max_tokens, seed=settings.seed
            )
            async with limiter:
                return await rollout.generate(GenerateRequest(prompt_token_ids=prompt, n=n, sampling=sampling))

        async def one_problem(prompt: list[int]) -> tuple[GenerateResponse, GenerateResponse | None]:
            greedy = await generate(prompt, 1, 0.0)
            sampled = await generate(prompt, settings.k, settings.temperature) if settings.k else None
            if on_progress is not None:
                on_progress(1)
            return greedy, sampled

        generations = await asyncio.gather(*(one_problem(p) for p in prompts))

        items: list[ScoreItem] = []
        for index, (problem, (greedy, sampled)) in enumerate(zip(problems, generations)):
            samples = list(greedy.samples) + (list(sampled.samples) if sampled else [])
            verifier = {"verifier": problem.verifier} if problem.verifier else {}
            for j, sample in enumerate(samples):
                items.append(
                    ScoreItem(id=f"{index}:{j}", response=sample.text, reference=problem.answer, **verifier)
                )
        scored: dict[str, ScoreResult] = {}
        for start in range(0, len(items), settings.score_batch):
            for result in await reward.score(items[start : start + settings.score_batch]):
                scored[result.id] = result

    records: list[EvalSample] = []
    for index, (problem, prompt, (greedy, sampled)) in enumerate(zip(problems, prompts, generations)):
        text = tokenizer.decode(prompt)
        answers = [(greedy, 0.0)] + ([(sampled, settings.temperature)] if sampled else [])
        j = 0
        for response, temperature in answers:
            for sample in response.samples:
                verdict = scored[f"{index}:{j}"]
                records.append(
                    EvalSample(
                        benchmark=split, problem_id=problem.id, sample=j, temperature=temperature, prompt=text,
                        response=sample.text, extracted=verdict.extracted, reference=problem.answer,
                        reward=verdict.reward, correct=verdict.correct, status=verdict.status.value,
                        response_tokens=len(sample.token_ids), model_version=response.model_version,
                    )
                )
                j += 1
    return summarise(split, problems, records, settings), records


def summarise(
    split: str, problems: Sequence[Problem], samples: Sequence[EvalSample], settings: EvalSettings
) -> EvalResult:
    """The figures of ``samples``: k + 1 per problem (greedy first), in the order of ``problems``."""
    n, per = len(problems), settings.k + 1
    if len(samples) != n * per:
        raise ValueError(f"{len(samples)} samples for {n} problems at k={settings.k}")
    by_problem = [samples[i * per : (i + 1) * per] for i in range(n)]
    greedy = [next(s for s in group if s.sample == 0) for group in by_problem]
    avg_at_k = pass_at_k = None
    pass_at_j: dict[int, float] = {}
    if settings.k:
        hits = [sum(s.correct for s in group if s.sample > 0) for group in by_problem]
        avg_at_k = sum(h / settings.k for h in hits) / n
        pass_at_k = sum(h > 0 for h in hits) / n
        pass_at_j = {j: sum(pass_at(settings.k, h, j) for h in hits) / n for j in settings.pass_ks}
    return EvalResult(
        split=split,
        n_problems=n,
        greedy_accuracy=sum(s.correct for s in greedy) / n,
        avg_at_k=avg_at_k,
        pass_at_k=pass_at_k,
        k=settings.k,
        temperature=settings.temperature if settings.k else None,
        pass_at=pass_at_j,
        mean_response_tokens=sum(s.response_tokens for s in greedy) / n,
        model_versions=sorted({s.model_version for s in samples}),
    )


async def evaluate(
    problems: Sequence[Problem],
    tokenizer,
    rollout_url: str,
    reward_url: str,
    split: str,
    settings: EvalSettings = EvalSettings(),
    on_progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """The summary alone (a run's evaluations)."""
    result, _ = await evaluate_samples(problems, tokenizer, rollout_url, reward_url, split, settings, on_progress)
    return result


def benchmark_name(benchmark: str) -> str:
    return benchmark if benchmark in BUILTIN_SPLITS else Path(benchmark).stem


def load_benchmark(
    benchmark: str,
    limit: int | None = None,
    prompt: PromptSettings = PromptSettings(),
    columns: ColumnMapping = ColumnMapping(),
    dataset: ArithmeticDataset | None = None,
) -> list[Problem]:
    """``id`` / ``ood``: the built-in task's test splits (of ``dataset``, the job's
    ``learner.dataset``: its ``ood`` setting chooses the OOD split); anything else: a benchmark file."""
    if benchmark in BUILTIN_SPLITS:
        dataset = dataset or ArithmeticDataset()
        problems = dataset.problems("test" if benchmark == "id" else "ood")
        return with_system_prompt(problems, prompt)[:limit]
    path = Path(benchmark)
    if not path.is_file():
        raise DataFormatError(f"{benchmark!r} is neither {' nor '.join(BUILTIN_SPLITS)} nor an existing data file")
    if path.suffix.lower() not in SUFFIXES:
        raise DataFormatError(f"{benchmark}: unsupported data format (use {', '.join(SUFFIXES)})")
    return load_problems(path, columns, prompt)[:limit]

