"""The built-in verifiers: pure functions ``(response, reference, options) -> Verdict``.

Requests name a verifier per item (``"math"`` by default). The service finds verifiers by name in
``services.reward.registry``: these, and those other packages register under the entry-point group
``prefix_rft.verifiers`` (docs/custom-task.md). ``Verdict`` and ``VerifierOptions`` are what a
plug-in's function may use.

Verifiers here run without any timeout of their own: the verifier process that calls them enforces
the item's deadline (math-verify's own timeouts use ``signal.alarm``, which the process's deadline
timer would collide with). They raise ``answers.runaway.Runaway`` for inputs that could only end
at that deadline.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

from pydantic import BaseModel, ConfigDict

from services.reward.answers import runaway
from services.reward.answers.boxes import last_boxed
from services.reward.answers.decide import BadReference, decide
from services.reward.answers.rules import Strictness

__all__ = ["BUILTIN", "BadReference", "Verdict", "VerifierOptions", "last_boxed"]


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    correct: bool
    reward: float
    extracted: str | None = None
    detail: str | None = None  # which reading of the answer and which rule decided


class VerifierOptions(BaseModel):
    """What the service's settings pass to every verifier (``RewardSettings.strictness``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strictness: Strictness = "standard"


Verifier = Callable[[str, str, VerifierOptions], Verdict]


def _verdict(correct: bool, extracted: str | None, detail: str | None) -> Verdict:
    return Verdict(correct=correct, reward=1.0 if correct else 0.0, extracted=extracted, detail=detail)


def verify_math(response: str, reference: str, options: VerifierOptions = VerifierOptions()) -> Verdict:
    """The answer the response states against the reference's answer (see ``answers``)."""
    decision = decide(response, reference, options.strictness)
    return _verdict(decision.correct, decision.extracted, decision.detail)


# GSM8K: "#### 72" closes a solution; a model may box it or say "the answer is" instead.
# "#### 72" closes the answer; "#### Step 2" is a Markdown heading.
_GSM8K_MARK = re.compile(r"####\s*((?:\\?\$\s*)?-?[\d.,]+[^\n]*)")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_HEADING = re.compile(r"^#+\s[^\n]*$", re.MULTILINE)
_GSM8K_PHRASE = re.compile(r"answer\s*(?:is|:)\s*((?:\\?\$\s*)?-?\.?\d[^\n]*)", re.IGNORECASE)


def _gsm8k_number(text: str) -> Decimal | None:
    """The number of a GSM8K answer: "72", "$1,200", "18 dollars", "\\$7.50" -> its value."""
    numbers = _NUMBER.findall(text.replace("\\$", "").replace("{,}", ","))
    if not numbers:
        return None
    try:
        return Decimal(numbers[-1].replace(",", "")).normalize()
    except InvalidOperation:
        return None


def verify_gsm8k(response: str, reference: str, options: VerifierOptions = VerifierOptions()) -> Verdict:
    """GSM8K's convention: the reference's ``#### N``; the response's ``#### N``, else its last box,
    else its "answer is", else its last number; equal as exact decimals."""
    marks = _GSM8K_MARK.findall(reference)
    expected = _gsm8k_number(marks[-1] if marks else reference)
    if expected is None:
        raise BadReference(f"reference has no GSM8K answer (#### N or a number): {reference[:200]!r}")
    runaway.check(response[-2000:])
    stated: list[tuple[str, str]] = []
    if marks := _GSM8K_MARK.findall(response):
        stated.append((marks[-1], "####"))
    elif (boxed := last_boxed(response)) is not None:
        stated.append((boxed, "boxed"))
    elif phrases := _GSM8K_PHRASE.findall(response):
        stated.append((phrases[-1], "answer phrase"))
    else:  # Markdown headings ("## Step 2") are no part of the answer
        stated.append((_HEADING.sub("", response), "last number"))
    text, source = stated[0]
    value = _gsm8k_number(text)
    if value is None:
        return _verdict(False, None, f"no number in the answer from {source}")
    return _verdict(value == expected, str(value), f"answer from {source}; exact decimal comparison")


def verify_format(response: str, reference: str, options: VerifierOptions = VerifierOptions()) -> Verdict:
    """Rewards a well-formed, non-empty \\boxed{} answer, whatever its value."""
    answer = last_boxed(response)
    ok = answer is not None
    return _verdict(ok, answer, None)


# The same names as the entry points in pyproject.toml, which is how the service finds them once
# prefix-rft is installed; this table also serves a source checkout whose metadata predates them.
BUILTIN: dict[str, Verifier] = {"math": verify_math, "gsm8k": verify_gsm8k, "format": verify_format}
