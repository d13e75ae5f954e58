"""End to end: ``prefix-rft compare`` runs real jobs, writes the results document, reports to a tracker,
and reuses finished runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import trackers as read
from tests.helpers.jobs import SMALL_JOB

pytestmark = pytest.mark.integration


def test_compare_writes_results_and_reuses_runs(tmp_path, default_base_dir):
    config = tmp_path / "small.yaml"
    config.write_text(SMALL_JOB)
    out, results = tmp_path / "compare", tmp_path / "docs" / "results.md"
    args = [
        sys.executable,
        "-m",
        "launcher.cli",
        "compare",
        "--variants",
        "rft,prefix-rft",
        "--seeds",
        "0",
        "--steps",
        "2",
        "--eval-problems",
        "4",
        "--eval-every",
        "0",
        "--eval-k",
        "0",
        "--probe-problems",
        "4",
        "--config",
        str(config),
        "--out",
        str(out),
        "--results",
        str(results),
        "--report-to",
        "tensorboard",
    ]
    first = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    text = results.read_text()
    assert "| RFT |" in text and "| Prefix-RFT |" in text and "| base policy |" in text
    assert "--variants rft,prefix-rft" in text  # the exact command is recorded
    assert "Prefix-RFT vs RFT:" in text
    # The style's probes, taken on the base policy before the runs, are in the results and cached.
    probe = json.loads((out / "probes-column.json").read_text())
    assert probe["settings"]["problems"] == 4 and probe["mean_logprob"] < 0
    assert f"from a prefix ratio of 0.5: {probe['hybrid_reward']:.3f}" in text
    assert (results.parent / "results" / f"{results.stem}.png").stat().st_size > 10_000
    assert f"](results/{results.stem}.png)" in text
    comparison = json.loads((out / "comparison.json").read_text())
    assert set(comparison["runs"]) == {"rft", "prefix-rft"}
    assert comparison["runs"]["rft"]["0"]["algorithm"] == "rft"
    assert set(comparison["base"]) == {"id", "ood"}

    # The trackers get every run, each under a name of its own, and the comparison's figures.
    for variant in ("rft", "prefix-rft"):
        tracking = out / variant / "seed-0" / "tracking"
        logged = read.tensorboard_run(tracking / "tensorboard" / f"compare-{variant}-seed-0")
        assert sorted(read.tensorboard_scalars(logged, "train/loss")) == [1, 2]
    logged = read.tensorboard_run(out / "tracking" / "tensorboard" / "compare-compare")
    for summary in comparison["summaries"]:
        greedy = read.tensorboard_scalars(logged, f"compare/{summary['variant']}/id/greedy")
        assert greedy == pytest.approx({2: summary["greedy"]["id"]["mean"]})

    # A second invocation trains nothing: every run's report is reused, and the document is rewritten.
    results.unlink()
    again = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("reusing") == 3  # the two runs and the probes
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert [line for line in results.read_text().splitlines() if line.startswith("| ")] == table
