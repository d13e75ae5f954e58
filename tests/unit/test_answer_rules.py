"""Each named rule of the math verifier on its own cases, and the answer extraction."""

from __future__ import annotations

import pytest

from services.reward.answers import rules
from services.reward.answers.decide import parse_answer
from services.reward.answers.extract import Candidate, reference_answer, response_candidates

NORMALISATION_CASES = {
    "trig_degrees": [(r"\sin 60^\circ", r"\sin(\frac{60\pi}{180})"), (r"\cos(45^{\circ})", r"\cos(\frac{45\pi}{180})")],
    "repeating_decimals": [(r"0.\overline{3}", r"\frac{3}{9}"), (r"1.2\overline{45}", r"\frac{1233}{990}")],
    "function_label": [(r"f^{-1}(x) = \frac{x-3}{2}", r"\frac{x-3}{2}"), (r"g(t)=t^2", "t^2"), ("x = 2", "x = 2")],
    "frac_variants": [(r"\dfrac{3}{4} + \tfrac12 - \cfrac{1}{x}", r"\frac{3}{4} + \frac12 - \frac{1}{x}")],
    "matrix_environments": [
        (r"\begin{bmatrix}1&2\end{bmatrix}", r"\begin{pmatrix}1&2\end{pmatrix}"),
        (r"\left(\begin{array}{cc}1&2\end{array}\right)", r"\begin{pmatrix}1&2\end{pmatrix}"),
        (r"\begin{vmatrix}1&2\\3&4\end{vmatrix}", r"\begin{vmatrix}1&2\\3&4\end{vmatrix}"),  # a determinant stays
    ],
    "latex_spacing": [(r"\left( 1, 2 \right]", "( 1, 2 ]"), (r"10\,080", "10 080"), (r"\displaystyle 3~m", "3 m")],
    "currency": [(r"\$10", "10"), ("$1,200", "1,200"), ("18 dollars", "18"), ("€5", "5")],
    "units": [
        (r"5\text{ cm}", "5"),
        (r"12 \mathrm{~m}^2", "12"),
        (r"30^\circ", "30"),
        ("7 apples", "7"),
        (r"\frac{5}{2}\text{ km}", r"\frac{5}{2}"),
        (r"4\sqrt{2}\text{ inches}", r"4\sqrt{2}"),
        (r"x + 2", r"x + 2"),
        ("5x", "5x"),  # a variable, not a unit
        ("3 n", "3 n"),
        ("2 pi", "2 pi"),
    ],
    "approximation": [
        (r"\frac{\sqrt3}{3} \approx 0.577", r"\frac{\sqrt3}{3}"),
        (r"25\pi ≈ 78.54", r"25\pi"),
        (r"\approx 0.577", r"\approx 0.577"),  # nothing exact before it
    ],
    "text_wrappers": [(r"\text{(C)}", "(C)"), (r"\textbf{odd}", "odd"), (r"\mathrm{A}", "A")],
    "thousands_separators": [("1,234,567", "1234567"), ("10{,}080", "10080"), ("12 500", "12500"), ("1, 2", "1, 2")],
    "mixed_numbers": [
        (r"918\frac{1}{2}", r"(918+\frac{1}{2})"),
        ("3128 1/2", r"(3128+\frac{1}{2})"),
        (r"-2\tfrac13", r"-(2+\frac{1}{3})"),
        (r"2\frac{5}{3}", r"2\frac{5}{3}"),  # improper: a product, not a mixed number
    ],
    "connectives": [(r"1 \text{ and } 2", "1, 2"), ("x = 1 or x = 2", "x = 1, x = 2"), (r"3 \quad 4", "3, 4")],
    "plus_minus": [
        (r"1 \pm \sqrt{2}", r"1 +\sqrt{2}, 1 -\sqrt{2}"),
        (r"\pm 3", "3, -3"),
        (r"x = \pm 3", "x = 3, x = -3"),
        (r"x = \frac{-1 \pm \sqrt{5}}{2}", r"x = \frac{-1 +\sqrt{5}}{2}, x = \frac{-1 -\sqrt{5}}{2}"),
        (r"1 \pm 2 \pm 3", r"1 \pm 2 \pm 3"),  # two of them: four values, left alone
    ],
}


@pytest.mark.parametrize(
    ("rule", "text", "expected"),
    [(rule, text, expected) for rule, cases in NORMALISATION_CASES.items() for text, expected in cases],
)
def test_normalisation(rule, text, expected):
    assert getattr(rules, rule)(text) == expected


def test_every_normalisation_has_cases():
    assert {r.apply.__name__ for r in rules.NORMALISATIONS} == set(NORMALISATION_CASES)


