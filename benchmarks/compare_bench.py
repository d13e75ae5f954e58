"""The paper's comparison at small scale, in both demonstration styles, side by side.

Runs (or reuses, when their reports exist) exactly the comparisons that ``docs/results.md`` and
``docs/results-teacher.md`` record, rewrites both reports, and prints ID and OOD greedy accuracy per
variant for the two styles. The reports carry the equivalent ``prefix-rft compare`` command, so either
can be re-run on its own.

- column: the built-in demonstrations, in the base policy's own style. All 10 variants run: about
  105 min on 2 cores.
- teacher: off-policy traces. The five algorithms run: about 52 min.

    .venv/bin/python benchmarks/compare_bench.py [--seeds 0,1,2] [--steps 40] [--eval-problems 200]
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from rich.console import Console
from rich.table import Table

from launcher.compare import MAIN_VARIANTS, VARIANTS, CompareOptions, Comparison, run_compare

STYLES = {
    # style: (variants, runs folder, report)
    "column": (list(VARIANTS), Path("runs/compare"), Path("docs/results.md")),
    "teacher": (list(MAIN_VARIANTS), Path("runs/compare-teacher"), Path("docs/results-teacher.md")),
}


def equivalent_command(options: CompareOptions, everything: bool) -> str:
    variants = "all" if everything else ",".join(options.variants)
    if options.variants == list(MAIN_VARIANTS):
        variants = "main"
    parts = ["prefix-rft", "compare", "--variants", variants]
    if options.demonstrations is not None:
        parts += ["--demonstrations", options.demonstrations]
    parts += [
        "--seeds", ",".join(str(s) for s in options.seeds),
        "--steps", str(options.steps),
        "--eval-problems", str(options.eval_problems),
        "--eval-k", str(options.eval_k),
        "--eval-every", str(options.eval_every),
        "--out", str(options.out),
        "--results", str(options.results),
    ]  # fmt: skip
    return shlex.join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eval-problems", type=int, default=200)
    parser.add_argument("--styles", default="column,teacher", help="comma-separated: column, teacher")
    args = parser.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: expected comma-separated integers")
    styles = args.styles.split(",")
    unknown = [s for s in styles if s not in STYLES]
    if unknown:
        parser.error(f"--styles: unknown {', '.join(unknown)}; known: {', '.join(STYLES)}")
    console = Console()
    results: dict[str, Comparison] = {}
    for style in styles:
        variants, out, report = STYLES[style]
        options = CompareOptions(
            variants=variants, seeds=seeds, steps=args.steps, eval_problems=args.eval_problems, eval_every=10,
            eval_k=0, demonstrations=None if style == "column" else style, out=out, results=report,
        )
        options.command = equivalent_command(options, everything=variants == list(VARIANTS))
        results[style] = run_compare(options, console)
    print_side_by_side(results, console)


def print_side_by_side(results: dict[str, Comparison], console: Console) -> None:
    table = Table(title="greedy accuracy after training, mean ± std over seeds, per demonstration style")
    table.add_column("variant")
    for style in results:
        table.add_column(f"{style}: id", justify="right")
        table.add_column(f"{style}: ood", justify="right")
    by_style = {style: {s.variant: s for s in c.summaries} for style, c in results.items()}
    base_row = ["base policy"]
    for comparison in results.values():
        base_row += [f"{comparison.base.get(split, float('nan')):.3f}" for split in ("id", "ood")]
    table.add_row(*base_row)
    for name, variant in VARIANTS.items():
        if not any(name in summaries for summaries in by_style.values()):
            continue
        row = [variant.label]
        for summaries in by_style.values():
            summary = summaries.get(name)
            for split in ("id", "ood"):
                value = summary.greedy.get(split) if summary else None
                row.append(f"{value.mean:.3f} ± {value.std:.3f}" if value else "-")
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
