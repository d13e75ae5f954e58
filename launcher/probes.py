"""Two probes of a demonstration style on the base policy, taken before any training run with it.

- **Cost of imitation**: the mean log-prob per token the base policy gives the demonstrations (teacher
  forcing, prompt + demonstration in one pass). Near 0: the style is the policy's own and imitating it
  costs nothing (column: -0.075); far below: SFT must move the policy to imitate it (teacher: -8.2).
- **Continuability**: the mean reward when the base policy continues a demonstration from a prefix
  ratio (0.5: the first half of the demonstration's tokens), sampled as training samples (the job's
  ``learner.sampling``) by a real rollout worker and scored by the reward service, as a hybrid rollout
  is. Near 0: hybrid rollouts earn nothing and Prefix-RFT's prefixes carry negative advantages.

``prefix-rft compare`` takes them for its style (cached in its out dir, written into the results);
``prefix-rft probe`` prints them for any styles.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from launcher.config import JobConfig
from shared.api.reward import DEFAULT_VERIFIER, RewardClient, ScoreItem
from shared.api.rollout import GenerateRequest, RolloutClient, SamplingParams
from shared.data import with_system_prompt
from shared.datasets.arithmetic import DemoStyle
from shared.modeling import load_tokenizer, prompt_token_ids, response_token_ids
from shared.prefix import PrefixSchedule
from shared.problems import Problem


class ProbeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    problems: int = Field(100, ge=1)  # the first problems of the training split
    prefix_ratio: float = Field(0.5, gt=0, lt=1)
    seed: int = 0  # of the continuations' sampling


class StyleProbe(BaseModel):
    """Both probes of one style, with what they were taken on."""

    style: str
    model: str
    settings: ProbeSettings
    tokens: int  # demonstration tokens scored
    mean_logprob: float  # per demonstration token, under the base policy
    hybrid_reward: float  # mean reward of the base policy's continuations from the prefix ratio
    sampling: SamplingParams  # of the continuations

    def sentence(self) -> str:
        return (
            f"mean log-prob per demonstration token under the base policy {self.mean_logprob:.3f} "
            f"({self.tokens} tokens of {self.settings.problems} training problems); hybrid reward when the base "
            f"continues them from a prefix ratio of {self.settings.prefix_ratio:g}: {self.hybrid_reward:.3f} "
            f"(temperature {self.sampling.temperature:g})"
        )


def probe_problems(job: JobConfig, style: DemoStyle, settings: ProbeSettings) -> list[Problem]:
    """The first problems of the built-in task's training split, with ``style``'s demonstrations."""
    dataset = job.learner.dataset.model_copy(update={"demonstrations": style})
    return with_system_prompt(dataset.problems("train")[: settings.problems], job.learner.prompt)


def score_demonstrations(model, tokenizer, problems: Sequence[Problem]) -> list[tuple]:
    """Per problem, over its first demonstration's tokens: (log-prob of each token, entropy of the
    policy there, whether greedy decoding would write another token), as [T] tensors."""
    import torch

    out = []
    for problem in problems:
        prompt = prompt_token_ids(tokenizer, problem.messages())
        demo = response_token_ids(tokenizer, problem.demonstrations[0])
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + demo])).logits[0, len(prompt) - 1 : -1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        targets = torch.tensor(demo)
        out.append(
            (
                logprobs.gather(1, targets[:, None]).squeeze(1),
                -(logprobs.exp() * logprobs).sum(-1),
                logprobs.argmax(-1) != targets,
            )
        )
    return out


def mean_demonstration_logprob(model_dir: Path, tokenizer, problems: Sequence[Problem]) -> tuple[float, int]:
    """(mean log-prob per token, tokens) of the problems' demonstrations under the model."""
    import torch

    from shared.modeling import load_model

    model = load_model(model_dir).eval()
    logprobs = torch.cat([lp for lp, _, _ in score_demonstrations(model, tokenizer, problems)])
    return float(logprobs.mean()), int(logprobs.numel())


