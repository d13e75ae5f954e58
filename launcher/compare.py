"""``prefix-rft compare``: the paper's comparison at small scale.

Every variant (algorithm, ablation or demonstration quantity) trains from the same base policy on the
same data, with the same rollout budget and number of steps, once per seed; each run is a whole
``prefix-rft run``. The base policy is evaluated once (the first run) and every run after training.
Runs whose report already exists are reused, so an interrupted comparison continues where it stopped.
The outputs: ``comparison.json`` (every run's figures and per-step metrics), ``curves.png`` and the
markdown report (``docs/results.md`` by default).
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.table import Table

from launcher.config import JobConfig
from launcher.evaluate import EvalSettings
from launcher.probes import ProbeSettings, StyleProbe, cached_probe
from launcher.report import RunReport
from launcher.run import RunOptions, run_job
from launcher.tracking import check_trackers, log_comparison
from services.learner.algorithm import AlgorithmName
from shared.datasets.arithmetic import DemoStyle
from shared.modeling import default_cache_dir, weights_digest
from shared.records import metrics_file
from shared.settings import SettingsError, deep_merge, dotted


class Variant(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    algorithm: AlgorithmName
    overrides: dict = Field(default_factory=dict)  # fields of the algorithm settings


VARIANTS: dict[str, Variant] = {
    "sft": Variant(label="SFT", algorithm=AlgorithmName.sft),
    "rft": Variant(label="RFT", algorithm=AlgorithmName.rft),
    "sft-then-rft": Variant(label="SFT then RFT", algorithm=AlgorithmName.sft_then_rft),
    "luffy": Variant(label="LUFFY", algorithm=AlgorithmName.luffy),
    "prefix-rft": Variant(label="Prefix-RFT", algorithm=AlgorithmName.prefix_rft),
    "no-entropy-clip": Variant(label="Prefix-RFT, no entropy clip", algorithm=AlgorithmName.prefix_rft_no_entropy_clip),
    "frozen-prefix": Variant(label="Prefix-RFT, prefix frozen", algorithm=AlgorithmName.prefix_rft_frozen_prefix),
    "uniform-prefix": Variant(label="Prefix-RFT, uniform prefix ratio", algorithm=AlgorithmName.prefix_rft_uniform),
    "demo-10": Variant(
        label="Prefix-RFT, 10% demonstrations", algorithm=AlgorithmName.prefix_rft, overrides={"demo_fraction": 0.1}
    ),
    "demo-1": Variant(
        label="Prefix-RFT, 1% demonstrations", algorithm=AlgorithmName.prefix_rft, overrides={"demo_fraction": 0.01}
    ),
    # Rewards are 0 or 1 on the built-in task: 0.5 freezes the prefix of every failed hybrid.
    "prefix-rft-guard": Variant(
        label="Prefix-RFT, hybrid guard",
        algorithm=AlgorithmName.prefix_rft,
        overrides={"hybrid_guard_threshold": 0.5},
    ),
}
MAIN_VARIANTS = ("sft", "rft", "sft-then-rft", "luffy", "prefix-rft")


class CompareOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variants: list[str] = Field(default_factory=lambda: list(VARIANTS), min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    steps: int = Field(40, ge=1)
    eval_problems: int = Field(128, ge=1)
    eval_every: int = Field(10, ge=0)
    eval_k: int = Field(4, ge=0)  # samples per problem for avg@k after training (0: greedy only)
    eval_data: list[Path] = Field(default_factory=list)  # benchmark files instead of the built-in splits
    config: Path | None = None  # YAML merged into every run's settings (the same for all variants)
    sets: dict[str, Any] = Field(default_factory=dict)  # --set overrides of every run, a job document
    # The built-in task's demonstration style (None: what the config says, else "column", the base
    # policy's own); "teacher" makes the demonstrations off-policy and not continuable, "verified"
    # off-policy yet continuable, as the paper's are.
    demonstrations: DemoStyle | None = None
    # Training problems the demonstration style is probed on before the runs (0: no probes).
    probe_problems: int = Field(100, ge=0)
    out: Path = Path("runs/compare")
    results: Path = Path("docs/results.md")
    command: str = ""  # the command line, written into the results


class SplitSummary(BaseModel):
    mean: float
    std: float  # sample standard deviation over seeds (0 with one seed)
    values: list[float]


class VariantSummary(BaseModel):
    variant: str
    label: str
    greedy: dict[str, SplitSummary]  # split -> greedy accuracy over seeds
    avg_at_k: dict[str, SplitSummary]
    wall_time_s: float  # mean per run


class Comparison(BaseModel):
    options: CompareOptions
    base: dict[str, float]  # split -> greedy accuracy of the base policy
    base_avg_at_k: dict[str, float]
    summaries: list[VariantSummary]
    runs: dict[str, dict[int, RunReport]]  # variant -> seed -> report
    wall_time_s: float
    machine: str
    # The demonstration style's probes on the base policy, taken before the runs (built-in task only).
    probes: StyleProbe | None = None


def validate_variants(names: list[str]) -> None:
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")


def run_compare(options: CompareOptions, console: Console) -> Comparison:
    validate_variants(options.variants)
    job = JobConfig.load(options.config, sets=options.sets)  # every run's settings, as far as they are shared
    check_trackers(job.learner.tracking)
    started = time.monotonic()
    # Before any run: how far the style is from the base policy and whether the base can continue it.
    probes = None
    if job.learner.data.path is None and options.probe_problems:
        settings = ProbeSettings(problems=options.probe_problems)
        probes = cached_probe(job, demonstration_style(options), options.out, console, settings)
    runs: dict[str, dict[int, RunReport]] = {name: {} for name in options.variants}
    _check_one_base(options, console)
    total = len(options.variants) * len(options.seeds)
    done = 0
    for seed in options.seeds:  # seed-major, so an interrupted comparison has every variant at the same seeds
        for name in options.variants:
            done += 1
            run_dir = options.out / name / f"seed-{seed}"
            report = _existing_report(run_dir, options.steps)
            if report is None:
                _discard_unfinished(run_dir, options.steps, console)
                console.rule(f"[{done}/{total}] {VARIANTS[name].label}, seed {seed}")
                report = run_job(_run_options(options, name, seed, run_dir, first=done == 1), console)
            else:
                console.print(f"[{done}/{total}] {VARIANTS[name].label}, seed {seed}: reusing {run_dir}/report.json")
            runs[name][seed] = report
    base_report = next((r for by_seed in runs.values() for r in by_seed.values() if r.accuracy_before), None)
    comparison = Comparison(
        options=options,
        base=base_report.accuracy_before if base_report else {},
        base_avg_at_k={s: e.avg_at_k for s, e in base_report.evaluation_before.items() if e.avg_at_k is not None}
        if base_report
        else {},
        summaries=[_summarise(name, by_seed) for name, by_seed in runs.items()],
        runs=runs,
        wall_time_s=time.monotonic() - started,
        machine=_machine(),
        probes=probes,
    )
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "comparison.json").write_text(comparison.model_dump_json(indent=1))
    plot_comparison(comparison, options.out / "curves.png")
    write_results(comparison, options.results, options.out / "curves.png")
    log_comparison(job, options.out, comparison.summaries, options.steps)
    print_table(comparison, console)
    return comparison


def _existing_report(run_dir: Path, steps: int) -> RunReport | None:
    path = run_dir / "report.json"
    if not path.is_file():
        return None
    report = RunReport.model_validate_json(path.read_text())
    return report if report.steps == steps and report.evaluation_after else None


def _check_one_base(options: CompareOptions, console: Console) -> None:
    """Finished runs are reused only when they trained from the base policy the new runs will train from:
    the built-in base is built on each machine, and its warm-up rounds differently on other CPUs."""
    reused = {
        run_dir: report
        for name in options.variants
        for seed in options.seeds
        if (report := _existing_report(run_dir := options.out / name / f"seed-{seed}", options.steps)) is not None
    }
    if not reused:
        return
    from shared.base_policy import default_base_policy

    with console.status("checking the finished runs' base policy against this machine's"):
        digest = weights_digest(default_base_policy())
    other = {run_dir: report.model_digest for run_dir, report in reused.items() if report.model_digest != digest}
    if other:
        run_dir, theirs = next(iter(other.items()))
        raise SettingsError(
            f"{len(other)} of the {len(reused)} finished runs in {options.out} trained from another base policy "
            f"than this machine's (weights {digest}), {run_dir} for one (weights {theirs or 'not recorded'}): their "
            f"figures cannot stand beside new runs. Use another --out, or put that base in this machine's cache "
            f"({default_cache_dir()}) to go on with it"
        )


def _discard_unfinished(run_dir: Path, steps: int, console: Console) -> None:
    """Clear what an interrupted run of this comparison left, so that its run starts afresh: the learner
    refuses a folder that holds a checkpoint. A finished run of another length is refused instead, never
    deleted: it is somebody's result."""
    if not run_dir.exists():
        return
    path = run_dir / "report.json"
    if path.is_file():
        finished = RunReport.model_validate_json(path.read_text())
        raise SettingsError(
            f"{run_dir} holds a finished run of {finished.steps} steps, not {steps}: use another --out for "
            f"{steps} steps"
        )
    console.print(f"{run_dir}: an unfinished run (no report.json), interrupted earlier: starting it again")
    shutil.rmtree(run_dir)


