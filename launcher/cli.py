"""The ``prefix-rft`` command line: one sub-command per service, plus the jobs built on them."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console

from shared.service_cli import SET_HELP
from shared.settings import SettingsError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Prefix-RFT: blend SFT and RFT by prefix sampling.")
console = Console(stderr=True)


@app.callback()
def main() -> None:
    """Prefix-RFT: blend SFT and RFT by prefix sampling."""


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def fail(message: str) -> None:
    from rich.markup import escape

    console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(2)


def parsed_sets(sets: list[str] | None) -> dict:
    """The --set options as a job document; a malformed one stops with a message."""
    from shared.settings import parse_sets

    try:
        return parse_sets(sets or [])
    except SettingsError as exc:
        fail(str(exc))


REPORT_TO_HELP = (
    "Log to experiment trackers: tensorboard, wandb, mlflow, trackio (comma-separated) or none; "
    "short for --set learner.tracking.report_to=... (docs/custom-task.md)."
)


def with_report_to(sets: dict, report_to: str | None) -> dict:
    """The --set document with --report-to in it (a --set of the same key wins)."""
    from shared.settings import deep_merge

    if report_to is None:
        return sets
    return deep_merge({"learner": {"tracking": {"report_to": report_to}}}, sets)


def checked_job(config: Path | None, sets: dict):
    """The job's settings from --config and --set, checked before anything starts (a bad one: a message)."""
    from launcher.config import JobConfig

    if config is not None and not config.exists():
        fail(f"--config {config}: no such file or directory")
    try:
        return JobConfig.load(config, sets=sets)
    except SettingsError as exc:
        fail(str(exc))


@app.command("build-default-model")
def build_default_model_command(
    cache_dir: Path = typer.Option(
        None, help="Where built models are cached (default: $PRFT_CACHE_DIR or ~/.cache/prefix-rft)."
    ),
) -> None:
    """Build (or find in the cache) the built-in tokenizer, model and warmed-up base policy."""
    from shared.base_policy import default_base_policy

    setup_logging()
    path = default_base_policy(cache_dir=cache_dir)
    typer.echo(str(path))


@contextmanager
def failing_cleanly(died: str, interrupted: str):
    """A job that stopped its processes (a service died, Ctrl-C or SIGTERM) ends with a message, not a trace."""
    from launcher.deployment import ProcessDied
    from shared.api.http import ServiceRefused, ServiceUnavailable

    try:
        yield
    except ProcessDied as exc:
        fail(f"{died}: {exc}")
    except (ServiceRefused, ServiceUnavailable) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail(interrupted)


# Each service parses its own command line (services/<svc>/entry.py), so `prefix-rft reward ...` and
# `python -m services.reward ...` are one program; these commands hand it everything after their name.
_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command("reward", context_settings=_PASS_THROUGH, add_help_option=False)
def reward_command(ctx: typer.Context) -> None:
    """Serve the reward service: POST /v1/score verifies math answers (--help: its options)."""
    from services.reward.entry import main as reward_main

    reward_main(ctx.args)


@app.command("rollout", context_settings=_PASS_THROUGH, add_help_option=False)
def rollout_command(ctx: typer.Context) -> None:
    """Serve a rollout worker: a vLLM engine behind POST /v1/generate, taking tasks from Redis (--help: its options)."""
    from services.rollout.entry import main as rollout_main

    rollout_main(ctx.args)


@app.command("learner", context_settings=_PASS_THROUGH, add_help_option=False)
def learner_command(ctx: typer.Context) -> None:
    """Run the DeepSpeed learner, also under torchrun or the deepspeed launcher (--help: its options)."""
    from services.learner.entry import main as learner_main

    learner_main(ctx.args)


