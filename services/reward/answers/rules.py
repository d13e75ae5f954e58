"""Named rules for what math-verify alone gets wrong, each a small function with its own cases.

Two kinds:

- normalisations rewrite a LaTeX answer (reference and candidate alike) into a form math-verify
  reads right; after them math-verify decides again;
- comparisons decide from the parsed or written answers themselves, for equivalences
  math-verify has no notion of (a plane written as a multiple of another, an interval written as
  an inequality, a multiple-choice letter with its option's text, a decimal comma).

Rules marked ``lenient`` read more into an answer than it says (a label, a unit, an
approximation); the ``strict`` strictness switches them off.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from latex2sympy2_extended.logic import And
from sympy import Eq, Number, Set, simplify
from sympy.core.relational import Relational

Strictness = Literal["standard", "strict"]


@dataclass(frozen=True)
class Normalisation:
    name: str
    apply: Callable[[str], str]
    lenient: bool = False


# ----------------------------------------------------------------------------- normalisations


_TRIG_DEGREES = re.compile(r"\\(sin|cos|tan|cot|sec|csc)\s*(?:\(\s*)?(\d+(?:\.\d+)?)\s*\^\s*\{?\\circ\}?(?:\s*\))?")


def trig_degrees(text: str) -> str:
    r"""``\sin 60^\circ`` -> ``\sin(\frac{60\pi}{180})``: math-verify reads degrees as a number."""
    return _TRIG_DEGREES.sub(lambda m: f"\\{m.group(1)}(\\frac{{{m.group(2)}\\pi}}{{180}})", text)


_FUNCTION_LABEL = re.compile(r"^\s*[a-zA-Z](?:\^\{?-1\}?)?\s*\(\s*[a-z]\s*\)\s*=(?!=)")


def function_label(text: str) -> str:
    r"""``f^{-1}(x) = \frac{x-3}{2}`` -> ``\frac{x-3}{2}``: the label of a function's formula."""
    return _FUNCTION_LABEL.sub("", text, count=1).strip()


_REPEATING = re.compile(r"(-?)(\d*)\.(\d*)\\overline\{(\d+)\}")


def repeating_decimals(text: str) -> str:
    r"""``0.\overline{3}`` -> ``\frac{1}{3}``, ``1.2\overline{45}`` -> its fraction."""

    def fraction(m: re.Match[str]) -> str:
        sign, whole, fixed, period = m.groups()
        scale = 10 ** len(fixed)
        numerator = (int(whole or 0) * scale + int(fixed or 0)) * (10 ** len(period) - 1) + int(period)
        return f"{sign}\\frac{{{numerator}}}{{{scale * (10 ** len(period) - 1)}}}"

    return _REPEATING.sub(fraction, text)


def frac_variants(text: str) -> str:
    r"""``\dfrac``, ``\tfrac``, ``\cfrac`` -> ``\frac``."""
    return re.sub(r"\\[dtc]frac(?![a-zA-Z])", r"\\frac", text)


_MATRIX_ENV = re.compile(r"\\(begin|end)\{(?:bmatrix|Bmatrix|matrix|smallmatrix|array)\}(?:\{[lcr|\s]*\})?")


def matrix_environments(text: str) -> str:
    r"""``bmatrix``, ``matrix``, ``smallmatrix`` and ``\left( \begin{array}{cc} .. \right)`` -> ``pmatrix``."""
    if "\\begin" not in text:
        return text
    text = re.sub(r"\\left\s*[(\[]\s*(\\begin\{array\})", r"\1", text)
    text = re.sub(r"(\\end\{array\})\s*\\right\s*[)\]]", r"\1", text)
    return _MATRIX_ENV.sub(lambda m: f"\\{m.group(1)}{{pmatrix}}", text)


def latex_spacing(text: str) -> str:
    r"""Spacing and sizing commands that carry no value: ``\!``, ``\,``, ``~``, ``\left``, ``\displaystyle``."""
    text = re.sub(r"\\(?:left|right)(?![a-zA-Z])|\\displaystyle|\\[,;:! ]", " ", text)
    return re.sub(r"\s+", " ", re.sub(r"(?<!\\)~", " ", text)).strip()


_WRAPPER = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}")


def text_wrappers(text: str) -> str:
    r"""``\text{C}``, ``\textbf{(C)}``, ``\mathrm{x}`` -> their content."""
    return _WRAPPER.sub(lambda m: m.group(1), text)


def currency(text: str) -> str:
    r"""``\$10``, ``$10``, ``10 dollars``, ``€5`` -> the amount."""
    text = re.sub(r"\\\$|[$€£¥]|\\(?:euro|pounds)\b", "", text)
    return re.sub(r"\s*\b(?:dollars?|USD|cents?|euros?)\b\.?", "", text, flags=re.IGNORECASE).strip()


