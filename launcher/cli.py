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


def checked_placement(job) -> None:
    """GPUs the machine lacks stop a job before anything starts (each run of a comparison places its own)."""
    from launcher.gpus import place_job

    try:
        place_job(job, rollout_workers=1)
    except SettingsError as exc:
        fail(str(exc))


LEARNER_RANKS_HELP = (
    "Learner processes (DeepSpeed data-parallel ranks under torchrun; gloo on CPUs). Default: 1, or --learner-gpus."
)
LEARNER_GPUS_HELP = "GPUs of the learner, one rank each (default on a GPU machine: --learner-ranks)."
ROLLOUT_GPUS_HELP = (
    "GPUs of the rollout workers, one worker per rollout.engine_args.tensor_parallel_size GPUs "
    "(default on a GPU machine: --rollout-workers x that)."
)


def placement_sets(learner_ranks: int | None, learner_gpus: int | None, rollout_gpus: int | None) -> dict:
    """The placement options as a job document (the job file's placement section), under the --set overrides."""
    from shared.settings import dotted

    given = {"learner_ranks": learner_ranks, "learner_gpus": learner_gpus, "rollout_gpus": rollout_gpus}
    return dotted({f"placement.{key}": value for key, value in given.items() if value is not None})


def checked_model(model: Path) -> None:
    """A --model folder that cannot be served (no tokenizer, weights or config) stops with what is missing."""
    from shared.modeling import ModelFolderError, load_tokenizer

    try:
        load_tokenizer(model)
    except ModelFolderError as exc:
        fail(f"--model {exc}")


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
    from shared.api.rollout import WeightsUpdateFailed

    try:
        yield
    except ProcessDied as exc:
        fail(f"{died}: {exc}")
    except (ServiceRefused, ServiceUnavailable, WeightsUpdateFailed) as exc:
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
    eval_data: list[Path] = typer.Option(
        None, help="A benchmark file to evaluate on (repeatable; default with --data: rows of it held out of training)."
    ),
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
    learner_ranks: int = typer.Option(None, min=1, help=LEARNER_RANKS_HELP),
    learner_gpus: int = typer.Option(None, min=1, help=LEARNER_GPUS_HELP),
    rollout_gpus: int = typer.Option(None, min=1, help=ROLLOUT_GPUS_HELP),
    report_to: str = typer.Option(None, "--report-to", metavar="TRACKERS", help=REPORT_TO_HELP),
    sets: list[str] = typer.Option(None, "--set", metavar="SECTION.KEY=VALUE", help=SET_HELP),
) -> None:
    """Run a whole Prefix-RFT training job locally: redis, reward, rollout workers, learner, evaluation, report."""
    from pydantic import ValidationError

    from launcher.run import RunOptions, run_job
    from services.learner.algorithm import AlgorithmName
    from shared.data import DataFormatError
    from shared.settings import deep_merge

    setup_logging("WARNING")
    names = ", ".join(a.value for a in AlgorithmName)
    if algorithm not in {a.value for a in AlgorithmName}:
        fail(f"--algorithm {algorithm!r} is not one of: {names}")
    given = [("--model", model), ("--data", data), ("--config", config), *(("--eval-data", p) for p in eval_data or [])]
    for flag, path in given:
        if path is not None and not path.exists():
            fail(f"{flag} {path}: no such file or directory")
    if model is not None:
        checked_model(model)
    try:
        options = RunOptions(
            model=model,
            data=data,
            eval_data=eval_data or [],
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
            sets=with_report_to(
                deep_merge(placement_sets(learner_ranks, learner_gpus, rollout_gpus), parsed_sets(sets)), report_to
            ),
        )
    except ValidationError as exc:
        fail(str(exc))
    with failing_cleanly(
        died="a service died, so the run was stopped",
        interrupted="interrupted; every process this run started has been stopped",
    ):
        try:
            run_job(options, console)
        except (SettingsError, DataFormatError) as exc:  # settings and data are checked before any process starts
            fail(str(exc))