def _run_options(options: CompareOptions, name: str, seed: int, run_dir: Path, first: bool) -> RunOptions:
    variant = VARIANTS[name]
    overrides = {f"learner.algorithm.{key}": value for key, value in variant.overrides.items()}
    if options.demonstrations is not None:
        overrides["learner.dataset.demonstrations"] = options.demonstrations
    # Every run's directory is called seed-<n>: in a tracker (one wandb project, one mlflow experiment)
    # the runs are told apart by this name, the comparison's and the variant's.
    tracking_sets = {"learner.tracking.run_name": f"{options.out.resolve().name}-{name}-seed-{seed}"}
    return RunOptions(
        algorithm=variant.algorithm,
        steps=options.steps,
        seed=seed,
        config=options.config,
        sets=deep_merge(options.sets, dotted(overrides), dotted(tracking_sets)),
        out=run_dir,
        eval_problems=options.eval_problems,
        eval_data=options.eval_data,
        eval_every=options.eval_every,
        evaluate_before=first,
        eval=EvalSettings(k=options.eval_k),
    )


def demonstration_style(options: CompareOptions) -> str:
    if options.demonstrations is not None:
        return options.demonstrations
    return JobConfig.load(options.config, sets=options.sets).learner.dataset.demonstrations


DEMO_STYLE_WORDS = {
    "column": "column (digit-by-digit, the base policy's own style: imitation costs it nothing)",
    "teacher": "teacher (each step in words, each operation as mental arithmetic: off the base policy's "
    "distribution, as a large model's traces are for the paper's students)",
    "verified": "verified (the base policy's column work, then a careful solver's close: the result restated in "
    "words and checked backwards in one go; costly to imitate, yet the base policy can continue a prefix of it, as "
    "the paper's students continue R1's traces)",
}


