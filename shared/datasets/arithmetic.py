"""Arithmetic word problems with step-by-step demonstrations.

Difficulty is the number of operations in the story: the base policy is warmed up on short
stories, trained on medium ones, and tested in distribution and on longer stories (out of
distribution). Every problem is a pure function of (seed, split, index).

Demonstrations come in three styles:

- ``column``: every operation worked digit by digit. The base policy is warmed up on this style, so
  these demonstrations are on its own distribution: imitating them costs it nothing.
- ``teacher``: a stronger solver's trace. It restates each step in words and does each operation in
  one go, as mental arithmetic. It is correct, but laid out differently and relies on a skill the small
  student lacks, as a large model's traces are for the paper's 1.5B-7B students. Imitating it has a cost.
- ``verified``: the column work, then a more careful solver's close: the result restated in the story's
  words and checked backwards, each change undone in one go. Off the base policy's distribution (imitating
  it costs something) yet continuable: a prefix of it is mostly column work the base policy can pick up, as
  the paper's students continue R1's traces. Chosen by two probes on the base policy before any run with it
  (``launcher.probes``; docs/analysis.md).
"""

from __future__ import annotations

import hashlib
import random
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.problems import Problem

Split = Literal["warmup", "train", "test", "ood"]
DemoStyle = Literal["column", "teacher", "verified"]
Wording = Literal["plain", "retold", "new-names"]

NAMES = ("Ann", "Ben", "Cara", "Dan", "Eva", "Finn", "Gia", "Hugo", "Ivy", "Jon", "Kim", "Leo", "Mia", "Nora")
ITEMS = ("apples", "coins", "cards", "books", "stamps", "shells", "marbles", "pens", "stickers", "beads")
# Names and things no training story has (the "new-names" wording).
NEW_NAMES = ("Omar", "Pia", "Quinn", "Rosa", "Sam", "Tara", "Uma", "Vic", "Will", "Zoe")
NEW_ITEMS = ("buttons", "rocks", "cups", "keys", "ribbons", "tickets", "candles", "leaves")
GAIN_VERBS = ("finds", "buys", "gets", "wins")
LOSS_VERBS = ("gives away", "loses", "sells", "uses")
INSTRUCTION = "Put the final answer in \\boxed{}."