@app.command("run")
def run_command(
    model: Path = typer.Option(None, help="Local Hugging Face model directory (default: the built-in base policy)."),
    data: Path = typer.Option(None, help="OpenR1-Math style .parquet/.jsonl/.json file (default: the built-in task)."),
    algorithm: str = typer.Option("prefix-rft", help="prefix-rft, sft, rft, sft-then-rft, luffy, or an ablation."),
    steps: int = typer.Option(100, min=1, help="Optimizer steps."),
    seed: int = typer.Option(0),
    rollout_workers: int = typer.Option(1, min=1, help="Rollout worker processes (vLLM engines)."),
    reward_workers: int = typer.Option(1, min=1, help="Verifier processes of the reward service."),
    redis_url: str = typer.Option(None, help="Use this Redis instead of starting a private redis-server."),
    config: Path = typer.Option(None, help="YAML settings file (sections redis, auth, reward, rollout, learner)."),
    out: Path = typer.Option(None, help="Run directory (default: runs/<time>-<algorithm>-s<seed>)."),
    eval_problems: int = typer.Option(128, min=1, help="Problems per evaluation split."),
    eval_every: int = typer.Option(20, min=0, help="Evaluate during training every N steps (0: never)."),
    pin_cores: bool = typer.Option(True, help="Give the learner and the workers disjoint CPU cores."),
    report_to: str = typer.Option(None, "--report-to", metavar="TRACKERS", help=REPORT_TO_HELP),
    sets: list[str] = typer.Option(None, "--set", metavar="SECTION.KEY=VALUE", help=SET_HELP),
) -> None:
    """Run a whole Prefix-RFT training job locally: redis, reward, rollout workers, learner, evaluation, report."""
    from pydantic import ValidationError

    from launcher.run import RunOptions, run_job
    from services.learner.algorithm import AlgorithmName

    setup_logging("WARNING")
    names = ", ".join(a.value for a in AlgorithmName)
    if algorithm not in {a.value for a in AlgorithmName}:
        fail(f"--algorithm {algorithm!r} is not one of: {names}")
    for flag, path in (("--model", model), ("--data", data), ("--config", config)):
        if path is not None and not path.exists():
            fail(f"{flag} {path}: no such file or directory")
    try:
        options = RunOptions(
            model=model,
            data=data,
            algorithm=algorithm,
            steps=steps,
            seed=seed,
            rollout_workers=rollout_workers,
            reward_workers=reward_workers,
            redis_url=redis_url,
            config=config,
            out=out,
            eval_problems=eval_problems,
            eval_every=eval_every,
            pin_cores=pin_cores,
            sets=with_report_to(parsed_sets(sets), report_to),
        )
    except ValidationError as exc:
        fail(str(exc))
    with failing_cleanly(
        died="a service died, so the run was stopped",
        interrupted="interrupted; every process this run started has been stopped",
    ):
        try:
            run_job(options, console)
        except SettingsError as exc:  # the job's settings are checked before any process starts
            fail(str(exc))


