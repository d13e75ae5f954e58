"""``prefix-rft run``: a real training job on a local deployment, evaluated before and after.

Order: redis-server; then the reward service, the rollout workers and the learner, in parallel; the
evaluation of the base policy, while the learner builds its engine and holds; the learner let go (it
trains and pushes weights to the workers); periodic and final evaluation; report. Every process is
stopped at the end, on Ctrl-C, or as soon as one of them dies (naming it, with its log tail).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from launcher.config import LOCAL_JOB_DEFAULTS, JobConfig
from launcher.cpus import available_cores, plan_cores
from launcher.deployment import LocalDeployment
from launcher.evaluate import BUILTIN_SPLITS, EvalResult, EvalSettings, benchmark_name, evaluate, load_benchmark
from launcher.export import export_final
from launcher.gpus import Placement, place_job
from launcher.pipeline import pipeline_stats, worker_busy_seconds
from launcher.report import AccuracyPoint, RunReport, print_summary, write_report
from launcher.tracking import check_trackers, log_evaluation
from services.learner.algorithm import AlgorithmName
from shared.api.learner import LearnerClient
from shared.api.rollout import RolloutClient
from shared.data import DataFormatError, heldout_problems
from shared.modeling import load_tokenizer, weights_digest
from shared.problems import Problem
from shared.records import FinalRecord, StepRecord, metrics_file
from shared.settings import deep_merge, dotted

log = logging.getLogger(__name__)


class RunOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Path | None = None  # None: the built-in default base policy
    data: Path | None = None  # None: the built-in arithmetic task
    # Benchmark files to evaluate on; none with --data: rows of it held out of training (learner.data.holdout).
    eval_data: list[Path] = Field(default_factory=list)
    algorithm: AlgorithmName = AlgorithmName.prefix_rft
    steps: int = Field(100, ge=1)
    seed: int = 0
    rollout_workers: int = Field(1, ge=1)
    reward_workers: int = Field(1, ge=1)
    redis_url: str | None = None
    config: Path | None = None  # the user's YAML: over the launcher's defaults, under the options and sets
    sets: dict[str, Any] = Field(default_factory=dict)  # --set overrides, a job document (shared.settings.parse_sets)
    out: Path | None = None
    eval_problems: int = Field(128, ge=1)
    eval_every: int = Field(20, ge=0)  # 0: evaluate only before and after
    evaluate: bool = True  # False: no evaluation at all (the pipeline benchmark times training alone)
    evaluate_before: bool = True  # False: skip the base policy's evaluation (a comparison does it once)
    curve_problems: int = Field(64, ge=1)
    pin_cores: bool = True  # disjoint cores for the learner and the workers (see launcher.cpus)
    eval: EvalSettings = EvalSettings()  # the fields set here sit over the job file's eval section


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_job(options: RunOptions, console: Console) -> RunReport:
    started = time.monotonic()
    run_dir = _run_dir(options)
    job = build_job_config(options, run_dir)  # a bad setting stops the run here, before anything starts
    placement = place_job(job, options.rollout_workers)  # so do GPUs the machine lacks
    options = options.model_copy(update={"eval": job.eval})  # the options' own, over the job file's
    check_trackers(job.learner.tracking)
    # SIGTERM (kill, a scheduler ending the job) stops the run as Ctrl-C does, so the processes it
    # started are stopped too: each runs in a session of its own and would outlive it.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    run_dir.mkdir(parents=True, exist_ok=True)
    model_path = _resolve_model(options, console)
    splits = _eval_splits(options, job, console)
    config_path = job.dump(run_dir / "job.yaml")
    console.print(f"run directory: [bold]{run_dir}[/bold]")
    _show_placement(placement, console)

    cores = plan_cores(available_cores(), placement.rollout_workers) if options.pin_cores else None
    deployment = LocalDeployment(run_dir=run_dir, config_path=config_path, redis_url=options.redis_url, cores=cores)
    try:
        starting = (
            f"starting the reward service, {placement.rollout_workers} rollout worker(s) (vLLM) and the learner "
            f"(DeepSpeed, {placement.learner_ranks} rank(s))"
        )
        with console.status(starting):
            # A private redis-server's address is known once it runs: job.yaml records it.
            job = job.with_redis_url(deployment.start_redis())
            job.dump(config_path)
            # In parallel: each imports torch (or math-verify) and loads its model for many seconds, and
            # this process loads the tokenizer meanwhile. The learner holds until it is let go below.
            deployment.start_reward(options.reward_workers, wait=False)
            for index in range(placement.rollout_workers):
                deployment.start_rollout_worker(model_path, index, env=placement.rollout_env(index), wait=False)
            deployment.start_learner(ranks=placement.learner_ranks, env=placement.learner_env(), wait=False)
            tokenizer = job.learner.prompt.apply_to(load_tokenizer(model_path))
            deployment.wait_ready()
        before = (
            _evaluate_all(deployment, tokenizer, splits, options, console, "before") if options.evaluate_before else {}
        )
        busy_before = worker_busy_seconds(deployment.rollout_urls)
        train_started = time.monotonic()
        if job.learner.start_on_request:  # unless a --set turned it off: then it started by itself
            asyncio.run(_let_learner_start(deployment.learner_url, job.auth.token.get_secret_value()))
        curve = _follow_training(deployment, tokenizer, splits, options, console, run_dir)
        train_time = time.monotonic() - train_started
        busy = [b - a for a, b in zip(busy_before, worker_busy_seconds(deployment.rollout_urls))]
        _wait_for_final_weights(deployment, console)
        after = _evaluate_all(deployment, tokenizer, splits, options, console, "after")
    finally:
        deployment.stop()

    metrics = metrics_file(run_dir / "learner").read()
    last = metrics[-1] if metrics else None
    generated = sum(m.generated_tokens or 0 for m in metrics)
    report = RunReport(
        algorithm=options.algorithm.value,
        seed=options.seed,
        steps=options.steps,
        model=str(model_path),
        model_digest=weights_digest(model_path),
        data=str(options.data or "built-in arithmetic"),
        wall_time_s=time.monotonic() - started,
        train_time_s=train_time,
        tokens_per_s=generated / train_time if train_time > 0 else 0.0,
        dropped_stale_groups=last.dropped_stale_total if last else 0,
        trained_groups=last.trained_groups_total if last else 0,
        accuracy_before={s: r.greedy_accuracy for s, r in before.items()},
        accuracy_after={s: r.greedy_accuracy for s, r in after.items()},
        evaluation_before=before,
        evaluation_after=after,
        accuracy_curve=curve,
        pipeline=pipeline_stats(metrics, busy, job.learner.max_staleness),
        run_dir=str(run_dir),
    )
    write_report(report, metrics, run_dir)
    log_evaluation(job, report)
    print_summary(report, console)
    _show_rank_digests(run_dir, console)
    if FinalRecord.read(run_dir / "learner") is not None:  # the learner took its last step
        console.print(f"final model folder: [bold]{export_final(run_dir).out}[/bold]")
    return report


def _show_placement(placement: Placement, console: Console) -> None:
    if placement.note:
        console.print(f"[yellow]note:[/yellow] {placement.note}")
    if placement.gpus is not None:
        workers = ", ".join(f"rollout-{i} {','.join(d)}" for i, d in enumerate(placement.gpus.rollout))
        console.print(f"GPUs: learner {','.join(placement.gpus.learner)}; {workers}")


def _show_rank_digests(run_dir: Path, console: Console) -> None:
    """Data-parallel ranks must end with the same weights: their checksums, from the learner's final record."""
    final = FinalRecord.read(run_dir / "learner")
    if final is None or not final.rank_digests or len(final.rank_digests) < 2:
        return
    verdict = "equal" if len(set(final.rank_digests)) == 1 else "[red]DIFFERENT[/red]"
    console.print(f"learner ranks' weight checksums: {', '.join(final.rank_digests)} ({verdict})")


