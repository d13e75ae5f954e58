"""A verifier with partial credit: the response's last number against the reference's.

1.0 when equal, 0.5 when one away, else 0.0. ``within_one`` is registered as an entry point;
``strict_length`` is used by its ``module:function`` path (reward.verifier_paths).
"""

from __future__ import annotations

import re

from services.reward.verifiers import Verdict, VerifierOptions

_NUMBER = re.compile(r"-?\d+")


def within_one(response: str, reference: str, options: VerifierOptions) -> float:
    """Partial credit: 1 for the reference's number, 0.5 for one off, else 0."""
    numbers = _NUMBER.findall(response)
    if not numbers:
        return 0.0
    gap = abs(int(numbers[-1]) - int(reference))
    return 1.0 if gap == 0 else 0.5 if gap == 1 else 0.0


def strict_length(response: str, reference: str, options: VerifierOptions) -> Verdict:
    """Correct when the response has exactly as many characters as the reference says."""
    correct = len(response) == int(reference)
    return Verdict(correct=correct, reward=float(correct), extracted=str(len(response)), detail="length")
