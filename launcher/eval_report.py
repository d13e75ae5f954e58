"""What ``prefix-rft eval`` leaves: ``samples.jsonl`` (one :class:`EvalSample` a line), ``summary.json``,
``summary.md`` (the table it prints) and ``accuracy.png`` (a bar per benchmark and figure)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from launcher.evaluate import EvalResult, EvalSample


class EvalSummary(BaseModel):
    """``summary.json``: what was evaluated, how, and the figures per benchmark."""

    model: str
    benchmarks: list[EvalResult]


def columns(results: Sequence[EvalResult]) -> list[tuple[str, list[str]]]:
    """(header, one cell per result) for every figure some result has."""
    ks = sorted({j for r in results for j in r.pass_at})
    k = max((r.k for r in results), default=0)
    table = [
        ("benchmark", [r.split for r in results]),
        ("problems", [str(r.n_problems) for r in results]),
        ("greedy pass@1", [f"{r.greedy_accuracy:.3f}" for r in results]),
    ]
    if k:
        temperature = next((r.temperature for r in results if r.temperature is not None), None)
        at = f" (T={temperature:g})" if temperature is not None else ""
        table.append((f"avg@{k}{at}", [_cell(r.avg_at_k) for r in results]))
        table += [(f"pass@{j}", [_cell(r.pass_at.get(j)) for r in results]) for j in ks]
    table.append(("mean tokens", [f"{r.mean_response_tokens:.0f}" for r in results]))
    return table


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(results: Sequence[EvalResult]) -> str:
    cols = columns(results)
    lines = ["| " + " | ".join(h for h, _ in cols) + " |", "|" + " --- |" * len(cols)]
    for i in range(len(results)):
        lines.append("| " + " | ".join(cells[i] for _, cells in cols) + " |")
    return "\n".join(lines) + "\n"


def print_table(results: Sequence[EvalResult], console: Console, title: str) -> None:
    table = Table(title=title)
    cols = columns(results)
    for header, _ in cols:
        table.add_column(header, justify="left" if header == "benchmark" else "right")
    for i in range(len(results)):
        table.add_row(*(cells[i] for _, cells in cols))
    console.print(table)


def write_outputs(summary: EvalSummary, samples: Sequence[EvalSample], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "samples.jsonl", out / "summary.json", out / "summary.md", out / "accuracy.png"]
    with paths[0].open("w") as handle:
        for sample in samples:
            handle.write(sample.model_dump_json() + "\n")
    paths[1].write_text(summary.model_dump_json(indent=2))
    paths[2].write_text(f"Model: `{summary.model}`\n\n" + markdown(summary.benchmarks))
    plot(summary.benchmarks, paths[3])
    return paths


def plot(results: Sequence[EvalResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = [(h, cells) for h, cells in columns(results) if h.startswith(("greedy", "avg@", "pass@"))]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(results) * len(figures) / 2), 4))
    width = 0.8 / len(figures)
    for offset, (header, cells) in enumerate(figures):
        values = [float(c) if c != "-" else 0.0 for c in cells]
        positions = [i + offset * width for i in range(len(results))]
        bars = ax.bar(positions, values, width, label=header)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks([i + width * (len(figures) - 1) / 2 for i in range(len(results))], [r.split for r in results])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