def split_names(options: CompareOptions) -> str | None:
    """What the built-in splits are, for the results (None when the runs evaluate on benchmark files)."""
    if options.eval_data:
        return None
    dataset = JobConfig.load(options.config, sets=options.sets).learner.dataset
    return (
        f"id: the test split ({dataset.test.describe()}); ood: `{dataset.ood_name}` ({dataset.ood.describe()}), "
        "chosen before the runs"
    )


def _spread(values: list[float]) -> SplitSummary:
    return SplitSummary(
        mean=statistics.fmean(values), std=statistics.stdev(values) if len(values) > 1 else 0.0, values=values
    )


def _summarise(name: str, by_seed: dict[int, RunReport]) -> VariantSummary:
    reports = list(by_seed.values())
    splits = sorted({split for r in reports for split in r.evaluation_after})
    return VariantSummary(
        variant=name,
        label=VARIANTS[name].label,
        greedy={s: _spread([r.evaluation_after[s].greedy_accuracy for r in reports]) for s in splits},
        avg_at_k={
            s: _spread([r.evaluation_after[s].avg_at_k for r in reports])
            for s in splits
            if all(r.evaluation_after[s].avg_at_k is not None for r in reports)
        },
        wall_time_s=statistics.fmean(r.wall_time_s for r in reports),
    )


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{len(os.sched_getaffinity(0))} cores ({cpu}), {memory:.0f} GiB, {platform.system()} {platform.release()}"


