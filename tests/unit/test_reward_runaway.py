"""The cheap checks that refuse inputs sympy could only finish at the deadline."""

from __future__ import annotations

import pytest

from services.reward.answers.runaway import Runaway, check


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (r"9^{9^{9^{9}}}", "an exponent tower"),
        (r"9^{9^{9}}", "an exponent tower"),
        (r"x^{9^{9^9}}", "an exponent tower"),
        (r"10^{10^{10}} + 1", "an exponent tower"),
        ("9**9**9**9", "an exponent tower"),
        (r"2^{1000000}", "the power 2^1000000"),
        (r"(10^{6})!", "the factorial of 1000000"),
        ("30000!", "the factorial of 30000"),
        ("((5!)!)!", "the factorial of a number of 15 or more digits"),
        ("{" * 61 + "1" + "}" * 61, "brackets nested 61 deep"),
    ],
)
def test_refused(text, reason):
    with pytest.raises(Runaway, match=reason.replace("(", r"\(").replace("^", r"\^").replace("*", r"\*")):
        check(text)


@pytest.mark.parametrize(
    "text",
    [
        r"2^{2^{2}}",
        r"10^{100}",
        r"2^{100000}",  # 30,103 digits: sympy computes it in milliseconds
        r"1^{10^{100}}",
        "100!",
        r"\frac{1}{2}",
        r"x^{y^{z}}",  # symbolic: cheap
        r"(x+1)^{2} - 3!",
        "{" * 60 + "1" + "}" * 60,
        r"\binom{10}{3} \cdot 2^{10}",
    ],
)
def test_allowed(text):
    check(text)


def test_long_inputs():
    check("2^{3} + " * 5000)
    with pytest.raises(Runaway, match="an exponent tower"):
        check("1 + " * 5000 + r"9^{9^{9}}")
    with pytest.raises(Runaway, match="brackets nested 50000 deep"):
        check("{" * 50_000)
