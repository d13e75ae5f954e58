"""End to end: ``prefix-rft run`` with every process real (redis-server, reward, vLLM worker, DeepSpeed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from shared.records import FinalRecord, metrics_file
from tests.helpers.jobs import SMALL_JOB

pytestmark = pytest.mark.integration


def _prefix_rft(*args: str, cwd: Path) -> list[str]:
    return [sys.executable, "-m", "launcher.cli", *args]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose; check its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def small_config(tmp_path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL_JOB)
    return path


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, default_base_dir) -> tuple[Path, str]:
    """One short run shared by the tests below (a run costs minutes): three steps on two learner
    ranks, with evaluations, a --set override, and the user's terminal output."""
    tmp = tmp_path_factory.mktemp("short-run")
    config = tmp / "small.yaml"
    config.write_text(SMALL_JOB)
    out = tmp / "run"
    args = ["run", "--learner-ranks", "2", "--steps", "3", "--eval-problems", "8", "--eval-every", "2",
            "--config", str(config), "--out", str(out), "--set", "learner.lr=2e-4"]
    done = subprocess.run(_prefix_rft(*args, cwd=tmp), capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    return out, output


def test_a_short_run_writes_its_report_and_leaves_no_process(short_run):
    out, output = short_run
    # --set reaches the job's file, and the learner trains with it.
    job = yaml.safe_load((out / "job.yaml").read_text())
    assert job["learner"]["optimizer"]["lr"] == 2e-4 and job["learner"]["micro_batch"] == 16
    assert job["redis"]["url"] != "redis://127.0.0.1:6379/0"  # the private redis-server the run started
    steps = [json.loads(line) for line in (out / "learner" / "metrics.jsonl").read_text().splitlines()]
    assert steps and all(step["lr"] == pytest.approx(2e-4) for step in steps)

    report = json.loads((out / "report.json").read_text())
    assert report["algorithm"] == "prefix-rft" and report["steps"] == 3
    for key in ("accuracy_before", "accuracy_after"):
        assert set(report[key]) == {"id", "ood"}
        assert all(0.0 <= v <= 1.0 for v in report[key].values())
    assert report["wall_time_s"] > 0 and report["tokens_per_s"] > 0
    assert report["dropped_stale_groups"] >= 0 and report["trained_groups"] >= 3 * 4
    assert (out / "curves.png").stat().st_size > 10_000
    pipeline = report["pipeline"]  # the worker's busy time, read from its /metrics, and the learner's timings
    assert pipeline["worker_busy_s"] > 0 and pipeline["learner_train_s"] > 0
    assert 1.0 <= pipeline["ideal_speedup"] <= 2.0
    assert "greedy before" in output  # the closing table

    processes = json.loads((out / "processes.json").read_text())
    assert {p["name"] for p in processes} >= {"redis-server", "reward", "rollout-0", "learner"}
    assert [p["name"] for p in processes if _alive(p["pid"])] == []
    for p in processes:
        assert Path(p["log"]).is_file()


def test_a_run_with_two_learner_ranks_ends_with_the_same_weights_on_both(short_run, default_base_dir):
    out, output = short_run
    assert yaml.safe_load((out / "job.yaml").read_text())["placement"]["learner_ranks"] == 2
    steps = metrics_file(out / "learner").read()
    assert [s.step for s in steps] == [1, 2, 3] and steps[-1].trained_groups_total == 3 * 4
    # Each rank's checksum of its weights: gathered into the final record, and in its own log line.
    final = FinalRecord.read(out / "learner")
    assert final.step == 3 and len(final.rank_digests) == 2
    assert final.rank_digests[0] == final.rank_digests[1], final.rank_digests
    log = (out / "logs" / "learner.log").read_text()
    for rank in (0, 1):
        assert f"rank {rank} ends with weights digest {final.rank_digests[0]}" in log, log[-3000:]
    assert "weight checksums" in output and "(equal)" in output  # what the user sees at the end
    # The checksum is of trained weights: the published ones differ from the base policy's.
    published = load_file(out / "learner" / "weights" / f"v{final.version}" / "model.safetensors")
    initial = load_file(default_base_dir / "model.safetensors")
    assert any(not torch.equal(published[name], initial[name]) for name in initial)


def _start_training(tmp_path: Path, config: Path) -> tuple[subprocess.Popen, Path]:
    """A long run started in the background, returned once its learner has logged a step."""
    out = tmp_path / "run"
    args = ["run", "--steps", "50", "--eval-problems", "4", "--eval-every", "0", "--config", str(config),
            "--out", str(out)]
    run = subprocess.Popen(
        _prefix_rft(*args, cwd=tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 600
    metrics = metrics_file(out / "learner")
    while metrics.last() is None:
        if run.poll() is not None or time.monotonic() > deadline:
            run.kill()
            pytest.fail(f"training never started: {run.stdout.read()[-3000:]}")
        time.sleep(1)
    return run, out


def test_a_run_whose_reward_service_dies_fails_naming_it(tmp_path, small_config, default_base_dir):
    run, out = _start_training(tmp_path, small_config)
    try:
        processes = {p["name"]: p["pid"] for p in json.loads((out / "processes.json").read_text())}
        os.kill(processes["reward"], signal.SIGKILL)
        output, _ = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode != 0
    assert "reward" in output and "died" in output, output[-3000:]
    still_alive = [name for name, pid in processes.items() if _alive(pid)]
    assert still_alive == []


def test_a_terminated_run_stops_every_process_it_started(tmp_path, small_config, default_base_dir):
    run, out = _start_training(tmp_path, small_config)
    try:
        processes = {p["name"]: p["pid"] for p in json.loads((out / "processes.json").read_text())}
        run.send_signal(signal.SIGTERM)
        output, _ = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode != 0
    assert "interrupted" in output, output[-3000:]
    still_alive = [name for name, pid in processes.items() if _alive(pid)]
    assert still_alive == []
