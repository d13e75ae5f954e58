"""The verifier functions on their own, in this process (no service, no deadline)."""

from __future__ import annotations

import pytest

from services.reward.verifiers import (
    VERIFIERS,
    BadReference,
    Verdict,
    gold_text,
    last_boxed,
    prediction_text,
    register,
    verify_format,
    verify_math,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\boxed{42}", "42"),
        (r"a \boxed{1} b \boxed{2} c", "2"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not close the group
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed {  7 }", "7"),
        (r"\boxed{\boxed{3}}", "3"),  # the one that opens last
        (r"\boxed{3} then \boxed{4", "3"),  # a truncated last box is skipped
        (r"}} stray \boxed{x} {{", "x"),
        (r"\boxed{a\\}", "a\\\\"),  # \\ is a line break, so its brace closes the group
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


def test_texts_given_to_math_verify():
    assert gold_text("(1, 2]") == r"\boxed{(1, 2]}"
    assert gold_text(r"so \boxed{2} and then \boxed{5}") == r"\boxed{5}"
    assert prediction_text(r"\boxed{2} no, \boxed{3}") == r"\boxed{3}"
    assert prediction_text("The final answer is 10") == "The final answer is 10"


@pytest.mark.parametrize(
    ("response", "reference", "correct", "extracted"),
    [
        (r"The answer is \boxed{0.5}", r"\frac{1}{2}", True, "0.5"),
        (r"The answer is \boxed{0.25}", r"\frac{1}{2}", False, "0.25"),
        (r"\boxed{\sqrt{8}}", r"2\sqrt{2}", True, r"\sqrt{8}"),
        (r"\boxed{[1, 2]}", "(1, 2]", False, "[1, 2]"),
        (r"First \boxed{2}, no wait: \boxed{3}", "3", True, "3"),
        ("The final answer is 10", "10", True, "10"),
        ("I do not know.", "2", False, None),
    ],
)
def test_verify_math(response, reference, correct, extracted):
    verdict = verify_math(response, reference)
    assert verdict == Verdict(correct=correct, reward=1.0 if correct else 0.0, extracted=extracted)


@pytest.mark.parametrize("reference", ["", "   ", r"\boxed{}"])
def test_verify_math_rejects_a_reference_without_answer(reference):
    with pytest.raises(BadReference):
        verify_math(r"\boxed{1}", reference)


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


def test_registry():
    assert VERIFIERS["math"] is verify_math
    assert VERIFIERS["format"] is verify_format
    with pytest.raises(ValueError, match="already registered"):
        register("math")(verify_format)
