"""``prefix-rft eval``: several benchmarks through one rollout worker and the reward service (started
here unless their URLs are given), with a progress bar per benchmark, the table printed, and the
per-sample JSONL, summary and plot written (launcher.eval_report)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from launcher.config import JobConfig
from launcher.eval_report import EvalSummary, print_table, write_outputs
from launcher.evaluate import EvalSample, benchmark_name, evaluate_samples, load_benchmark
from shared.modeling import check_model_folder, load_tokenizer
from shared.problems import Problem


class EvalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    benchmarks: list[str] = Field(min_length=1)  # id, ood (the built-in task) or data files
    model: Path | None = None  # None: the built-in base policy
    limit: int | None = Field(None, ge=1)  # problems per benchmark (the first ones)
    rollout_url: str | None = None
    reward_url: str | None = None
    out: Path | None = None  # None: runs/eval-<time>


def load_benchmarks(options: EvalOptions, job: JobConfig) -> dict[str, list[Problem]]:
    """Every benchmark's problems, read before anything starts (a bad file stops here, named)."""
    loaded: dict[str, list[Problem]] = {}
    for benchmark in options.benchmarks:
        name = benchmark_name(benchmark)
        while name in loaded:  # two files of one name (a/test.jsonl, b/test.jsonl) stay apart
            name += "'"
        loaded[name] = load_benchmark(
            benchmark, options.limit, job.learner.prompt, job.eval.columns, dataset=job.learner.dataset
        )
    return loaded


def run_eval(options: EvalOptions, job: JobConfig, console: Console) -> EvalSummary:
    from launcher.deployment import LocalDeployment

    benchmarks = load_benchmarks(options, job)
    model = options.model
    if model is None:
        from shared.base_policy import default_base_policy

        with console.status("building the default model (first time only)"):
            model = default_base_policy()
    check_model_folder(model)
    out = (options.out or Path("runs") / f"eval-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    rollout_url, reward_url, deployment = options.rollout_url, options.reward_url, None
    samples: list[EvalSample] = []
    results = []
    try:
        if rollout_url is None or reward_url is None:
            run_dir = Path(tempfile.mkdtemp(prefix="prft-eval-"))
            deployment = LocalDeployment(run_dir=run_dir, config_path=job.dump(run_dir / "job.yaml"), redis_url=None)
            with console.status("starting the reward service and a rollout worker (vLLM)"):
                # In parallel, and this process loads the tokenizer meanwhile (each takes many seconds).
                reward_url = reward_url or deployment.start_reward(1, wait=False)
                deployment.reward_url = reward_url
                rollout_url = rollout_url or deployment.start_rollout_worker(model, 0, consume_tasks=False, wait=False)
                tokenizer = job.learner.prompt.apply_to(load_tokenizer(model))
                deployment.wait_ready()
        else:
            tokenizer = job.learner.prompt.apply_to(load_tokenizer(model))
        settings = job.eval
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as bar:
            for name, problems in benchmarks.items():
                label = f"eval {name} (greedy + {settings.k} at T={settings.temperature:g})"
                task = bar.add_task(label, total=len(problems))
                result, kept = asyncio.run(
                    evaluate_samples(
                        problems, tokenizer, rollout_url, reward_url, name, settings,
                        on_progress=lambda n, task=task: bar.advance(task, n),
                    )
                )
                results.append(result)
                samples += kept
    finally:
        if deployment is not None:
            deployment.stop()
    summary = EvalSummary(model=str(model), benchmarks=results)
    paths = write_outputs(summary, samples, out)
    print_table(results, console, title=f"evaluation of {model}")
    console.print(f"per-sample results: {paths[0]}\nsummary: {paths[2]} (table), {paths[1]}, {paths[3]}")
    return summary