_NUMBER = r"-?(?:\d+(?:\.\d+)?|\.\d+)"
_TRAILING_UNIT = re.compile(
    rf"^(?P<n>{_NUMBER}|{_NUMBER}\s*\\%|\\frac\{{\d+\}}\{{\d+\}}|\d*\\sqrt\{{?\d+\}}?)\s*"
    r"(?:\\(?:text|mathrm|mbox|textrm)\s*\{[^{}]*\}|(?P<word>[a-zA-Z][a-zA-Z .]*))(?:\s*\^\s*\{?[23]\}?)?\s*\.?$"
)
# A bare word after a number is a unit unless it could be a variable or a function: one letter
# ("5x", "3 n"), or a name sympy reads as math.
_NOT_UNITS = {"pi", "e", "i", "sin", "cos", "tan", "log", "ln", "exp", "sqrt", "and", "or"}


def units(text: str) -> str:
    r"""A number and a unit (``5\text{ cm}``, ``12 \mathrm{~m}^2``, ``30^\circ``, ``7 apples``) -> the number."""
    text = re.sub(r"\s*\^\s*\{?\\circ\}?|°|\\degree\b", "", text)
    match = _TRAILING_UNIT.match(text.strip())
    if not match:
        return text
    word = (match.group("word") or "").strip(" .")
    if word and (len(word) == 1 or word.lower() in _NOT_UNITS):
        return text
    return match.group("n")


_APPROX = re.compile(r"\\approx|≈|\\simeq|\\thickapprox|\\sim(?![a-z])")


def approximation(text: str) -> str:
    r"""``\frac{\sqrt3}{3} \approx 0.577`` -> ``\frac{\sqrt3}{3}``: an exact value shown with its approximation."""
    parts = _APPROX.split(text)
    if len(parts) < 2:
        return text
    exact = parts[0].strip()
    return exact if exact and not exact.endswith("=") else text


def mixed_numbers(text: str) -> str:
    r"""``918\frac{1}{2}``, ``3128 1/2``, ``-2\tfrac13`` -> ``918+\frac{1}{2}`` etc., when the fraction is proper."""
    text = text.strip()
    match = re.fullmatch(r"(-?)(\d+)\s*\\[dtc]?frac\s*\{?(\d+)\}?\s*\{?(\d+)\}?", text) or re.fullmatch(
        r"(-?)(\d+)\s+(\d+)\s*/\s*(\d+)", text
    )
    if not match or int(match.group(3)) >= int(match.group(4)) or match.group(4) == "0":
        return text
    sign, whole, num, den = match.groups()
    return f"{sign}({whole}+\\frac{{{num}}}{{{den}}})"


_SEPARATED = re.compile(r"-?\d{1,3}(?:(?:,|\{,\}|\\,|\s|')\d{3})+(?:\.\d+)?")


def thousands_separators(text: str) -> str:
    r"""``1,234,567``, ``1{,}000``, ``1\,000``, ``12 500`` -> digits only (the whole answer must be the number)."""
    stripped = text.strip()
    if _SEPARATED.fullmatch(stripped):
        return re.sub(r"\{,\}|\\,|[,\s']", "", stripped)
    return text


def connectives(text: str) -> str:
    r"""``1 \text{ and } 2``, ``x = 1 or x = 2``, ``1 \quad 2``, ``1; 2`` -> a comma-separated list."""
    return re.sub(r"\s*(?:\\text\{\s*(?:and|or)\s*\}|\b(?:and|or)\b|\\q?quad|;)\s*", ", ", text).strip(", ")


_LABEL = re.compile(r"^\s*[A-Za-z](?:_\{?\w+\}?)?\s*=(?!=)\s*")


def plus_minus(text: str) -> str:
    r"""``1 \pm \sqrt{2}`` -> ``1+\sqrt{2}, 1-\sqrt{2}``; ``x = \frac{-1 \pm \sqrt5}{2}`` -> both roots,
    each with the label (one ``\pm`` in a one-part answer)."""
    label = _LABEL.match(text)
    prefix, expr = (label.group(), text[label.end() :]) if label else ("", text)
    if expr.count("\\pm") != 1 or "," in expr or "=" in expr:
        return text
    plus, minus = (re.sub(r"\\pm\s*", sign, expr).strip() for sign in ("+", "-"))
    if plus.startswith("+"):
        plus = plus[1:].strip()
    return f"{prefix}{plus}, {prefix}{minus}"


