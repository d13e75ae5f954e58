"""The pipeline figures of a run report, from the learner's per-step metrics and the workers' busy time."""

import pytest

from launcher.pipeline import pipeline_stats
from shared.records import StepRecord
from tests.helpers.records import step_record


def steps(n: int, wall: float, train: float, wait: float) -> list[StepRecord]:
    return [
        step_record(i + 1, time=1000.0 + i * wall, train_s=train, publish_s=0.0, wait_s=wait, sft=False)
        for i in range(n)
    ]


def test_a_perfect_overlap_reaches_the_ideal_speedup():
    # Generation 2 s and training 3 s per step, overlapped: every step takes 3 s.
    stats = pipeline_stats(steps(11, wall=3.0, train=3.0, wait=0.0), busy_s=[22.0], max_staleness=1)
    assert stats.worker_busy_s == pytest.approx(2.0)
    assert stats.worker_idle_s == pytest.approx(1.0)
    assert stats.ideal_speedup == pytest.approx(5 / 3)
    assert stats.achieved_speedup == pytest.approx(5 / 3)
    assert stats.fraction_of_ideal == pytest.approx(1.0)


def test_a_synchronous_run_gets_no_speedup():
    stats = pipeline_stats(steps(11, wall=5.0, train=3.0, wait=2.0), busy_s=[22.0], max_staleness=0)
    assert stats.achieved_speedup == pytest.approx(1.0)
    assert stats.fraction_of_ideal == pytest.approx(0.6)
    assert stats.learner_wait_s == pytest.approx(2.0)


def test_busy_time_is_averaged_over_workers_that_share_a_batch():
    stats = pipeline_stats(
        steps(11, wall=3.0, train=3.0, wait=0.0), busy_s=[22.0, 11.0], max_staleness=1
    )
    assert stats.worker_busy_s == pytest.approx(1.5)


def test_sft_steps_and_runs_too_short_to_measure_give_none():
    assert pipeline_stats(steps(1, 3.0, 3.0, 0.0), [1.0], 1) is None
    sft = [m.model_copy(update={"sft": True}) for m in steps(5, 3.0, 3.0, 0.0)]
    assert pipeline_stats(sft, [1.0], 1) is None


def test_sft_steps_before_rl_do_not_dilute_the_per_step_figures():
    # SFT then RFT: five quick SFT steps generate nothing; the figures describe the RL steps alone.
    sft = [m.model_copy(update={"sft": True}) for m in steps(5, wall=1.0, train=1.0, wait=0.0)]
    rl = [m.model_copy(update={"time": m.time + 5.0}) for m in steps(11, wall=3.0, train=3.0, wait=0.0)]
    stats = pipeline_stats(sft + rl, busy_s=[22.0], max_staleness=1)
    assert stats.steps == 16
    assert stats.step_wall_s == pytest.approx(3.0)
    assert (stats.worker_busy_s, stats.worker_idle_s) == (pytest.approx(2.0), pytest.approx(1.0))
