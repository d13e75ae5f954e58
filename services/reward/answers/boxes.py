"""``\\boxed{...}`` groups, found in one brace-aware pass (linear time, so adversarial input is cheap)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Opening of a \boxed (or \fbox) group, a backslash escape (so \{ and \} are not grouping braces), or a brace.
_TOKENS = re.compile(r"\\(?:boxed|fbox)\s*\{|\\.|[{}]", re.DOTALL)


@dataclass(frozen=True)
class Box:
    start: int  # of the ``\boxed`` command
    end: int  # just past its closing brace
    content: str  # stripped


def boxes(text: str) -> list[Box]:
    """Every well-formed, non-empty box, in order of opening; a box inside a box is dropped in
    favour of the inner one (``\\boxed{\\boxed{3}}`` is one box, 3). Unclosed boxes are skipped."""
    stack: list[tuple[int, int] | None] = []  # (command start, content start) for a box, None for a group
    found: list[Box] = []
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token[-1] == "{" and len(token) > 2:  # \boxed{ (an escaped \{ is two characters)
            stack.append((match.start(), match.end()))
        elif token == "{":
            stack.append(None)
        elif token == "}" and stack:
            opened = stack.pop()
            if opened is not None:
                content = text[opened[1] : match.start()].strip()
                if content:
                    found.append(Box(opened[0], match.end(), content))
    found.sort(key=lambda b: b.start)
    # Keep the innermost of nested boxes: an outer box around an inner one adds nothing. Groups
    # nest properly, so a box holds another exactly when the next box to open starts inside it.
    return [b for b, after in zip(found, [*found[1:], None]) if after is None or after.start >= b.end]


def last_boxed(text: str) -> str | None:
    """Content of the last well-formed, non-empty box (the one that opens last), else None."""
    found = boxes(text)
    return found[-1].content if found else None
