"""Verifiers: pure functions ``(response, reference) -> Verdict``, registered by name.

Requests name a verifier per item (``"math"`` by default). Add one with::

    @register("my_check")
    def my_check(response: str, reference: str) -> Verdict: ...

in this module (worker processes import it, so a verifier registered elsewhere is not seen by them).

Verifiers here run without any timeout of their own: the worker process that calls them enforces
the item's deadline (math-verify's own timeouts use ``signal.alarm``, which the worker's deadline
timer would collide with).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from math_verify import parse, verify
from pydantic import BaseModel, ConfigDict

# Its timeouts are switched off on purpose (see above); its warning saying so would be noise.
logging.getLogger("math_verify").setLevel(logging.ERROR)


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    correct: bool
    reward: float
    extracted: str | None = None


class BadReference(ValueError):
    """The reference holds no answer the verifier can use: a data problem, not a wrong response."""


Verifier = Callable[[str, str], Verdict]

VERIFIERS: dict[str, Verifier] = {}


def register(name: str) -> Callable[[Verifier], Verifier]:
    def decorator(fn: Verifier) -> Verifier:
        if name in VERIFIERS:
            raise ValueError(f"verifier {name!r} is already registered")
        VERIFIERS[name] = fn
        return fn

    return decorator


# Opening of a \boxed group, a backslash escape (so \{ and \} are not grouping braces), or a brace.
_TOKENS = re.compile(r"\\boxed\s*\{|\\.|[{}]", re.DOTALL)


def last_boxed(text: str) -> str | None:
    """Content of the last well-formed, non-empty ``\\boxed{...}`` in ``text`` (stripped), else None.

    "Last" is the one that opens last; a truncated ``\\boxed{`` at the end is skipped in favour of
    an earlier complete one. One pass, so adversarial inputs cost linear time.
    """
    stack: list[int | None] = []  # content start for a \boxed group, None for a plain group
    best: tuple[int, int] | None = None
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token.startswith("\\boxed"):
            stack.append(match.end())
        elif token == "{":
            stack.append(None)
        elif token == "}" and stack:
            start = stack.pop()
            if start is not None and text[start : match.start()].strip():
                if best is None or start > best[0]:
                    best = (start, match.start())
    return None if best is None else text[best[0] : best[1]].strip()


def _boxed(answer: str) -> str:
    return "\\boxed{" + answer + "}"


def gold_text(reference: str) -> str:
    """What math-verify parses for the reference: its last \\boxed{} answer, else the whole reference as
    one answer (bare LaTeX such as ``(1, 2]`` or ``2\\sqrt{2}`` only parses right inside a math env)."""
    answer = last_boxed(reference)
    return _boxed(answer if answer is not None else reference.strip())


def prediction_text(response: str) -> str:
    """What math-verify parses for the response: its last \\boxed{} answer, else the whole response
    (math-verify then finds the answer itself). math-verify alone would merge every \\boxed{} of a
    response into one set."""
    answer = last_boxed(response)
    return _boxed(answer) if answer is not None else response


@register("math")
def verify_math(response: str, reference: str) -> Verdict:
    gold = parse(gold_text(reference), parsing_timeout=None)
    if not gold:
        raise BadReference(f"reference has no parseable answer: {reference[:200]!r}")
    answer = last_boxed(response)
    pred = parse(prediction_text(response), parsing_timeout=None)
    correct = bool(verify(gold, pred, timeout_seconds=None))
    if answer is None and pred:
        # math-verify returns the parsed value first and the matched text last.
        answer = pred[-1] if isinstance(pred[-1], str) else str(pred[0])
    return Verdict(correct=correct, reward=1.0 if correct else 0.0, extracted=answer)


@register("format")
def verify_format(response: str, reference: str) -> Verdict:
    """Rewards a well-formed, non-empty \\boxed{} answer, whatever its value."""
    answer = last_boxed(response)
    ok = answer is not None
    return Verdict(correct=ok, reward=1.0 if ok else 0.0, extracted=answer)