# --------------------------------------------------------------------------- outputs


def _fmt(summary: SplitSummary | None) -> str:
    return "-" if summary is None else f"{summary.mean:.3f} ± {summary.std:.3f}"


def print_table(comparison: Comparison, console: Console) -> None:
    splits = sorted(comparison.base)
    table = Table(title=f"greedy accuracy after {comparison.options.steps} steps, mean ± std over seeds")
    table.add_column("variant")
    for split in splits:
        table.add_column(split, justify="right")
    table.add_row("base policy", *(f"{comparison.base[s]:.3f}" for s in splits))
    for summary in comparison.summaries:
        table.add_row(summary.label, *(_fmt(summary.greedy.get(s)) for s in splits))
    console.print(table)
    console.print(f"results: {comparison.options.results} · figures: {comparison.options.out}")


def plot_comparison(comparison: Comparison, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = sorted(comparison.base) or ["id"]
    fig, axes = plt.subplots(1, len(splits) + 1, figsize=(6 * (len(splits) + 1), 4.5))
    steps = comparison.options.steps
    # One colour per variant in every panel: the reward panel has no line for SFT, which would shift
    # the default colour cycle there.
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {name: palette[i % len(palette)] for i, name in enumerate(comparison.runs)}
    for ax, split in zip(axes, splits):
        for name, by_seed in comparison.runs.items():
            curve: dict[int, list[float]] = {0: [comparison.base.get(split, 0.0)]}
            for report in by_seed.values():
                for point in report.accuracy_curve:
                    if point.split == split:
                        # A point is taken at the first step seen past each multiple of eval_every; put
                        # the seeds' points at that multiple so they average together.
                        every = comparison.options.eval_every or 1
                        curve.setdefault(every * round(point.step / every), []).append(point.greedy_accuracy)
                curve.setdefault(steps, []).append(report.evaluation_after[split].greedy_accuracy)
            xs = sorted(curve)
            ax.plot(xs, [statistics.fmean(curve[x]) for x in xs], marker="o", color=colour[name],
                    label=VARIANTS[name].label)
        ax.set(title=f"greedy accuracy, {split} split (mean over seeds)", xlabel="step", ylabel="accuracy")
        ax.legend(fontsize=7)
    ax = axes[-1]
    for name, (xs, ys) in reward_curves(comparison).items():
        ax.plot(xs, ys, color=colour[name], label=VARIANTS[name].label)
    ax.set(title="on-policy training reward (mean over seeds)", xlabel="step", ylabel="reward")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reward_curves(comparison: Comparison) -> dict[str, tuple[list[int], list[float]]]:
    """Each variant's on-policy training reward per step, the mean over its seeds (none for SFT)."""
    curves = {}
    for name, by_seed in comparison.runs.items():
        per_step: dict[int, list[float]] = {}
        for seed in by_seed:
            # Where this comparison keeps the run, not the report's run_dir: a comparison's folder may
            # have moved since (to another machine, or results/), and reused runs move with it.
            for m in metrics_file(comparison.options.out / name / f"seed-{seed}" / "learner").read():
                if m.reward_on_policy is not None:
                    per_step.setdefault(m.step, []).append(m.reward_on_policy)
        if per_step:
            xs = sorted(per_step)
            curves[name] = (xs, [statistics.fmean(per_step[x]) for x in xs])
    return curves


def _verdicts(comparison: Comparison, split: str) -> list[str]:
    """Prefix-RFT against each other variant on ``split``: the difference of means and whether it
    exceeds the larger of the two seed spreads (decisive) or not."""
    by_name = {s.variant: s for s in comparison.summaries}
    ours = by_name.get("prefix-rft")
    if ours is None or split not in ours.greedy:
        return []
    lines = []
    for summary in comparison.summaries:
        if summary.variant == "prefix-rft" or split not in summary.greedy:
            continue
        a, b = ours.greedy[split], summary.greedy[split]
        diff = a.mean - b.mean
        spread = max(a.std, b.std)
        if abs(diff) <= spread:
            word = "within the seed spread: not decisive"
        else:
            word = "ahead, beyond the seed spread" if diff > 0 else "behind, beyond the seed spread"
        lines.append(f"- Prefix-RFT vs {summary.label}: {diff:+.3f} (spread {spread:.3f}): {word}.")
    return lines


PAPER_ORDER = ("prefix-rft", "luffy", "sft-then-rft", "rft", "sft")
# Further pairs the paper orders: each ablation below full Prefix-RFT (7B: 51.8 against 45.4 frozen
# prefix, 45.7 no entropy clip), and fewer demonstrations costing little (1.5B: 41.1, 40.8 with
# 10%, 37.6 with 1%, all above RFT 30.0 and SFT 31.9).
PAPER_EXTRA_PAIRS = (
    ("prefix-rft", "no-entropy-clip"),
    ("prefix-rft", "frozen-prefix"),
    ("prefix-rft", "uniform-prefix"),
    ("prefix-rft", "demo-10"),
    ("demo-10", "demo-1"),
    ("demo-1", "rft"),
    ("demo-1", "sft"),
)


def _paper_pairs(comparison: Comparison, split: str) -> list[str]:
    """For every pair the paper orders (A above B), whether this comparison agrees, and how firmly."""
    by_name = {s.variant: s for s in comparison.summaries if split in s.greedy}
    present = [name for name in PAPER_ORDER if name in by_name]
    pairs = [(upper, lower) for i, upper in enumerate(present) for lower in present[i + 1 :]]
    pairs += [(upper, lower) for upper, lower in PAPER_EXTRA_PAIRS if upper in by_name and lower in by_name]
    lines = []
    for upper, lower in pairs:
        a, b = by_name[upper].greedy[split], by_name[lower].greedy[split]
        diff, spread = a.mean - b.mean, max(a.std, b.std)
        agrees = "agrees" if diff > 0 else "reversed"
        firm = "beyond the seed spread" if abs(diff) > spread else "within the seed spread"
        lines.append(f"- {by_name[upper].label} above {by_name[lower].label}: {agrees} ({diff:+.3f}, {firm}).")
    return lines


KEEPS_GAIN = 0.9  # the share of Prefix-RFT's gain over the base that 10% of the demonstrations must keep


def demo_fraction_verdict(comparison: Comparison, split: str) -> str | None:
    """Whether Prefix-RFT with 10% of the demonstrations keeps at least 90% of full Prefix-RFT's gain over
    the base policy on ``split``, as a sentence with the figures; None unless both variants and the base ran."""
    by_name = {s.variant: s for s in comparison.summaries if split in s.greedy}
    if "prefix-rft" not in by_name or "demo-10" not in by_name or split not in comparison.base:
        return None
    base, full, tenth = comparison.base[split], by_name["prefix-rft"].greedy[split], by_name["demo-10"].greedy[split]
    figures = (
        f"base {base:.3f}, Prefix-RFT {full.mean:.3f} ± {full.std:.3f}, with 10% {tenth.mean:.3f} ± {tenth.std:.3f}"
    )
    paper = "In the paper it keeps almost all of it (1.5B: 41.1 with all, 40.8 with 10%)."
    gain = full.mean - base
    if gain <= 0:
        return (
            f"Prefix-RFT gained nothing over the base policy on the {split} split ({figures}): "
            f"no gain to keep. {paper}"
        )
    kept = (tenth.mean - base) / gain
    verdict = "keeps" if kept >= KEEPS_GAIN else "does not keep"
    return (
        f"With 10% of the demonstrations Prefix-RFT keeps {kept:.0%} of its gain over the base policy on the {split} "
        f"split ({figures}): it {verdict} at least {KEEPS_GAIN:.0%}. {paper}"
    )


def _base_digest(comparison: Comparison) -> str | None:
    digests = {r.model_digest for by_seed in comparison.runs.values() for r in by_seed.values()}
    return digests.pop() if len(digests) == 1 else None


def write_results(comparison: Comparison, path: Path, curves: Path) -> None:
    options = comparison.options
    style = demonstration_style(options)
    splits = sorted(comparison.base)
    image = path.parent / "results" / f"{path.stem}.png"  # one per report: a second comparison keeps its own
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(curves.read_bytes())
    with_k = any(summary.avg_at_k for summary in comparison.summaries)
    columns = [f"{s} greedy" for s in splits] + ([f"{s} avg@{options.eval_k}" for s in splits] if with_k else [])
    header = "| variant | " + " | ".join(columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    base = [f"{comparison.base[s]:.3f}" for s in splits]
    if with_k:
        base += [f"{comparison.base_avg_at_k[s]:.3f}" if s in comparison.base_avg_at_k else "-" for s in splits]
    rows = ["| base policy | " + " | ".join(base) + " |"]
    for summary in comparison.summaries:
        cells = [_fmt(summary.greedy.get(s)) for s in splits]
        if with_k:
            cells += [_fmt(summary.avg_at_k.get(s)) for s in splits]
        rows.append(f"| {summary.label} | " + " | ".join(cells) + " |")
    ranking = {
        s: sorted(
            (x for x in comparison.summaries if x.variant in MAIN_VARIANTS and s in x.greedy),
            key=lambda x: -x.greedy[s].mean,
        )
        for s in splits
    }
    seeds = ", ".join(str(s) for s in options.seeds)
    total_minutes = sum(r.wall_time_s for by_seed in comparison.runs.values() for r in by_seed.values()) / 60
    lines = [
        "# Prefix-RFT against SFT, RFT, SFT then RFT and LUFFY, at small scale",
        "",
        "Written by `prefix-rft compare`; do not edit by hand, re-run the command.",
        "",
        f"- Command: `{options.command}`",
        f"- Machine: {comparison.machine}",
        *([f"- Base policy: the built-in default, weights digest `{digest}` (`shared.modeling.weights_digest`)"]
          if (digest := _base_digest(comparison)) else []),
        f"- Wall time of the runs: {total_minutes:.1f} min in all "
        f"(this invocation: {comparison.wall_time_s / 60:.1f} min; runs it reused cost it nothing)",
        f"- Budget per run: {options.steps} optimizer steps, the same prompts per step and rollouts per prompt "
        f"for every RL variant; seeds {seeds}; evaluation on {options.eval_problems} problems per split "
        f"(greedy{f', and avg@{options.eval_k} at temperature 0.6' if options.eval_k else ''}).",
        f"- Demonstrations: {DEMO_STYLE_WORDS.get(style, style)}.",
        *([f"- Splits: {names}."] if (names := split_names(options)) else []),
        *([f"- Probes, taken before any run: {comparison.probes.sentence()}."] if comparison.probes else []),
        "",
        f"## Accuracy after training (mean ± sample std over {len(options.seeds)} seeds)",
        "",
        header,
        rule,
        *rows,
        "",
        f"![accuracy over steps and on-policy reward]({image.relative_to(path.parent)})",
        "",
        "## What the numbers say",
        "",
    ]
    for split in splits:
        order = " > ".join(f"{x.label} ({x.greedy[split].mean:.3f})" for x in ranking[split])
        lines += [f"### {split} split", "", f"Order of the main algorithms: {order}.", ""]
        lines += [*_verdicts(comparison, split), ""]
    if splits and (kept := demo_fraction_verdict(comparison, splits[0])):
        lines += ["### Fewer demonstrations", "", kept, ""]
    lines += [
        "## Against the paper",
        "",
        "The paper's order (Qwen2.5-Math-7B, 6 benchmarks): Prefix-RFT 51.8 > LUFFY 50.1 > SFT then RFT 48.2 > "
        "RFT 45.5 > SFT 44.1. Its ablations (7B) all fall below Prefix-RFT: prefix frozen 45.4, no entropy clip "
        "45.7. With 10% and 1% of the demonstrations (1.5B) Prefix-RFT keeps most of its gain: 41.1, 40.8, 37.6, "
        "against RFT 30.0 and SFT 31.9. Each pair of those orders that this comparison ran, on its first split:",
        "",
        *_paper_pairs(comparison, splits[0] if splits else ""),
        "",
        "Why the order differs where it does, and what it points to, is discussed in `docs/analysis.md` "
        "(written by the developers about this comparison).",
        "",
        "Per-run figures (reports, per-step metrics) are in "
        f"`{options.out}/comparison.json` and under `{options.out}/<variant>/seed-<n>/`.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def command_line() -> str:
    return "prefix-rft " + " ".join(shlex.quote(a) for a in sys.argv[1:])


__all__ = ["CompareOptions", "Comparison", "VARIANTS", "run_compare"]
