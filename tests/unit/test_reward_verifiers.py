"""The verifier functions on their own, in this process (no service, no deadline)."""

from __future__ import annotations

import pytest

from services.reward.answers.runaway import Runaway
from services.reward.verifiers import (
    BadReference,
    Verdict,
    VerifierOptions,
    last_boxed,
    verify_format,
    verify_gsm8k,
    verify_math,
)

STRICT = VerifierOptions(strictness="strict")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\boxed{42}", "42"),
        (r"a \boxed{1} b \boxed{2} c", "2"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not close the group
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed {  7 }", "7"),
        (r"\boxed{\boxed{3}}", "3"),  # the innermost of nested boxes
        (r"\boxed{3} then \boxed{4", "3"),  # a truncated last box is skipped
        (r"}} stray \boxed{x} {{", "x"),
        (r"\boxed{a\\}", "a\\\\"),  # \\ is a line break, so its brace closes the group
        (r"\fbox{5}", "5"),
        (r"\boxed{}", None),
        (r"\boxed{   }", None),
        (r"\boxed{4", None),
        ("no box here", None),
        ("", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_last_boxed_is_linear_on_adversarial_input():
    # 20,000 unclosed boxes: a rescan from each opening would take minutes.
    assert last_boxed(r"\boxed{" * 20_000) is None
    assert last_boxed(r"\boxed{" * 20_000 + "1" + "}" * 20_000) == "1"


@pytest.mark.parametrize(
    ("response", "reference", "correct", "extracted", "detail"),
    [
        (r"The answer is \boxed{0.5}", r"\frac{1}{2}", True, "0.5", "answer from boxed; math-verify"),
        (
            r"The answer is \boxed{0.25}",
            r"\frac{1}{2}",
            False,
            "0.25",
            "answer from boxed; math-verify: not equivalent",
        ),
        (r"First \boxed{2}, no wait: \boxed{3}", "3", True, "3", "answer from boxed; math-verify"),
        (r"Roots: \boxed{1} and \boxed{-2}", "1, -2", True, "1, -2", "answer from 2 boxes; math-verify"),
        ("The final answer is 10", "10", True, "10", "answer from answer phrase; math-verify"),
        (r"The answer is 10\sqrt3 + \sqrt{4}", "10", False, r"10\sqrt3 + \sqrt{4}", None),
        (r"Thus \[x = \frac{1}{2}.\]", "0.5", True, r"x = \frac{1}{2}", "answer from final display; math-verify"),
        (
            "The answer is 3128 1/2.",
            "3128.5",
            True,
            "3128 1/2",
            "answer from answer phrase; math-verify after mixed numbers",
        ),
        (r"\boxed{C. x = 42}", "C", True, "C. x = 42", "answer from boxed; rule choice letter"),
        (r"\boxed{4x - 2y + 6z = 10}", "2x - y + 3z - 5 = 0", True, "4x - 2y + 6z = 10", None),
        ("#### 72", "Natalia sold 72 clips.\n#### 72", True, "72", "answer from ####; math-verify"),
        ("I do not know.", "2", False, None, "answer from math-verify; math-verify: not equivalent"),
        (r"so the answer is \boxed{4", "4", False, None, "no answer found in the response"),
    ],
)
def test_verify_math(response, reference, correct, extracted, detail):
    verdict = verify_math(response, reference)
    assert (verdict.correct, verdict.reward) == (correct, 1.0 if correct else 0.0), verdict
    assert verdict.extracted == extracted
    if detail is not None:
        assert verdict.detail == detail


@pytest.mark.parametrize("reference", ["", "   ", r"\boxed{}"])
def test_verify_math_rejects_a_reference_without_answer(reference):
    with pytest.raises(BadReference):
        verify_math(r"\boxed{1}", reference)


@pytest.mark.parametrize(
    ("response", "reference", "standard", "strict"),
    [
        (r"\boxed{x = 2}", "2", True, False),  # a label the reference does not have
        (r"\boxed{x = 2}", "x = 2", True, True),
        (r"\boxed{5\text{ cm}}", "5", True, False),  # a unit
        (r"\boxed{\frac{\sqrt3}{3} \approx 0.577}", r"\frac{\sqrt3}{3}", True, True),  # math-verify reads it so
        (r"\boxed{\dfrac{3}{4}}", "0.75", True, True),  # notation, not leniency
    ],
)
def test_strictness(response, reference, standard, strict):
    assert verify_math(response, reference).correct is standard
    assert verify_math(response, reference, STRICT).correct is strict


@pytest.mark.parametrize("response", [r"\boxed{9^{9^{9^{9}}}}", r"The answer is $(10^{6})!$", "{" * 80 + "}" * 80])
def test_runaway_inputs_are_refused_before_sympy(response):
    with pytest.raises(Runaway):
        verify_math(response, "1")


@pytest.mark.parametrize(
    ("response", "reference", "correct", "detail"),
    [
        ("48 + 24 = 72\n#### 72", "Natalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72", True, "answer from ####"),
        ("She earned $1,200 in total.\n#### $1,200", "#### 1200", True, "answer from ####"),
        (r"He needs \boxed{15} more stamps.", "#### 15", True, "answer from boxed"),
        ("The answer is 3.50 dollars.", "#### 3.5", True, "answer from answer phrase"),
        ("120 - 45 = 75 books remain.", "#### 75", True, "answer from last number"),
        ("120 - 45 = 75 books remain, on 3 shelves.", "#### 75", False, "answer from last number"),
        ("#### 71", "#### 72", False, "answer from ####"),
        ("#### Step 1: add\n48 + 24 = 72\n#### Step 2: done", "#### 72", True, "answer from last number"),
        ("This answer is easy: 48 + 24 = 72", "#### 72", True, "answer from last number"),
    ],
)
def test_verify_gsm8k(response, reference, correct, detail):
    verdict = verify_gsm8k(response, reference)
    assert verdict.correct is correct
    assert verdict.detail.startswith(detail)


def test_verify_gsm8k_rejects_a_reference_without_number():
    with pytest.raises(BadReference):
        verify_gsm8k("#### 3", "no number here")


@pytest.mark.parametrize(
    ("response", "ok", "extracted"),
    [
        (r"so \boxed{42}", True, "42"),
        (r"\boxed{\text{anything}}", True, r"\text{anything}"),
        ("42", False, None),
        (r"\boxed{}", False, None),
        (r"\boxed{42", False, None),
    ],
)
def test_verify_format(response, ok, extracted):
    assert verify_format(response, "ignored") == Verdict(correct=ok, reward=float(ok), extracted=extracted)