# Order matters: wrappers go before units (which read \text{cm}), spacing before thousands.
NORMALISATIONS: tuple[Normalisation, ...] = (
    Normalisation("trig degrees", trig_degrees),
    Normalisation("repeating decimals", repeating_decimals),
    Normalisation("function label", function_label, lenient=True),
    Normalisation("frac variants", frac_variants),
    Normalisation("matrix environments", matrix_environments),
    Normalisation("latex spacing", latex_spacing),
    Normalisation("currency", currency),
    Normalisation("approximation", approximation, lenient=True),
    Normalisation("units", units, lenient=True),
    Normalisation("text wrappers", text_wrappers),
    Normalisation("thousands separators", thousands_separators),
    Normalisation("mixed numbers", mixed_numbers),
    Normalisation("connectives", connectives),
    Normalisation("plus-minus", plus_minus),
)


def normalise(text: str, strictness: Strictness) -> tuple[str, list[str]]:
    """``text`` after every normalisation the strictness allows, and the names of those that changed it."""
    applied = []
    for rule in NORMALISATIONS:
        if rule.lenient and strictness == "strict":
            continue
        changed = rule.apply(text)
        if changed != text:
            applied.append(rule.name)
            text = changed
    return text, applied


# ----------------------------------------------------------------------------- comparisons
# Each takes the written answers and math-verify's parse of each (lists, possibly empty) and
# returns True or False when it applies, None when it does not.

_CHOICE_GOLD = re.compile(r"^\(?([A-E])\)?\.?$")
_CHOICE_PRED = re.compile(r"^\(?([A-E])\)?(?:[.:)]|\s|$)")


def choice_letter(gold: str, pred: str) -> bool | None:
    """Reference ``C`` (or ``(C)``); response ``C``, ``(C)``, ``C. x = 42``, ``\\text{(C) } 42``."""
    gold_match = _CHOICE_GOLD.match(text_wrappers(gold).strip())
    if not gold_match:
        return None
    pred_match = _CHOICE_PRED.match(text_wrappers(pred).strip())
    if not pred_match:
        return None
    return pred_match.group(1) == gold_match.group(1)


_DECIMAL_COMMA = re.compile(r"-?\d+,\d+")


def decimal_comma(pred: str, gold_parsed: list[Any]) -> bool | None:
    """``3,5`` against a reference 3.5 or 7/2: a decimal comma, when the reference is one number
    that is no integer (against a list or an integer, "3,5" is the list 3, 5)."""
    pred = pred.strip()
    if not _DECIMAL_COMMA.fullmatch(pred) or re.fullmatch(r"-?\d{1,3}(?:,\d{3})+", pred):
        return None
    gold = next((v for v in gold_parsed if not isinstance(v, str)), None)
    if not isinstance(gold, Number) or gold.is_integer:
        return None
    try:
        value = Decimal(pred.replace(",", "."))
    except InvalidOperation:
        return None
    return abs(float(value) - float(gold)) <= 1e-9 * max(1.0, abs(float(gold)))


def _equation_expr(parsed: list[Any]) -> Any:
    for value in parsed:
        if isinstance(value, Eq):
            return value.lhs - value.rhs
    return None


def scalar_multiple(gold_parsed: list[Any], pred_parsed: list[Any]) -> bool | None:
    """Equations of a plane or a line in two or more unknowns: a nonzero multiple is the same one
    (``2x - y + 3z = 5`` and ``-4x + 2y - 6z + 10 = 0``)."""
    gold, pred = _equation_expr(gold_parsed), _equation_expr(pred_parsed)
    if gold is None or pred is None or len(gold.free_symbols) < 2 or gold.free_symbols != pred.free_symbols:
        return None
    ratio = simplify(pred / gold)
    return bool(ratio.is_number and ratio != 0 and ratio.is_finite)


def interval_or_inequality(gold_parsed: list[Any], pred_parsed: list[Any]) -> bool | None:
    """An interval against inequalities in one unknown (``[-2, 7]`` and ``-2 \\le x \\le 7``, or
    ``x \\in [-2, 7]``), either way round."""

    def as_set(values: list[Any]) -> Any:
        for value in values:
            if isinstance(value, Set):
                return value
            if isinstance(value, Eq) and isinstance(value.rhs, Set):  # x \in [a, b]
                return value.rhs
            if isinstance(value, (Relational, And)) and len(value.free_symbols) == 1:
                try:
                    return value.as_set()
                except Exception:  # sympy cannot solve it: not an interval
                    return None
        return None

    has_relation = any(isinstance(v, (Relational, And)) for v in gold_parsed + pred_parsed)
    if not has_relation:
        return None
    gold, pred = as_set(gold_parsed), as_set(pred_parsed)
    if gold is None or pred is None:
        return None
    return bool(gold == pred)
