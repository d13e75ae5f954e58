"""The decision: math-verify on the reference and each stated candidate first; where it says no,
the normalisations (and math-verify again), then the comparisons. The result names what decided.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from latex2sympy2_extended.latex2sympy2 import NormalizationConfig
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from services.reward.answers import rules, runaway
from services.reward.answers.extract import Candidate, reference_answer, response_candidates
from services.reward.answers.rules import Strictness

# Timeouts are switched off on purpose: the verifier process enforces the item's deadline, and
# math-verify's own SIGALRM timers would collide with it. Its warning saying so would be noise.
logging.getLogger("math_verify").setLevel(logging.ERROR)

_LATEX = {
    "standard": (LatexExtractionConfig(),),
    # math-verify's own unit removal ("5\text{ cm}" -> 5) is the leniency "strict" switches off.
    "strict": (
        LatexExtractionConfig(
            normalization_config=NormalizationConfig(
                basic_latex=True, units=False, malformed_operators=True, nits=True, boxed="all", equations=False
            )
        ),
    ),
}
_EXPR = (ExprExtractionConfig(),)


class BadReference(ValueError):
    """The reference holds no answer the verifier can use: a data problem, not a wrong response."""


@dataclass(frozen=True)
class Decision:
    correct: bool
    extracted: str | None
    detail: str


def parse_answer(text: str, strictness: Strictness = "standard") -> list[Any]:
    """math-verify's parse of one answer written as LaTeX (``$`` optional), else as a plain expression."""
    text = text.strip()
    if text.startswith("$") and text.endswith("$"):
        text = text.strip("$").strip()
    if not text:
        return []
    parsed = parse("\\boxed{" + text + "}", extraction_config=_LATEX[strictness], parsing_timeout=None)
    if parsed and not isinstance(parsed[0], str):
        return parsed
    return parse(text, extraction_config=_EXPR, parsing_timeout=None) or parsed


def _parse_candidate(candidate: Candidate, strictness: Strictness) -> list[Any]:
    if candidate.source == "math-verify":
        return parse(candidate.text, extraction_config=(*_LATEX[strictness], *_EXPR), parsing_timeout=None)
    return parse_answer(candidate.text, strictness)


def _agree(gold: list[Any], pred: list[Any]) -> bool:
    return bool(gold) and bool(pred) and bool(verify(gold, pred, timeout_seconds=None))


_LABELLED = re.compile(r"^\s*[A-Za-z](?:_\{?\w+\}?)?\s*=(?!=)")


def _labelled_against_value(gold: str, pred: str) -> bool:
    return bool(_LABELLED.match(pred)) and not _LABELLED.match(gold)


def decide(response: str, reference: str, strictness: Strictness = "standard") -> Decision:
    gold = reference_answer(reference)
    runaway.check(gold.text)
    gold_parsed = parse_answer(gold.text, strictness)
    if not gold_parsed:
        raise BadReference(f"reference has no parseable answer: {reference[:200]!r}")
    candidates = response_candidates(response)
    if not candidates:
        return Decision(False, None, "no answer found in the response")
    for candidate in candidates:
        runaway.check(candidate.text)
    first = candidates[0]
    where = f"answer from {first.source}"

    if strictness == "strict" and all(_labelled_against_value(gold.text, c.text) for c in candidates):
        return Decision(False, first.text, f"{where}; strict: a labelled answer against an unlabelled reference")

    parsed = [(c, _parse_candidate(c, strictness)) for c in candidates]
    for candidate, pred in parsed:
        if _agree(gold_parsed, pred):
            return Decision(True, _shown(candidate, pred), f"answer from {candidate.source}; math-verify")

    gold_norm, gold_rules = rules.normalise(gold.text, strictness)
    gold_norm_parsed = parse_answer(gold_norm, strictness) if gold_rules else gold_parsed
    for candidate, pred in parsed:
        if candidate.source == "math-verify":
            continue
        text, applied = rules.normalise(candidate.text, strictness)
        names = sorted(set(gold_rules + applied))
        if not names:
            continue
        pred_norm = parse_answer(text, strictness) if applied else pred
        if _agree(gold_norm_parsed, pred_norm):
            detail = f"answer from {candidate.source}; math-verify after {', '.join(names)}"
            return Decision(True, candidate.text, detail)

    rejection = None
    for candidate, pred in parsed:
        verdict = _compare(gold.text, candidate.text, gold_parsed, pred)
        if verdict is not None:
            name, correct = verdict
            decision = Decision(correct, candidate.text, f"answer from {candidate.source}; rule {name}")
            if correct:
                return decision
            rejection = rejection or decision
    return rejection or Decision(False, _shown(first, parsed[0][1]), f"{where}; math-verify: not equivalent")


def _compare(gold: str, pred: str, gold_parsed: list[Any], pred_parsed: list[Any]) -> tuple[str, bool] | None:
    checks = (
        ("choice letter", lambda: rules.choice_letter(gold, pred)),
        ("decimal comma", lambda: rules.decimal_comma(pred, gold_parsed)),
        ("scalar multiple", lambda: rules.scalar_multiple(gold_parsed, pred_parsed)),
        ("interval or inequality", lambda: rules.interval_or_inequality(gold_parsed, pred_parsed)),
    )
    for name, check in checks:
        verdict = check()
        if verdict is not None:
            return name, verdict
    return None


def _shown(candidate: Candidate, parsed: list[Any]) -> str | None:
    if candidate.source != "math-verify":
        return candidate.text
    # math-verify returns the parsed value first and the matched text last.
    return (parsed[-1] if isinstance(parsed[-1], str) else str(parsed[0])) if parsed else None
