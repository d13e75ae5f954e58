"""Learner records made by hand, for tests of what reads them."""

from __future__ import annotations

from shared.records import StepRecord


def step_record(step: int, **fields) -> StepRecord:
    """A step record with neutral values; ``fields`` set the ones a test is about."""
    values = dict(
        step=step, version=step, sft=False, prefix_ratio_low=0.0, prefix_ratio_high=0.0, tokens=0,
        tokens_per_s=0.0, step_time_s=0.0, train_s=0.0, wait_s=0.0, dropped_stale=0, publish_s=None,
        weight_push_s=None, dropped_stale_total=0, dropped_duplicate_total=0, dropped_foreign_total=0,
        trained_groups_total=0, issued_total=0, outstanding=0, time=1000.0 + step,
    )
    return StepRecord(**{**values, **fields})