@app.command("compare")
def compare_command(
    variants: str = typer.Option(
        "all", help="Comma-separated variants (all, main, or names: sft, rft, sft-then-rft, luffy, prefix-rft, "
        "no-entropy-clip, frozen-prefix, uniform-prefix, demo-10, demo-1)."
    ),
    seeds: str = typer.Option("0,1,2", help="Comma-separated seeds."),
    steps: int = typer.Option(40, min=1, help="Optimizer steps per run."),
    eval_problems: int = typer.Option(128, min=1, help="Problems per evaluation split."),
    eval_every: int = typer.Option(10, min=0, help="Accuracy curve point every N steps (0: none)."),
    eval_k: int = typer.Option(4, min=0, help="Samples per problem for avg@k after training (0: greedy only)."),
    config: Path = typer.Option(None, help="YAML settings merged into every run."),
    demonstrations: str = typer.Option(
        None, help="Built-in dataset demonstration style: column (the base policy's own) or teacher (off-policy)."
    ),
    out: Path = typer.Option(Path("runs/compare"), help="Where the runs and figures go (reused when re-run)."),
    results: Path = typer.Option(Path("docs/results.md"), help="The markdown report to write."),
    report_to: str = typer.Option(None, "--report-to", metavar="TRACKERS", help=REPORT_TO_HELP),
    sets: list[str] = typer.Option(None, "--set", metavar="SECTION.KEY=VALUE", help=SET_HELP + " Every run."),
) -> None:
    """Train every algorithm, ablation and demonstration quantity from the same base policy over several
    seeds, and write the comparison (table, curves, raw metrics, docs/results.md)."""
    from pydantic import ValidationError

    from launcher.compare import MAIN_VARIANTS, VARIANTS, CompareOptions, command_line, run_compare

    setup_logging("WARNING")
    names = {"all": list(VARIANTS), "main": list(MAIN_VARIANTS)}.get(variants, variants.split(","))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        fail(f"--variants: unknown {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    try:
        seed_list = [int(s) for s in seeds.split(",")]
    except ValueError:
        fail(f"--seeds {seeds!r}: expected comma-separated integers")
    overrides = with_report_to(parsed_sets(sets), report_to)
    checked_job(config, overrides)
    try:
        options = CompareOptions(
            variants=names, seeds=seed_list, steps=steps, eval_problems=eval_problems, eval_every=eval_every,
            eval_k=eval_k, config=config, demonstrations=demonstrations, out=out, results=results,
            command=command_line(), sets=overrides,
        )
    except ValidationError as exc:
        fail(str(exc))
    with failing_cleanly(
        died="a service died, so the comparison was stopped (finished runs are kept and reused)",
        interrupted="interrupted; finished runs are kept and reused when the command is run again",
    ):
        try:
            run_compare(options, console)
        except SettingsError as exc:  # a tracker whose package is missing, found before any run starts
            fail(str(exc))


@app.command("eval")
def eval_command(
    model: Path = typer.Option(None, help="Local Hugging Face model directory (default: the built-in base policy)."),
    split: str = typer.Option("id", help="'id' or 'ood' (built-in task) or a data file."),
    problems: int = typer.Option(128, min=1, help="Evaluate at most this many problems."),
    k: int = typer.Option(4, min=0, help="Samples per problem for avg@k and pass@k (0: greedy only)."),
    temperature: float = typer.Option(0.6, min=0.0),
    max_tokens: int = typer.Option(192, min=1),
    rollout_url: str = typer.Option(None, help="Use a running rollout worker instead of starting one."),
    reward_url: str = typer.Option(None, help="Use a running reward service instead of starting one."),
    out: Path = typer.Option(None, help="Also write the result as JSON here."),
    config: Path = typer.Option(None, help="YAML settings (sections reward, rollout, ...) for the services it starts."),
    sets: list[str] = typer.Option(None, "--set", metavar="SECTION.KEY=VALUE", help=SET_HELP),
) -> None:
    """Greedy and sampled accuracy (pass@1, avg@k, pass@k) through a rollout worker and the reward service."""
    import asyncio
    import tempfile

    from launcher.deployment import LocalDeployment, ProcessDied
    from launcher.evaluate import EvalSettings, evaluate, problems_for_split
    from shared.api.http import ServiceRefused, ServiceUnavailable
    from shared.modeling import load_tokenizer

    setup_logging("WARNING")
    job = checked_job(config, parsed_sets(sets))
    if model is not None and not (model / "config.json").is_file():
        fail(f"--model {model}: not a Hugging Face model directory (no config.json)")
    try:
        selected = problems_for_split(split, problems)
    except ValueError as exc:
        fail(str(exc))
    if model is None:
        from shared.base_policy import default_base_policy

        model = default_base_policy()
    settings = EvalSettings(k=k, temperature=temperature, max_tokens=max_tokens)
    deployment = None
    try:
        if rollout_url is None or reward_url is None:
            run_dir = Path(tempfile.mkdtemp(prefix="prft-eval-"))
            config_path = job.dump(run_dir / "job.yaml")
            deployment = LocalDeployment(run_dir=run_dir, config_path=config_path, redis_url=None)
            with console.status("starting the reward service and a rollout worker"):
                reward_url = reward_url or deployment.start_reward(1)
                deployment.reward_url = reward_url
                rollout_url = rollout_url or deployment.start_rollout_worker(model, 0, consume_tasks=False)
        result = asyncio.run(evaluate(selected, load_tokenizer(model), rollout_url, reward_url, split, settings))
    except (ProcessDied, ServiceRefused, ServiceUnavailable) as exc:
        fail(str(exc))
    finally:
        if deployment is not None:
            deployment.stop()
    typer.echo(result.model_dump_json(indent=2))
    if out is not None:
        out.write_text(result.model_dump_json(indent=2))


@app.command("ledger")
def ledger_command(
    run_dir: Path = typer.Argument(..., help="A run directory (holds job.yaml, learner/ and redis/)."),
    redis_url: str = typer.Option(None, help="The run's live redis-server (default: a copy of its append-only file)."),
) -> None:
    """Reconcile a run: groups produced = trained + dropped as stale + still queued, no id trained twice."""
    from launcher.ledger import reconcile_run, reconcile_stopped_run

    try:
        ledger = reconcile_run(run_dir, redis_url) if redis_url else reconcile_stopped_run(run_dir)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    typer.echo(ledger.render())
    if not ledger.ok:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