@app.command("compare")
def compare_command(
    variants: str = typer.Option(
        "all", help="Comma-separated variants (all, main, or names: sft, rft, sft-then-rft, luffy, prefix-rft, "
        "no-entropy-clip, frozen-prefix, uniform-prefix, demo-10, demo-1, prefix-rft-guard)."
    ),
    seeds: str = typer.Option("0,1,2", help="Comma-separated seeds."),
    steps: int = typer.Option(40, min=1, help="Optimizer steps per run."),
    eval_problems: int = typer.Option(128, min=1, help="Problems per evaluation split."),
    eval_every: int = typer.Option(10, min=0, help="Accuracy curve point every N steps (0: none)."),
    eval_k: int = typer.Option(4, min=0, help="Samples per problem for avg@k after training (0: greedy only)."),
    eval_data: list[Path] = typer.Option(
        None, help="A benchmark file every run is evaluated on, instead of the built-in splits (repeatable)."
    ),
    config: Path = typer.Option(None, help="YAML settings merged into every run."),
    demonstrations: str = typer.Option(
        None, help="Built-in dataset demonstration style: column (the base policy's own), teacher (off-policy, "
        "not continuable) or verified (off-policy, continuable)."
    ),
    probe_problems: int = typer.Option(
        100, min=0, help="Training problems the demonstration style is probed on before the runs (0: no probes)."
    ),
    out: Path = typer.Option(Path("runs/compare"), help="Where the runs and figures go (reused when re-run)."),
    results: Path = typer.Option(Path("docs/results.md"), help="The markdown report to write."),
    learner_ranks: int = typer.Option(None, min=1, help=LEARNER_RANKS_HELP + " Every run."),
    learner_gpus: int = typer.Option(None, min=1, help=LEARNER_GPUS_HELP + " Every run."),
    rollout_gpus: int = typer.Option(None, min=1, help=ROLLOUT_GPUS_HELP + " Every run."),
    report_to: str = typer.Option(None, "--report-to", metavar="TRACKERS", help=REPORT_TO_HELP),
    sets: list[str] = typer.Option(None, "--set", metavar="SECTION.KEY=VALUE", help=SET_HELP + " Every run."),
) -> None:
    """Train every algorithm, ablation and demonstration quantity from the same base policy over several
    seeds, and write the comparison (table, curves, raw metrics, docs/results.md)."""
    from pydantic import ValidationError

    from launcher.compare import MAIN_VARIANTS, VARIANTS, CompareOptions, command_line, run_compare
    from shared.settings import deep_merge

    setup_logging("WARNING")
    names = {"all": list(VARIANTS), "main": list(MAIN_VARIANTS)}.get(variants, variants.split(","))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        fail(f"--variants: unknown {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    try:
        seed_list = [int(s) for s in seeds.split(",")]
    except ValueError:
        fail(f"--seeds {seeds!r}: expected comma-separated integers")
    for path in eval_data or []:
        if not path.is_file():
            fail(f"--eval-data {path}: no such file")
    overrides = with_report_to(
        deep_merge(placement_sets(learner_ranks, learner_gpus, rollout_gpus), parsed_sets(sets)), report_to
    )
    checked_placement(checked_job(config, overrides))
    try:
        options = CompareOptions(
            variants=names, seeds=seed_list, steps=steps, eval_problems=eval_problems, eval_every=eval_every,
            eval_k=eval_k, eval_data=eval_data or [], config=config, demonstrations=demonstrations,
            probe_problems=probe_problems, out=out,
            results=results, command=command_line(), sets=overrides,
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
    benchmarks: list[str] = typer.Argument(
        None, metavar="[BENCHMARK]...",
        help="Benchmark files (.jsonl/.parquet/.json in the MATH-500, AIME, AMC or GSM8K layouts), or id / ood "
        "(the built-in task's test splits). Default: id.",
    ),
    model: Path = typer.Option(None, help="Local Hugging Face model directory (default: the built-in base policy)."),
    split: list[str] = typer.Option(None, help="A benchmark, as the arguments (repeatable).", hidden=True),
    problems: int = typer.Option(None, min=1, help="Evaluate at most this many problems of each benchmark."),
    k: int = typer.Option(
        None, min=0, help="Samples per problem for avg@k and pass@k (0: greedy only); eval.k, default 4."
    ),
    temperature: float = typer.Option(None, min=0.0, help="Of the k samples; eval.temperature, default 0.6."),
    pass_at: str = typer.Option(None, help="Comma-separated j for pass@j, each at most k; eval.pass_at, default: k."),
    max_tokens: int = typer.Option(None, min=1, help="Tokens per response; eval.max_tokens, default 192."),
    rollout_url: str = typer.Option(None, help="Use a running rollout worker instead of starting one."),
    reward_url: str = typer.Option(None, help="Use a running reward service instead of starting one."),
    out: Path = typer.Option(
        None, help="Directory for samples.jsonl, summary.md/.json and accuracy.png (default: runs/eval-<time>)."
    ),
    config: Path = typer.Option(
        None, help="YAML settings: eval (sampling), learner.prompt (the prompt), and the services it starts."
    ),
    sets: list[str] = typer.Option(None, "--set", metavar="SECTION.KEY=VALUE", help=SET_HELP),
) -> None:
    """Greedy pass@1, avg@k and pass@k on one or more benchmarks, through a rollout worker and the reward service."""
    from pydantic import ValidationError

    from launcher.eval_job import EvalOptions, run_eval
    from shared.data import DataFormatError
    from shared.settings import deep_merge, dotted

    setup_logging("WARNING")
    flags = {"eval.k": k, "eval.temperature": temperature, "eval.max_tokens": max_tokens}
    if pass_at is not None:
        try:
            flags["eval.pass_at"] = [int(j) for j in pass_at.split(",")]
        except ValueError:
            fail(f"--pass-at {pass_at!r}: expected comma-separated integers")
    given = dotted({key: value for key, value in flags.items() if value is not None})
    job = checked_job(config, deep_merge(given, parsed_sets(sets)))
    if model is not None:
        checked_model(model)
    try:
        options = EvalOptions(
            benchmarks=[*(benchmarks or []), *(split or [])] or ["id"], model=model, limit=problems,
            rollout_url=rollout_url, reward_url=reward_url, out=out,
        )
    except ValidationError as exc:
        fail(str(exc))
    with failing_cleanly(died="a service died, so the evaluation was stopped", interrupted="interrupted"):
        try:
            run_eval(options, job, console)
        except (DataFormatError, OSError) as exc:  # a benchmark or model folder it cannot read
            fail(str(exc))


@app.command("probe")
def probe_command(
    demonstrations: str = typer.Option(
        "column,teacher,verified", help="Comma-separated demonstration styles of the built-in task to probe."
    ),
    problems: int = typer.Option(100, min=1, help="The first problems of the training split."),
    prefix_ratio: float = typer.Option(0.5, help="Share of each demonstration's tokens the base policy continues."),
    out: Path = typer.Option(None, help="Also write the figures here as JSON."),
    config: Path = typer.Option(None, help="YAML settings (learner.model, learner.sampling, learner.dataset...)."),
    sets: list[str] = typer.Option(None, "--set", metavar="SECTION.KEY=VALUE", help=SET_HELP),
) -> None:
    """How far each demonstration style is from the base policy (mean log-prob per token) and whether the base
    policy can continue it (hybrid reward from a prefix ratio), as prefix-rft compare records for its style."""
    import json
    import typing

    from pydantic import ValidationError

    from launcher.probes import ProbeSettings, run_probes
    from shared.datasets.arithmetic import DemoStyle

    setup_logging("WARNING")
    styles = demonstrations.split(",")
    known = typing.get_args(DemoStyle)
    unknown = [s for s in styles if s not in known]
    if unknown:
        fail(f"--demonstrations: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    try:
        settings = ProbeSettings(problems=problems, prefix_ratio=prefix_ratio)
    except ValidationError as exc:
        fail(str(exc))
    job = checked_job(config, parsed_sets(sets))
    with failing_cleanly(died="a service died, so the probes were stopped", interrupted="interrupted"):
        probes = run_probes(job, styles, console, settings)
    for probe in probes:
        typer.echo(f"{probe.style}: log-prob/token {probe.mean_logprob:.3f}, hybrid reward {probe.hybrid_reward:.3f}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps([p.model_dump(mode="json") for p in probes], indent=1))


@app.command("export")
def export_command(
    run_dir: Path = typer.Argument(..., help="A run directory (holds learner/weights/)."),
    out: Path = typer.Argument(..., help="The model folder to write (must not exist, or be empty)."),
    version: int = typer.Option(None, min=0, help="Weights version to export (default: the run's final weights)."),
) -> None:
    """Write a run's weights as a complete Hugging Face model folder (weights, config, tokenizer, chat
    template, generation config) that transformers, vLLM and `prefix-rft eval --model` load."""
    from launcher.export import ExportError, export
    from shared.modeling import ModelFolderError

    try:
        exported = export(run_dir, out, version)
    except (ExportError, ModelFolderError) as exc:
        fail(str(exc))
    typer.echo(f"exported v{exported.version} of {run_dir} to {out}")


@app.command("import-gguf")
def import_gguf_command(
    gguf_file: Path = typer.Argument(..., help="A GGUF model file (llama.cpp's format)."),
    out: Path = typer.Argument(..., help="The model folder to write (must not exist, or be empty)."),
) -> None:
    """Turn a GGUF file into a Hugging Face model folder (de-quantised to float32) for --model."""
    from launcher.gguf import GgufImportError, import_gguf
    from shared.modeling import ModelFolderError

    try:
        import_gguf(gguf_file, out)
    except (GgufImportError, ModelFolderError) as exc:
        fail(str(exc))
    typer.echo(str(out))


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
