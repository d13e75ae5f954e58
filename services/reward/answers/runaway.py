"""Cheap checks, before sympy sees a text, for inputs it could only finish at the deadline.

sympy evaluates integers exactly: ``9^{9^{9^{9}}}`` or ``(10^{6})!`` would run until the item's
deadline and end as a timeout anyway, holding a verifier process for the whole deadline. These
checks find such inputs in linear time and raise :class:`Runaway`, which the verifier process
answers at once with status "refused" and the reason in ``detail``.
"""

from __future__ import annotations

import math
import re

# Results with more digits than this take sympy seconds to build, print or compare.
MAX_DIGITS = 100_000
MAX_NESTING = 60


class Runaway(Exception):
    """An input that could only end at the deadline; the message says why."""


# A number, or a placeholder "§<log10>" for a value already estimated, as a base or exponent.
_ATOM = r"(?:\d+(?:\.\d+)?|§[0-9.e+inf]+)"
_POWER = re.compile(rf"({_ATOM})\s*(?:\^|\*\*)\s*(?:\{{\s*({_ATOM})\s*\}}|({_ATOM}))")
_FACTORIAL = re.compile(rf"(?:\(\s*({_ATOM})\s*\)|\{{\s*({_ATOM})\s*\}}|({_ATOM}))\s*!")
_SPACING = re.compile(r"\\[,;:! ]|\\left|\\right|\\cdot|\\times")


def _log10(atom: str) -> float:
    if atom.startswith("§"):
        return float(atom[1:])
    value = float(atom)
    return math.log10(value) if value > 0 else -math.inf


def _value(log10: float) -> float:
    return math.inf if log10 > 300 else 10.0**log10


def _power(match: re.Match[str]) -> str:
    base, exponent = match.group(1), match.group(2) or match.group(3)
    log_base = _log10(base)
    if log_base <= 0:  # 0 or 1 to any power: small
        return "1"
    digits = _value(_log10(exponent)) * log_base
    if digits > MAX_DIGITS:
        what = "an exponent tower" if "§" in base + exponent else f"the power {base}^{exponent}"
        size = "more than 10^300" if math.isinf(digits) else f"at least 10^{math.log10(digits):.0f}"
        raise Runaway(f"{what} with {size} digits")
    return f"§{digits:.6g}"


def _factorial(match: re.Match[str]) -> str:
    n = _value(_log10(next(g for g in match.groups() if g)))
    if n > 25_000:  # 25000! has about 100,000 digits
        shown = f"{n:.0f}" if n < 1e15 else "a number of 15 or more digits"
        raise Runaway(f"the factorial of {shown}")
    digits = math.lgamma(n + 1) / math.log(10) if n >= 1 else 0.0
    return f"§{max(digits, 0.0):.6g}"


def _nesting(text: str) -> int:
    depth = deepest = 0
    for char in text:
        if char in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "})]" and depth:
            depth -= 1
    return deepest


def check(text: str) -> None:
    """Raise :class:`Runaway` if ``text`` holds an exponent tower or a factorial too big to
    compute, or brackets nested deeper than the LaTeX parser can recurse."""
    if (deepest := _nesting(text)) > MAX_NESTING:
        raise Runaway(f"brackets nested {deepest} deep (more than {MAX_NESTING})")
    if "^" not in text and "!" not in text and "**" not in text:
        return
    text = _SPACING.sub(" ", text)
    # Innermost first: each pass replaces the powers and factorials of plain numbers by an estimate
    # of their size, which the next pass uses as a base or exponent. Bounded by the operators' count.
    for _ in range(text.count("^") + text.count("!") + text.count("**") + 1):
        replaced = _FACTORIAL.sub(_factorial, _POWER.sub(_power, text))
        if replaced == text:
            return
        text = replaced