def _run_dir(options: RunOptions) -> Path:
    run_dir = (
        options.out or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{options.algorithm.value}-s{options.seed}"
    )
    return run_dir.resolve()


def _resolve_model(options: RunOptions, console: Console) -> Path:
    if options.model is not None:
        if not (options.model / "config.json").is_file():
            raise ValueError(f"--model {options.model}: not a Hugging Face model directory (no config.json)")
        return options.model.resolve()
    from shared.base_policy import default_base_policy

    with console.status("building the default model (first time only: a tokenizer, a model, a short warm-up)"):
        return default_base_policy()


def _eval_splits(options: RunOptions, job: JobConfig, console: Console) -> dict[str, list[Problem]]:
    """What the run is evaluated on, read before anything starts (a bad file stops it here)."""
    prompt = job.learner.prompt
    if options.eval_data:
        return {
            benchmark_name(str(path)): load_benchmark(str(path), options.eval_problems, prompt, job.eval.columns)
            for path in options.eval_data
        }
    data = job.learner.data  # from --data, or the job file
    if data.path is None:
        return {
            split: load_benchmark(split, options.eval_problems, prompt, dataset=job.learner.dataset)
            for split in BUILTIN_SPLITS
        }
    held = heldout_problems(data, prompt)
    if not held:
        raise DataFormatError("nothing to evaluate on: give --eval-data, or hold rows out (learner.data.holdout)")
    console.print(
        f"evaluating on {len(held)} rows of {data.path} held out of training (the learner never trains on them; "
        "--eval-data FILE... evaluates on benchmarks instead)"
    )
    return {"held-out": held[: options.eval_problems]}