def test_strict_skips_the_lenient_normalisations():
    assert rules.normalise(r"5\text{ cm}", "standard") == ("5", ["units"])
    assert rules.normalise(r"5\text{ cm}", "strict") == (r"5 cm", ["text wrappers"])


@pytest.mark.parametrize(
    ("gold", "pred", "expected"),
    [
        ("C", "C. x = 42", True),
        ("(C)", r"\textbf{(C)} 17", True),
        ("C", "(D) 17", False),
        ("C", "17", None),  # no option letter in the answer
        ("42", "C", None),  # the reference is no option letter
    ],
)
def test_choice_letter(gold, pred, expected):
    assert rules.choice_letter(gold, pred) is expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("3,5", "3.5", True),
        ("0,75", r"\frac34", True),
        ("3,25", "3.5", False),
        ("3,5", "35", None),
        ("1,000", "0.5", None),
    ],
)
def test_decimal_comma(pred, gold, expected):
    assert rules.decimal_comma(pred, parse_answer(gold)) is expected


@pytest.mark.parametrize(
    ("gold", "pred", "expected"),
    [
        ("2x - y + 3z = 5", "-4x + 2y - 6z + 10 = 0", True),
        ("x + 2y - 8 = 0", r"y = -\frac{1}{2}x + 4", True),
        ("2x - y + 3z = 5", "2x - y + 3z = 6", False),
        ("x = 5", "2x = 10", None),  # one unknown: a value, not a plane or a line
        ("2x - y = 5", "2x - y", None),  # no equation
    ],
)
def test_scalar_multiple(gold, pred, expected):
    assert rules.scalar_multiple(parse_answer(gold), parse_answer(pred)) is expected


@pytest.mark.parametrize(
    ("gold", "pred", "expected"),
    [
        ("[-2, 7]", r"-2 \le x \le 7", True),
        (r"-2 \le x \le 7", r"x \in [-2, 7]", True),
        ("(-\\infty, 4)", "x < 4", True),
        ("[-2, 7]", r"-2 < x \le 7", False),
        ("[-2, 7]", "[-2, 7]", None),  # no inequality: math-verify's business
    ],
)
def test_interval_or_inequality(gold, pred, expected):
    assert rules.interval_or_inequality(parse_answer(gold), parse_answer(pred)) is expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (r"so \boxed{1} and \boxed{-2}", [Candidate("1, -2", "2 boxes")]),
        (
            r"$x = \boxed{3}$ and $y = \boxed{4}$",
            [Candidate("3, 4", "2 boxes"), Candidate("x = 3, y = 4", "2 labelled boxes")],
        ),
        (r"First \boxed{2}, no wait: \boxed{3}", [Candidate("3", "boxed")]),
        (
            "Area: $\\boxed{16}$.\nShaded: $\\boxed{16 - 4\\pi}$.",
            [Candidate(r"16 - 4\pi", "boxed"), Candidate(r"16, 16 - 4\pi", "2 boxes of a case analysis")],
        ),
        ("Sum is 10.\n#### 10", [Candidate("10", "####")]),
        (
            "#### Step 2: add\nSo $7 + 3 = 10$.",
            [Candidate("7 + 3 = 10", "final display")],
        ),
        (r"The answer is \boxed{5}. This answer is right since 5 > 4.", [Candidate("5", "boxed")]),
        (r"We get \boxed{5}. So the final answer is 6.", [Candidate("6", "answer phrase")]),
        (r"The answer is $x=1$ and $x=-2$.", [Candidate("x=1, x=-2", "answer phrase")]),
        (r"The answer is 10\sqrt3 + \sqrt{4}.", [Candidate(r"10\sqrt3 + \sqrt{4}", "answer phrase")]),
        (
            r"Hence $a = 3 + 4 = 7$.",
            [
                Candidate("a = 3 + 4 = 7", "final display"),
                Candidate("7", "final display, end of its chain of equalities"),
            ],
        ),
        (r"2\sqrt{6}", [Candidate(r"2\sqrt{6}", "bare answer")]),
        ("Therefore the sum is 18.", [Candidate("Therefore the sum is 18.", "math-verify")]),
        (r"so it is \boxed{4", []),
        ("   ", []),
    ],
)
def test_response_candidates(response, expected):
    assert response_candidates(response) == expected


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        (r"so $\boxed{1}$ then $\boxed{\frac18}$", Candidate(r"\frac18", "boxed")),
        ("He sold 72.\n#### 72", Candidate("72", "####")),
        (r"$\frac{9}{2}$", Candidate(r"\frac{9}{2}", "math env")),
        (r"10\sqrt3 + \sqrt{4}", Candidate(r"10\sqrt3 + \sqrt{4}", "raw")),
        ("We add them.\nThe answer is $12$.", Candidate("12", "answer phrase")),
    ],
)
def test_reference_answer(reference, expected):
    assert reference_answer(reference) == expected