async def hybrid_rewards(
    problems: Sequence[Problem],
    tokenizer,
    rollout_url: str,
    reward_url: str,
    ratio: float,
    sampling: SamplingParams,
    schedule: PrefixSchedule = PrefixSchedule(),
    concurrency: int = 8,
) -> list[float]:
    """The reward of one continuation per problem from the first ``ratio`` of its demonstration, cut
    and decoded as the learner and the rollout worker do for a hybrid rollout."""
    limiter = asyncio.Semaphore(concurrency)
    async with (
        RolloutClient(rollout_url, timeout_s=600.0) as rollout,
        RewardClient(reward_url, timeout_s=600.0) as reward,
    ):

        async def one(problem: Problem) -> list[int]:
            demo = response_token_ids(tokenizer, problem.demonstrations[0])
            prefix = demo[: schedule.cut(ratio, len(demo))]
            prompt = prompt_token_ids(tokenizer, problem.messages())
            request = GenerateRequest(prompt_token_ids=prompt, prefix_token_ids=prefix, sampling=sampling)
            async with limiter:
                (sample,) = (await rollout.generate(request)).samples
            return prefix + list(sample.token_ids)

        responses = await asyncio.gather(*(one(p) for p in problems))
        items = [
            ScoreItem(
                id=str(i),
                response=tokenizer.decode(ids, skip_special_tokens=True),
                reference=p.answer,
                verifier=p.verifier or DEFAULT_VERIFIER,
            )
            for i, (p, ids) in enumerate(zip(problems, responses, strict=True))
        ]
        return [r.reward for r in await reward.score(items)]


@contextmanager
def local_services(job: JobConfig, model: Path, console: Console) -> Iterator[tuple[str, str]]:
    """A reward service and one rollout worker serving ``model``, started here and stopped on exit."""
    from launcher.deployment import LocalDeployment

    run_dir = Path(tempfile.mkdtemp(prefix="prft-probe-"))
    deployment = LocalDeployment(run_dir=run_dir, config_path=job.dump(run_dir / "job.yaml"), redis_url=None)
    try:
        with console.status("starting the reward service and a rollout worker (vLLM)"):
            deployment.reward_url = deployment.start_reward(1, wait=False)
            rollout_url = deployment.start_rollout_worker(model, 0, consume_tasks=False, wait=False)
            deployment.wait_ready()
        yield rollout_url, deployment.reward_url
    finally:
        deployment.stop()


def base_model(job: JobConfig) -> Path:
    if job.learner.model is not None:
        return Path(job.learner.model)
    from shared.base_policy import default_base_policy

    return default_base_policy()


def run_probes(
    job: JobConfig, styles: Sequence[DemoStyle], console: Console, settings: ProbeSettings = ProbeSettings()
) -> list[StyleProbe]:
    """Both probes of every style on the job's base policy (one rollout worker for all of them)."""
    model = base_model(job)
    tokenizer = job.learner.prompt.apply_to(load_tokenizer(model))
    sampling = job.learner.sampling.model_copy(update={"seed": settings.seed})
    problems = {style: probe_problems(job, style, settings) for style in styles}
    out = []
    with local_services(job, model, console) as (rollout_url, reward_url):
        for style in styles:
            with console.status(f"probing the {style} demonstrations ({settings.problems} problems)"):
                logprob, tokens = mean_demonstration_logprob(model, tokenizer, problems[style])
                rewards = asyncio.run(
                    hybrid_rewards(
                        problems[style], tokenizer, rollout_url, reward_url, settings.prefix_ratio, sampling,
                        job.learner.algorithm.schedule,
                    )
                )
            probe = StyleProbe(
                style=style, model=str(model), settings=settings, tokens=tokens, mean_logprob=logprob,
                hybrid_reward=sum(rewards) / len(rewards), sampling=sampling,
            )
            console.print(f"{style}: {probe.sentence()}")
            out.append(probe)
    return out


def cached_probe(
    job: JobConfig, style: DemoStyle, out_dir: Path, console: Console, settings: ProbeSettings = ProbeSettings()
) -> StyleProbe:
    """The probes of ``style`` from ``out_dir/probes-<style>.json``, taken and written there first if
    absent (or taken on another model or other settings)."""
    path = out_dir / f"probes-{style}.json"
    model = str(base_model(job))
    if path.is_file():
        probe = StyleProbe.model_validate_json(path.read_text())
        if probe.model == model and probe.settings == settings:
            console.print(f"probes of the {style} demonstrations: reusing {path}")
            return probe
    (probe,) = run_probes(job, [style], console, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(probe.model_dump_json(indent=1))
    return probe