class Difficulty(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_ops: int = Field(ge=1)
    max_ops: int = Field(ge=1)
    min_start: int = Field(10, ge=0)  # the opening amount is drawn from [min_start, max_start]
    max_start: int = Field(99, ge=1)
    max_operand: int = Field(99, ge=1)
    max_value: int = Field(999, ge=10)  # every running total stays in [0, max_value]
    # None: the number of operations is uniform over [min_ops, max_ops]. A share: max_ops with that
    # probability, else uniform over the others (a few long stories in an otherwise easy split).
    max_ops_share: float | None = Field(None, ge=0, le=1)
    # How the question is worded: "plain" (what training sees), "retold" (the same story in other
    # sentences: "Kim starts out with 28 apples. Next, Kim wins 71. ...") or "new-names" (training's
    # sentences about people and things training never names).
    wording: Wording = "plain"

    @model_validator(mode="after")
    def _ordered(self) -> Difficulty:
        if self.min_ops > self.max_ops:
            raise ValueError(f"min_ops {self.min_ops} > max_ops {self.max_ops}")
        if self.max_ops_share is not None and self.min_ops == self.max_ops:
            raise ValueError("max_ops_share needs min_ops < max_ops")
        if self.min_start > self.max_start:
            raise ValueError(f"min_start {self.min_start} > max_start {self.max_start}")
        if self.max_start > self.max_value:
            raise ValueError(f"max_start {self.max_start} > max_value {self.max_value}")
        return self

    def describe(self) -> str:
        ops = f"{self.min_ops}" if self.min_ops == self.max_ops else f"{self.min_ops}-{self.max_ops}"
        words = "" if self.wording == "plain" else f", {self.wording} wording"
        return (
            f"{ops} operations, starting amounts {self.min_start}-{self.max_start}, changes up to {self.max_operand}"
            + words
        )

    def sample_ops(self, rng: random.Random) -> int:
        if self.max_ops_share is None:
            return rng.randint(self.min_ops, self.max_ops)
        if rng.random() < self.max_ops_share:
            return self.max_ops
        return rng.randint(self.min_ops, self.max_ops - 1)


# The out-of-distribution splits by name (``learner.dataset.ood: new-names``); a mapping of Difficulty
# fields gives any other. The base policy's greedy accuracy on each (200 problems; 0.32 in distribution)
# is in the comments: it reads its numbers from fixed places in a fixed template, two digits for the
# opening amount, so every shift costs it almost everything (docs/analysis.md).
OOD_SPLITS: dict[str, Difficulty] = {
    # Four and five operations: longer than anything in training (the default, the first comparisons' split). 0.005.
    "longer": Difficulty(min_ops=4, max_ops=5),
    # Training's lengths on a three-digit opening amount. 0.000.
    "three-digit-start": Difficulty(min_ops=2, max_ops=3, min_start=100, max_start=899),
    # Training's lengths on a one-digit opening amount. 0.015.
    "one-digit-start": Difficulty(min_ops=2, max_ops=3, min_start=1, max_start=9),
    # Training's stories told in other sentences. 0.015.
    "retold": Difficulty(min_ops=2, max_ops=3, wording="retold"),
    # Training's sentences about people and things training never names: the mildest shift, chosen for the
    # third comparison before any run. 0.030.
    "new-names": Difficulty(min_ops=2, max_ops=3, wording="new-names"),
}


class ArithmeticDataset(BaseModel):
    """Sizes and difficulties of each split; ``seed`` makes every problem reproducible."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    # A few three-step stories in the warm-up: without them the base policy never writes a third line,
    # solves none of the training split's three-step problems and RL there has no reward signal.
    warmup: Difficulty = Difficulty(min_ops=1, max_ops=3, max_ops_share=0.05)
    train: Difficulty = Difficulty(min_ops=2, max_ops=3)
    test: Difficulty = Difficulty(min_ops=2, max_ops=3)
    ood: Difficulty = OOD_SPLITS["longer"]  # or a name of OOD_SPLITS
    train_size: int = Field(20_000, ge=1)
    test_size: int = Field(200, ge=1)
    ood_size: int = Field(200, ge=1)
    warmup_size: int = Field(20_000, ge=1)
    # Style of the train, test and ood demonstrations; the warm-up split keeps the base policy's own
    # (column) style whatever this says, since it is what makes the base policy.
    demonstrations: DemoStyle = "column"

    @field_validator("ood", mode="before")
    @classmethod
    def _named_ood(cls, value: object) -> object:
        if isinstance(value, str):
            if value not in OOD_SPLITS:
                raise ValueError(f"unknown ood split {value!r}; known: {', '.join(OOD_SPLITS)}")
            return OOD_SPLITS[value]
        return value

    @property
    def ood_name(self) -> str:
        """The OOD split's name in OOD_SPLITS, or its description when it is none of them."""
        return next((name for name, split in OOD_SPLITS.items() if split == self.ood), self.ood.describe())

    def problems(self, split: Split) -> list[Problem]:
        if split == "train":
            # Held-out test stories never appear in training.
            held_out = self._test_keys
            out: list[Problem] = []
            index = 0
            while len(out) < self.train_size:
                key, problem = self._make("train", index, self.train)
                index += 1
                if key not in held_out:
                    out.append(problem)
            return out
        difficulty, size = {
            "warmup": (self.warmup, self.warmup_size),
            "test": (self.test, self.test_size),
            "ood": (self.ood, self.ood_size),
        }[split]
        return [self._make(split, i, difficulty)[1] for i in range(size)]

    @cached_property
    def _test_keys(self) -> frozenset:
        return frozenset(self._make("test", i, self.test)[0] for i in range(self.test_size))

    def _make(self, split: str, index: int, difficulty: Difficulty) -> tuple[tuple, Problem]:
        digest = hashlib.sha256(f"{self.seed}:{split}:{index}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "little"))
        story = Story.sample(rng, difficulty)
        style = "column" if split == "warmup" else self.demonstrations
        problem = Problem(
            id=f"arith-{self.seed}-{split}-{index}",
            prompt=story.question(),
            answer=str(story.answer),
            demonstrations=(story.demonstration(style),),
        )
        return story.key, problem


class Story(BaseModel):
    """A start amount followed by signed changes, e.g. 47, +25, -18."""

    model_config = ConfigDict(frozen=True)

    name: str
    item: str
    start: int
    changes: tuple[tuple[str, int], ...]  # (verb, signed amount)
    wording: Wording = "plain"

    @classmethod
    def sample(cls, rng: random.Random, difficulty: Difficulty) -> Story:
        n_ops = difficulty.sample_ops(rng)
        total = rng.randint(difficulty.min_start, difficulty.max_start)
        start = total
        changes = []
        for _ in range(n_ops):
            gain = total == 0 or (rng.random() < 0.5 and total + 1 <= difficulty.max_value)
            if gain:
                amount = rng.randint(1, min(difficulty.max_operand, difficulty.max_value - total))
                changes.append((rng.choice(GAIN_VERBS), amount))
                total += amount
            else:
                amount = rng.randint(1, min(difficulty.max_operand, total))
                changes.append((rng.choice(LOSS_VERBS), -amount))
                total -= amount
        names, items = (NEW_NAMES, NEW_ITEMS) if difficulty.wording == "new-names" else (NAMES, ITEMS)
        name, item = rng.choice(names), rng.choice(items)
        return cls(name=name, item=item, start=start, changes=tuple(changes), wording=difficulty.wording)

    @property
    def key(self) -> tuple:
        return (self.start, tuple(amount for _, amount in self.changes))

    @property
    def answer(self) -> int:
        return self.start + sum(amount for _, amount in self.changes)

    def question(self) -> str:
        if self.wording == "retold":
            sentences = [f"{self.name} starts out with {self.start} {self.item}."]
            sentences += [f"Next, {self.name} {verb} {abs(amount)}." for verb, amount in self.changes]
            sentences.append(f"How many {self.item} are with {self.name} in the end? {INSTRUCTION}")
            return " ".join(sentences)
        sentences = [f"{self.name} has {self.start} {self.item}."]
        for verb, amount in self.changes:
            sentences.append(f"Then {self.name} {verb} {abs(amount)}.")
        sentences.append(f"How many {self.item} does {self.name} have now? {INSTRUCTION}")
        return " ".join(sentences)

    def demonstration(self, style: DemoStyle = "column") -> str:
        if style == "verified":
            return self._verified()
        lines = [f"{self.name} starts with {self.start} {self.item}."] if style == "teacher" else []
        total = self.start
        for verb, amount in self.changes:
            if style == "teacher":
                sign = "+" if amount >= 0 else "-"
                lines.append(f"{self.name} {verb} {abs(amount)}, so {total} {sign} {abs(amount)} = {total + amount}.")
                total += amount
            else:
                line, total = column_step(total, amount)
                lines.append(line)
        lines.append(f"The answer is \\boxed{{{total}}}.")
        return "\n".join(lines)

    def _verified(self) -> str:
        """The column work, then what a more careful solver adds: the result restated in the story's words
        and checked by undoing every change in one go, back to the opening amount."""
        lines, totals = [], [self.start]
        for _, amount in self.changes:
            line, total = column_step(totals[-1], amount)
            lines.append(line)
            totals.append(total)
        undo = ", ".join(
            f"{after}{'-' if amount >= 0 else '+'}{abs(amount)}={before}"
            for (_, amount), before, after in reversed(list(zip(self.changes, totals, totals[1:])))
        )
        lines.append(f"So {self.name} has {totals[-1]} {self.item} now. Check backwards: {undo}, as in the story.")
        lines.append(f"The answer is \\boxed{{{totals[-1]}}}.")
        return "\n".join(lines)


def column_step(total: int, amount: int) -> tuple[str, int]:
    """One operation worked digit by digit from the ones column, e.g. ``72-18: 12-8=4, 6-1=5, so 54.``"""
    if amount >= 0:
        return _column_add(total, amount), total + amount
    return _column_sub(total, -amount), total + amount


def _digits(value: int, width: int) -> list[int]:
    return [(value // 10**i) % 10 for i in range(width)]


def _column_add(a: int, b: int) -> str:
    width = max(len(str(a)), len(str(b)))
    da, db = _digits(a, width), _digits(b, width)
    carry, parts = 0, []
    for x, y in zip(da, db):
        column = x + y + carry
        parts.append(f"{x}+{y}+{carry}={column}" if carry else f"{x}+{y}={column}")
        carry = column // 10
    return f"{a}+{b}: {', '.join(parts)}, so {a + b}."


def _column_sub(a: int, b: int) -> str:
    width = len(str(a))
    da, db = _digits(a, width), _digits(b, width)
    borrow, parts = 0, []
    for i, (x, y) in enumerate(zip(da, db)):
        x -= borrow
        if i > 0 and y == 0 and borrow == 0 and all(d == 0 for d in db[i:]):
            break  # nothing left to subtract: the remaining digits are copied
        borrow = 1 if x < y else 0
        top = x + 10 * borrow
        parts.append(f"{top}-{y}={top - y}")
    return f"{a}-{b}: {', '.join(parts)}, so {a - b}."