def build_job_config(options: RunOptions, run_dir: Path) -> JobConfig:
    """Every process's settings, lowest first: the launcher's defaults for a local job and for this run
    (a private namespace and token), the user's file, env vars, what this command's options decide, and
    the --set overrides."""
    defaults = {
        "redis.namespace": f"run-{secrets.token_hex(4)}",
        "auth.token": secrets.token_urlsafe(24),
        # The paper decays the prefix curriculum over its whole run (T_decay = 500 of ~500 steps); a
        # short run gets the same shape over its own length unless the config says otherwise.
        "learner.algorithm.schedule.decay_steps": options.steps,
        # Tracker files (tensorboard events, mlflow's file store, wandb offline runs) beside the report.
        "learner.tracking.dir": str(run_dir / "tracking"),
    }
    if options.algorithm == AlgorithmName.sft_then_rft:
        defaults["learner.algorithm.sft_steps"] = options.steps // 2  # half the budget each, unless configured
    decided = {
        "learner.total_steps": options.steps,
        "learner.seed": options.seed,
        "learner.run_dir": str(run_dir / "learner"),
        "learner.algorithm.name": options.algorithm.value,
        # It starts with the workers and waits while the base policy is evaluated (run_job lets it go).
        "learner.start_on_request": True,
        "reward.workers": options.reward_workers,
    }
    if options.model is not None:
        # Else the learner picks the built-in model and its learning rate.
        decided["learner.model"] = str(options.model.resolve())
    if options.data is not None:
        decided["learner.data.path"] = str(options.data.resolve())
    if not options.eval_data:  # a data file's evaluation rows, which its learner must not train on
        defaults["learner.data.holdout"] = options.eval_problems
    if options.eval.model_fields_set:
        decided["eval"] = options.eval.model_dump(include=options.eval.model_fields_set)
    if options.redis_url is not None:
        decided["redis.url"] = options.redis_url
    return JobConfig.load(
        options.config,
        sets=deep_merge(dotted(decided), options.sets),
        defaults=deep_merge(LOCAL_JOB_DEFAULTS, dotted(defaults)),
    )


def _evaluate_all(deployment, tokenizer, splits, options, console, label) -> dict[str, EvalResult]:
    results = {}
    if not options.evaluate:
        return results
    for split, problems in splits.items():
        results[split] = _evaluate_split(
            deployment, tokenizer, split, problems, options.eval, console, f"eval {label} [{split}]"
        )
    return results


