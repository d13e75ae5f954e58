"""Where an answer is: the candidates a response states, and the answer a reference holds.

A response states its answer, in order of precedence: in the boxes of its final answer (several
boxes joined by "and" or commas are one answer: ``\\boxed{1}`` and ``\\boxed{-2}``), after GSM8K's
``####``, after "the answer is", in its final math display, or as a whole when it is one bare
line. Only when none of these is there does math-verify's own search of the whole text decide.
Taking only the last box, or math-verify's last number, lost answers such as
``\\boxed{(1, 2)}, \\boxed{(2, 1)}`` or "The answer is 10\\sqrt3 + \\sqrt{4}" (read as 10).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.reward.answers.boxes import Box, boxes


@dataclass(frozen=True)
class Candidate:
    text: str  # a LaTeX fragment without math delimiters; for source "math-verify", the whole response
    source: str  # how it was found; shown in the verdict's detail


# Text between two boxes of one answer: separators and labels only, no second thoughts.
_JOINER_MAX = 80
_CASES_MAX = 600  # text between the boxes of two cases
_SECOND_THOUGHT = re.compile(
    r"\b(?:wait|no|not|actually|instead|mistake|wrong|incorrect|re-?check|however|but|correct(?:ion|ed)?|oops|hmm|"
    r"let me|should be|rather|check)\b",
    re.IGNORECASE,
)
_LABEL = re.compile(r"(?:^|[\s$(,;])([A-Za-z](?:_\{?\w+\}?)?)\s*=\s*\$?\s*$")
# GSM8K's answer line; not a Markdown heading ("#### Step 2: ...").
_GSM8K = re.compile(r"####\s*((?:\\?\$\s*)?-?[\d.,]+[^\n]*)")
_ANSWER_PHRASE = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|:|=|would be|will be)\s*:?\s*(?P<rest>[^\n]+)", re.IGNORECASE
)
# Delimiters of inline and display math: \[..\], $$..$$, \(..\), $..$ (\$ is a dollar sign).
_DELIMITER = re.compile(r"\\[\[\]()$]|\$\$|\$")
_CLOSER = {"\\[": "\\]", "\\(": "\\)", "$$": "$$", "$": "$"}
# More parts than this are no one answer (and would cost math-verify seconds).
_MAX_PARTS = 12
_ENV_JOINER = re.compile(r"^[\s,;]*(?:,?\s*(?:and|or)\b)?[\s,;]*$", re.IGNORECASE)
_BARE_MAX = 200
# A word of four or more letters that is no LaTeX command: prose, not a bare answer.
_PROSE = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{4,}")


_SENTENCE_END = re.compile(r"[.!?]\$?\s+\S|\n")


def _final_box_group(text: str, found: list[Box], extended: bool = False) -> list[Box]:
    """The last box and the boxes just before it that belong to the same answer: joined by
    separators within one sentence, or (``extended``) in the sentences before it, as a case
    analysis boxes one answer per case. A second thought in between always ends the group."""
    group = [found[-1]]
    for box in reversed(found[:-1]):
        between = text[box.end : group[0].start]
        if len(group) == _MAX_PARTS or len(between) > (_CASES_MAX if extended else _JOINER_MAX):
            break
        if _SECOND_THOUGHT.search(between) or (not extended and _SENTENCE_END.search(between)):
            break
        group.insert(0, box)
    return group


def _label_before(text: str, box: Box, floor: int) -> str | None:
    match = _LABEL.search(text[max(floor, box.start - 40) : box.start])
    return match.group(1) if match else None


def _boxed_candidates(text: str, found: list[Box]) -> list[Candidate]:
    group = _final_box_group(text, found)
    if len(group) == 1:
        candidates = [Candidate(group[0].content, "boxed")]
    else:
        candidates = [Candidate(", ".join(b.content for b in group), f"{len(group)} boxes")]
        floors = [0, *(b.end for b in group[:-1])]
        labels = [_label_before(text, b, floor) for b, floor in zip(group, floors)]
        if all(labels) and len(set(labels)) == len(labels):
            labelled = ", ".join(f"{label} = {b.content}" for label, b in zip(labels, group))
            candidates.append(Candidate(labelled, f"{len(group)} labelled boxes"))
    cases = _final_box_group(text, found, extended=True)
    if len(cases) > len(group):
        candidates.append(Candidate(", ".join(b.content for b in cases), f"{len(cases)} boxes of a case analysis"))
    return candidates


@dataclass(frozen=True)
class _Env:
    start: int
    end: int
    content: str


def _math_envs(text: str) -> list[_Env]:
    """Math environments in order, paired in one pass over their delimiters (a regex with a lazy
    ``.+?`` per opening would rescan the rest of the text from each unclosed one)."""
    envs = []
    opened: re.Match[str] | None = None
    for match in _DELIMITER.finditer(text):
        token = match.group()
        if token == "\\$":
            continue
        if opened is None:
            if token in _CLOSER:
                opened = match
        elif token == _CLOSER[opened.group()]:
            # A display that ends its sentence: "\\[ x = 2. \\]".
            content = re.sub(r"[\s.,;]+$", "", text[opened.end() : match.start()]).strip()
            if content:
                envs.append(_Env(opened.start(), match.end(), content))
            opened = None
    return envs


def _final_math(text: str) -> list[str]:
    """The last math environment of ``text``, with the ones just before it joined by "and"/commas."""
    envs = _math_envs(text)
    if not envs:
        return []
    group = [envs[-1]]
    for env in reversed(envs[:-1]):
        if len(group) == _MAX_PARTS or not _ENV_JOINER.match(text[env.end : group[0].start]):
            break
        group.insert(0, env)
    return [env.content for env in group]


_STATED = re.compile(r"[-+\d.\\({\[]|[A-Z](?![a-zA-Z])")


def _strip_sentence(text: str) -> str:
    text = text.strip().strip("*").strip()
    return re.sub(r"[\s.;,!]+$", "", text)


def _phrase_candidate(rest: str) -> Candidate | None:
    if "\\boxed" in rest or "\\fbox" in rest:
        return None  # a box left open: the response was cut off while writing its answer
    maths = _final_math(rest)
    if maths:
        return Candidate(", ".join(maths), "answer phrase")
    text = _strip_sentence(rest)
    # "This answer is reasonable because ..." states no answer; "is 72 apples", "is C", "is \frac12" do.
    if not _STATED.match(text):
        return None
    return Candidate(text, "answer phrase")


def _chain_tail(text: str) -> str | None:
    """``a = 3 + 4 = 7`` -> ``7``: the value a chain of equalities ends with."""
    parts = re.split(r"(?<![<>!\\])=", text)
    if len(parts) > 2 and "," not in text:
        return parts[-1].strip() or None
    return None


def response_candidates(response: str) -> list[Candidate]:
    """Every reading of the answer the response states, most faithful first (see module doc)."""
    found = boxes(response)
    last_box_end = found[-1].end if found else -1
    gsm8k = [m for m in _GSM8K.finditer(response) if m.start() >= last_box_end]
    phrases = [m for m in _ANSWER_PHRASE.finditer(response) if m.start() >= last_box_end]
    if gsm8k:
        return [Candidate(_strip_sentence(gsm8k[-1].group(1)), "####")]
    if phrases:
        candidate = _phrase_candidate(phrases[-1].group("rest"))
        if candidate is not None and candidate.text:
            return [candidate]
    if found:
        return _boxed_candidates(response, found)
    maths = _final_math(response)
    if maths:
        joined = ", ".join(maths)
        candidates = [Candidate(joined, "final display")]
        if (tail := _chain_tail(joined)) is not None:
            candidates.append(Candidate(tail, "final display, end of its chain of equalities"))
        return candidates
    stripped = response.strip()
    if "\\boxed" in stripped or "\\fbox" in stripped:
        return []  # only boxes left open: cut off while writing its answer
    if stripped and "\n" not in stripped and len(stripped) <= _BARE_MAX and not _PROSE.search(stripped):
        return [Candidate(_strip_sentence(stripped), "bare answer")]
    return [Candidate(response, "math-verify")] if stripped else []


def reference_answer(reference: str) -> Candidate:
    """The answer a reference holds, as data sets write it: a solution's last box, GSM8K's
    ``#### 72``, one math environment, or raw LaTeX without ``$`` (the whole reference)."""
    found = boxes(reference)
    if found:
        return Candidate(found[-1].content, "boxed")
    gsm8k = list(_GSM8K.finditer(reference))
    if gsm8k:
        return Candidate(_strip_sentence(gsm8k[-1].group(1)), "####")
    stripped = reference.strip()
    envs = _math_envs(stripped)
    if len(envs) == 1 and envs[0].start == 0 and envs[0].end == len(stripped):
        return Candidate(envs[0].content, "math env")
    if "\n" in stripped:  # a worked solution without a box: its stated answer
        phrases = list(_ANSWER_PHRASE.finditer(stripped))
        if phrases and (candidate := _phrase_candidate(phrases[-1].group("rest"))) is not None:
            return candidate
    return Candidate(stripped, "raw")
