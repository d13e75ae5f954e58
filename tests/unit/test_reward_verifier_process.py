"""The verifier process's scoring step in this process: its own deadline, refusals, and errors kept to one item."""

from __future__ import annotations

import signal
import time

import pytest

from services.reward.verifier_process import DeadlineExceeded, deadline, score, soft_budget
from services.reward.verifiers import VerifierOptions
from shared.api.reward import ScoreItem, ScoreStatus


def test_soft_budget_leaves_room_before_the_hard_deadline():
    assert soft_budget(5.0) == pytest.approx(4.75)
    assert soft_budget(0.5) == pytest.approx(0.45)


def test_runaway_item_is_refused_at_once():
    item = ScoreItem(id="x", response=r"\boxed{9^{9^{9^{9}}}}", reference="1")
    result = score(item, item_timeout_s=5.0)
    assert (result.status, result.reward, result.correct) == (ScoreStatus.refused, 0.0, False)
    assert result.detail.startswith("refused before verification, it could only end at the deadline: an exponent tower")


def test_slow_item_is_interrupted_at_the_soft_deadline():
    # Not a tower the cheap checks refuse, but a power sympy expands in Python for seconds.
    item = ScoreItem(id="x", response=r"\boxed{(x+y+z+1)^{60}}", reference=r"(x+y+z+1)^{59}")
    started = time.monotonic()
    result = score(item, item_timeout_s=0.5)
    elapsed = time.monotonic() - started
    assert result.status is ScoreStatus.timeout
    assert (result.reward, result.correct) == (0.0, False)
    assert soft_budget(0.5) - 0.05 < elapsed < 0.5


def test_score_ok_and_error():
    ok = score(ScoreItem(id="a", response=r"\boxed{\frac{1}{2}}", reference="0.5"), item_timeout_s=5.0)
    assert (ok.id, ok.status, ok.correct, ok.reward, ok.extracted) == ("a", ScoreStatus.ok, True, 1.0, r"\frac{1}{2}")
    assert ok.detail == "answer from boxed; math-verify"
    bad = score(ScoreItem(id="b", response=r"\boxed{1}", reference=""), item_timeout_s=5.0)
    assert (bad.status, bad.reward, bad.correct) == (ScoreStatus.error, 0.0, False)
    assert bad.detail.startswith("BadReference: reference has no parseable answer")


def test_strictness_reaches_the_verifier():
    item = ScoreItem(id="a", response=r"\boxed{x = 2}", reference="2")
    assert score(item, item_timeout_s=5.0).correct is True
    assert score(item, item_timeout_s=5.0, options=VerifierOptions(strictness="strict")).correct is False


def test_deadline_restores_an_outer_timer():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(DeadlineExceeded):
            with deadline(0.05):
                time.sleep(1)
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0.1 < remaining < 0.3
        time.sleep(0.4)
        assert fired == [True]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(
    "response",
    [
        "\\[" * 20_000,  # unclosed displays: one pass pairs the delimiters
        "\\(" * 20_000,
        "$" * 40_000,
        "$1$ and " * 8_000,  # at most 12 parts make one answer
        "\\boxed{1} and " * 4_000,
        "the answer is " * 4_000,
        "#### 1 " * 8_000,
    ],
    ids=["displays", "parens", "dollars", "and-chain", "box-chain", "phrases", "hashes"],
)
def test_hostile_text_is_answered_not_timed_out(response):
    result = score(ScoreItem(id="h", response=response, reference="1"), item_timeout_s=5.0)
    assert result.status is ScoreStatus.ok or result.detail.startswith("refused"), result