def _evaluate_split(deployment, tokenizer, split, problems, settings, console, label) -> EvalResult:
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task(label, total=len(problems))
        return asyncio.run(
            _guarded(
                deployment,
                evaluate(
                    problems,
                    tokenizer,
                    deployment.rollout_urls[0],
                    deployment.reward_url,
                    split,
                    settings,
                    on_progress=lambda n: bar.advance(task, n),
                ),
            )
        )


async def _let_learner_start(url: str, token: str) -> None:
    async with LearnerClient(url) as learner:
        await learner.start(token)


async def _guarded(deployment: LocalDeployment, work):
    """Run ``work`` while watching the processes: a dead one aborts it with its name."""
    task = asyncio.ensure_future(work)
    while not task.done():
        await asyncio.wait([task], timeout=1.0)
        if not task.done():
            try:
                deployment.check(allow_exited=("learner",))
            except Exception:
                task.cancel()
                raise
    return task.result()


def _follow_training(deployment, tokenizer, splits, options, console, run_dir) -> list[AccuracyPoint]:
    metrics = metrics_file(run_dir / "learner")
    learner = deployment.process("learner")
    curve: list[AccuracyPoint] = []
    next_eval = options.eval_every
    columns = (
        TextColumn("train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("train", total=options.steps, stats="waiting for the first batch")
        while True:
            deployment.check(allow_exited=("learner",))
            last = metrics.last()
            if last is not None:
                bar.update(task, completed=last.step, stats=_stats_line(last, curve))
                due = options.evaluate and options.eval_every and last.step >= next_eval
                if due and last.step < options.steps:
                    next_eval += options.eval_every
                    curve += _curve_point(deployment, tokenizer, splits, options, last.step)
            if not learner.alive():
                if learner.popen.returncode != 0:
                    learner.check_alive()  # raises ProcessDied with the log tail
                break
            time.sleep(1.0)
    return curve


def _stats_line(record: StepRecord, curve: list[AccuracyPoint]) -> str:
    """Training figures of the last step, and the greedy accuracy of the last evaluation during training."""
    parts = []
    for value, label, fmt in (
        (record.reward_mean, "reward", "{:.2f}"),
        (record.reward_on_policy, "on-policy", "{:.2f}"),
        (record.reward_hybrid, "hybrid", "{:.2f}"),
        (record.tokens_per_s, "tok/s", "{:.0f}"),
        (record.staleness_mean, "staleness", "{:.2f}"),
    ):
        if value is not None:
            parts.append(f"{label} {fmt.format(value)}")
    if curve:
        latest = max(point.step for point in curve)
        parts += [f"{p.split} acc {p.greedy_accuracy:.2f}" for p in curve if p.step == latest]
    return " · ".join(parts)


def _curve_point(deployment, tokenizer, splits, options, step) -> list[AccuracyPoint]:
    settings = options.eval.model_copy(update={"k": 0})
    points = []
    for split, problems in splits.items():
        result = asyncio.run(
            evaluate(
                problems[: options.curve_problems],
                tokenizer,
                deployment.rollout_urls[0],
                deployment.reward_url,
                split,
                settings,
            )
        )
        points.append(
            AccuracyPoint(
                step=step, model_version=max(result.model_versions), split=split, greedy_accuracy=result.greedy_accuracy
            )
        )
    return points


def _wait_for_final_weights(deployment: LocalDeployment, console: Console, timeout: float = 120.0) -> None:
    """The learner has exited after publishing its last version; wait until every worker serves it."""
    final = FinalRecord.read(Path(deployment.run_dir) / "learner")
    if final is None:
        return
    final_version = final.version
    deadline = time.monotonic() + timeout

    async def wait(url: str) -> None:
        # The push only queued the version: the worker fetches and swaps it in the background.
        async with RolloutClient(url, timeout_s=5.0, name=f"worker {url}") as worker:
            await worker.wait_for_version(final_version, timeout_s=max(0.0, deadline - time.monotonic()))

    with console.status(f"waiting for the workers to serve weights v{final_version}"):
        for url in deployment.rollout_urls:
            asyncio.run(wait(url))
