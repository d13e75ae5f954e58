import math
import random

import pytest
from pydantic import ValidationError

from shared.prefix import PrefixSchedule


@pytest.mark.parametrize(
    ("step", "expected_low"),
    [
        (0, 0.95),  # 0.05 + 0.5 * (1 + cos 0) * 0.9
        (250, 0.50),  # 0.05 + 0.5 * (1 + cos pi/2) * 0.9
        (500, 0.05),  # 0.05 + 0.5 * (1 + cos pi) * 0.9
        (1000, 0.05),  # past T_decay the schedule stays at its end
    ],
)
def test_cosine_schedule_matches_hand_computed_values(step, expected_low):
    low, high = PrefixSchedule().bounds(step)
    assert low == pytest.approx(expected_low, abs=1e-12)
    assert high == 0.95


def test_schedule_at_quarter_decay():
    low, _ = PrefixSchedule().bounds(125)
    assert low == pytest.approx(0.05 + 0.5 * (1 + math.cos(math.pi / 4)) * 0.9)


def test_uniform_ablation_ignores_the_step():
    schedule = PrefixSchedule(kind="uniform")
    assert schedule.bounds(0) == schedule.bounds(400) == (0.05, 0.95)


def test_sampled_ratios_stay_in_bounds():
    schedule = PrefixSchedule()
    rng = random.Random(0)
    for step in (0, 100, 250, 499, 800):
        low, high = schedule.bounds(step)
        ratios = [schedule.sample_ratio(step, rng) for _ in range(200)]
        assert all(low <= r <= high for r in ratios)


@pytest.mark.parametrize("demo_len", [2, 3, 7, 100, 8192])
@pytest.mark.parametrize("ratio", [0.0, 0.05, 0.5, 0.95, 0.999, 1.0])
def test_cut_never_leaves_an_empty_continuation(demo_len, ratio):
    cut = PrefixSchedule().cut(ratio, demo_len)
    assert 1 <= cut <= demo_len - 1
    assert demo_len - cut >= 1


def test_cut_is_floor_of_ratio_times_length():
    schedule = PrefixSchedule(min_prefix_len=1)
    assert schedule.cut(0.5, 10) == 5
    assert schedule.cut(0.59, 10) == 5
    assert schedule.cut(0.95, 100) == 95
    assert schedule.cut(0.01, 100) == 1  # clamped up to min_prefix_len
    assert schedule.cut(0.99, 10) == 9  # floor(9.9) = 9 = |y*| - 1


def test_min_prefix_len_is_respected():
    schedule = PrefixSchedule(min_prefix_len=8)
    assert schedule.cut(0.05, 100) == 8
    assert schedule.cut(0.05, 5) == 4  # a short demonstration still keeps one token to generate


def test_too_short_demonstration_is_an_error():
    with pytest.raises(ValueError, match="at least 2 tokens"):
        PrefixSchedule().cut(0.5, 1)


def test_bad_schedule_settings_are_refused():
    with pytest.raises(ValidationError, match="low_end"):
        PrefixSchedule(low_end=0.9, high=0.5)
    with pytest.raises(ValidationError):
        PrefixSchedule(kind="linear")
