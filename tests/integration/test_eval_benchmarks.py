"""`prefix-rft eval` over local benchmark files in the MATH-500 (JSONL) and GSM8K (Parquet) layouts,
against a real rollout server (vLLM, the built-in base policy) and a real reward service: the
per-sample JSONL, the summary table (printed and written) and the plot; and the README's example."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from launcher.config import JobConfig
from launcher.deployment import LocalDeployment
from launcher.eval_report import EvalSummary
from launcher.evaluate import EvalSample
from shared.datasets.arithmetic import ArithmeticDataset

REPO = Path(__file__).resolve().parents[2]
PROBLEMS = 6


@pytest.fixture(scope="module")
def services(tmp_path_factory, default_base_dir):
    """A reward service and an HTTP-only rollout worker serving the base policy, shared by the tests."""
    run_dir = tmp_path_factory.mktemp("eval-services")
    deployment = LocalDeployment(run_dir=run_dir, config_path=JobConfig.load().dump(run_dir / "job.yaml"))
    try:
        reward_url = deployment.start_reward(1, wait=False)
        rollout_url = deployment.start_rollout_worker(default_base_dir, 0, consume_tasks=False, wait=False)
        deployment.wait_ready()
        yield rollout_url, reward_url
    finally:
        deployment.stop()


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory) -> list[Path]:
    """The built-in task's test problems in two public layouts, so the base policy solves some."""
    folder = tmp_path_factory.mktemp("benchmarks")
    problems = ArithmeticDataset(seed=0).problems("test")[:PROBLEMS]
    math500 = folder / "math500.jsonl"
    math500.write_text("".join(
        json.dumps({"problem": p.prompt, "solution": p.demonstrations[0], "answer": p.answer, "unique_id": p.id}) + "\n"
        for p in problems
    ))
    gsm8k = folder / "gsm8k.parquet"
    rows = [{"question": p.prompt, "answer": f"Work it out.\n#### {p.answer}"} for p in problems]
    pq.write_table(pa.Table.from_pylist(rows), gsm8k)
    return [math500, gsm8k]


def prefix_rft(*args: str, cwd: Path = REPO, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "launcher.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_eval_over_two_benchmark_files_writes_samples_and_the_table(services, benchmarks, tmp_path):
    rollout_url, reward_url = services
    out = tmp_path / "eval"
    done = prefix_rft(
        "eval", *map(str, benchmarks), "--k", "2", "--pass-at", "1,2", "--out", str(out),
        "--rollout-url", rollout_url, "--reward-url", reward_url,
        # The built-in problems carry the instruction the base policy was warmed up on.
        "--set", "learner.prompt.instruction=none",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    samples = [EvalSample.model_validate_json(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * PROBLEMS * 3  # two benchmarks, greedy + 2 samples per problem
    assert {s.benchmark for s in samples} == {"math500", "gsm8k"}
    assert {(s.sample, s.temperature) for s in samples} == {(0, 0.0), (1, 0.6), (2, 0.6)}
    assert all("Put the final answer in \\boxed{}." in s.prompt and s.response for s in samples)
    correct = [s for s in samples if s.correct]
    assert correct, "the base policy solves some of its own test problems"
    # The same number, not the same string: a policy may write 00 for 0, which math-verify rightly accepts.
    assert all(float(s.extracted) == float(s.reference) and s.reward == 1.0 for s in correct)
    # The GSM8K "#### N" tail was read as the reference: the same answers as MATH-500's column.
    references = {b: [s.reference for s in samples if s.benchmark == b and s.sample == 0] for b in ("math500", "gsm8k")}
    assert references["gsm8k"] == references["math500"]

    summary = EvalSummary.model_validate_json((out / "summary.json").read_text())
    assert [r.split for r in summary.benchmarks] == ["math500", "gsm8k"]
    for result in summary.benchmarks:
        mine = [s for s in samples if s.benchmark == result.split]
        assert result.greedy_accuracy == sum(s.correct for s in mine if s.sample == 0) / PROBLEMS
        assert result.avg_at_k == pytest.approx(sum(s.correct for s in mine if s.sample > 0) / (2 * PROBLEMS))
        assert set(result.pass_at) == {1, 2}
    table = (out / "summary.md").read_text()
    assert "| benchmark | problems | greedy pass@1 | avg@2 (T=0.6) | pass@1 | pass@2 |" in table
    printed = " ".join(done.stderr.split())
    math_row = summary.benchmarks[0]
    assert re.search(rf"math500 │ +{PROBLEMS} │ +{math_row.greedy_accuracy:.3f}", printed), printed[-2000:]
    assert (out / "accuracy.png").stat().st_size > 0


def test_mapped_columns_system_prompt_and_instruction_reach_the_worker(services, tmp_path):
    rollout_url, reward_url = services
    data = tmp_path / "task.jsonl"
    rows = [{"q": p.prompt, "gold": p.answer, "check": "math"} for p in ArithmeticDataset(seed=0).problems("test")[:2]]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "eval"
    done = prefix_rft(
        "eval", str(data), "--k", "0", "--out", str(out), "--rollout-url", rollout_url, "--reward-url", reward_url,
        "--set", "eval.columns={problem: q, answer: gold, verifier: check}",
        "--set", "learner.prompt.system_prompt=You are a careful counter.",
        "--set", 'learner.prompt.instruction="{problem}\\nCount twice."',  # YAML: quoted, \n a new line
    )
    assert done.returncode == 0, done.stderr[-3000:]
    samples = [EvalSample.model_validate_json(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s.reference for s in samples] == [row["gold"] for row in rows]
    for sample, row in zip(samples, rows):
        # The prompt is decoded from the token ids the worker was sent.
        assert sample.prompt.index("You are a careful counter.") < sample.prompt.index(row["q"])
        assert row["q"] + "\nCount twice." in sample.prompt


def readme_eval_examples() -> list[str]:
    """The README's `eval` command lines that need nothing of the reader's own (no <run>, no /models)."""
    lines = [line.split("#")[0].strip() for line in (REPO / "README.md").read_text().splitlines()]
    return [line for line in lines if line.startswith(".venv/bin/prefix-rft eval") and "<" not in line
            and "/models" not in line and "/data" not in line]


def test_the_readmes_eval_example_runs_as_written(tmp_path):
    examples = readme_eval_examples()
    assert examples, "the README shows how to evaluate the base policy"
    argv = shlex.split(examples[0])[1:]  # the README runs .venv/bin/prefix-rft; this checkout's code runs here
    done = prefix_rft(*argv, "--out", str(tmp_path / "eval"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "eval" / "samples.jsonl").read_text().count("\n") > 0
    assert "greedy pass@1" in done.stderr
