"""Loading real data sets and benchmarks: Parquet, JSONL or JSON files.

Layouts understood without a mapping (column names matched case-insensitively):
- flat columns: the problem in ``problem`` / ``question`` / ``prompt`` (text); the reference in
  ``answer`` / ``ground_truth`` (MATH-500, AIME, AMC), where a ``\\boxed{}`` or a GSM8K-style
  ``#### 72`` tail is reduced to the answer itself, or else the ``\\boxed{}`` of ``solution``;
  demonstrations in ``solution`` / ``demonstration`` (text) or ``demonstrations`` / ``solutions`` (list);
- the verl / LUFFY layout of OpenR1-Math-46k: ``prompt`` (chat messages, whose system turn is kept),
  ``target`` (chat messages with the demonstration) and ``reward_model.ground_truth``.
A :class:`ColumnMapping` names other columns; a mapped column the file lacks is refused when the
settings are read, naming it. Missing required values are reported by row, with the columns found.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from shared.problems import Problem
from shared.settings import StrictModel

PROMPT_COLUMNS = ("problem", "question", "prompt")
ANSWER_COLUMNS = ("answer", "ground_truth", "reward_model", "final_answer", "expected_answer")
DEMO_COLUMNS = ("demonstrations", "solutions", "solution", "demonstration", "target")
ID_COLUMNS = ("id", "problem_id", "unique_id")
PAPER_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
# Instruction templates by name; ``{problem}`` stands for the problem's text.
INSTRUCTION_PRESETS = {"paper": "{problem}\n" + PAPER_INSTRUCTION, "none": "{problem}"}
SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".json")


class DataFormatError(ValueError):
    pass


class ColumnMapping(StrictModel):
    """Which column holds what; None: found by the usual names (see the module's docstring)."""

    problem: str | None = None
    answer: str | None = None
    demonstrations: str | None = None
    verifier: str | None = None  # a verifier name per row (the reward service's plug-in)
    id: str | None = None

    def named(self) -> dict[str, str]:
        return {role: column for role, column in self.model_dump().items() if column is not None}


class PromptSettings(StrictModel):
    """How a problem becomes the model's prompt."""

    # The system turn of every prompt. None: the data's own system turn (verl/LUFFY), else none.
    system_prompt: str | None = None
    # A preset name (paper, none) or a template holding {problem}; applied to text problems (a
    # chat-messages prompt is taken as its author wrote it). The built-in task has its own.
    instruction: str = "paper"
    # A Jinja chat template file used instead of the tokenizer's own; None: the tokenizer's.
    chat_template: Path | None = None

    @field_validator("instruction")
    @classmethod
    def _known_or_template(cls, value: str) -> str:
        if value not in INSTRUCTION_PRESETS and "{problem}" not in value:
            raise ValueError(
                f"neither a preset ({', '.join(INSTRUCTION_PRESETS)}) nor a template holding {{problem}}"
            )
        return value

    @field_validator("chat_template")
    @classmethod
    def _template_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"chat template file not found: {value}")
        return value

    @property
    def template(self) -> str:
        return INSTRUCTION_PRESETS.get(self.instruction, self.instruction)

    def user_message(self, problem: str) -> str:
        template = self.template
        instruction = template.replace("{problem}", "").strip()
        if instruction and instruction in problem:  # the data already carries it
            return problem
        # replace(), not format(): templates hold \boxed{} and problems hold braces.
        return template.replace("{problem}", problem)

    def apply_to(self, tokenizer) -> Any:
        """``tokenizer`` with this chat template file, if one is set."""
        if self.chat_template is not None:
            tokenizer.chat_template = self.chat_template.read_text()
        return tokenizer


class DataSettings(StrictModel):
    """A data file and how to read it (``learner.data``; a plain string is the path)."""

    path: Path | None = None  # None: the built-in arithmetic task
    columns: ColumnMapping = ColumnMapping()
    verifier: str | None = None  # every row's verifier, unless a verifier column names one
    # Rows kept out of training (a seeded sample of the file) for evaluation; 0: train on every row.
    holdout: int = Field(0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _path_shorthand(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, (str, Path)) else data

    @model_validator(mode="after")
    def _mapping_fits_file(self) -> DataSettings:
        # Checked when the settings are read, so a bad mapping stops start-up before any process runs.
        if self.path is not None:
            check_mapping(self.path, self.columns)
        return self


# ---------------------------------------------------------------------------------------------- loading


def load_problems(
    path: str | Path,
    columns: ColumnMapping = ColumnMapping(),
    prompt: PromptSettings = PromptSettings(),
    verifier: str | None = None,
) -> list[Problem]:
    """Every row of ``path`` as a problem, its prompt built by ``prompt``."""
    path = Path(path)
    rows = list(read_rows(path))
    if not rows:
        raise DataFormatError(f"{path} holds no rows")
    check_mapping(path, columns, rows)
    return [_to_problem(row, index, path, columns, prompt, verifier) for index, row in enumerate(rows)]


def load_data(data: DataSettings, prompt: PromptSettings) -> list[Problem]:
    if data.path is None:
        raise ValueError("no data file set (learner.data.path)")
    return load_problems(data.path, data.columns, prompt, data.verifier)


def split_holdout(problems: Sequence[Problem], holdout: int, seed: int = 0) -> tuple[list[Problem], list[Problem]]:
    """(training rows, held-out rows): ``holdout`` rows drawn by ``seed``, the same in every process that
    asks, so the learner never trains on what the launcher evaluates."""
    if holdout == 0:
        return list(problems), []
    if holdout >= len(problems):
        raise DataFormatError(
            f"holding out {holdout} of {len(problems)} rows leaves nothing to train on; "
            "lower the evaluation size or give --eval-data"
        )
    held = set(random.Random(seed).sample(range(len(problems)), holdout))
    train = [p for i, p in enumerate(problems) if i not in held]
    return train, [problems[i] for i in sorted(held)]


def training_problems(data: DataSettings, prompt: PromptSettings) -> list[Problem]:
    return split_holdout(load_data(data, prompt), data.holdout)[0]


def heldout_problems(data: DataSettings, prompt: PromptSettings) -> list[Problem]:
    return split_holdout(load_data(data, prompt), data.holdout)[1]


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()
    elif suffix in (".jsonl", ".ndjson"):
        with path.open() as handle:
            for line_no, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataFormatError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from exc
    elif suffix == ".json":
        document = json.loads(path.read_text())
        if not isinstance(document, list):
            raise DataFormatError(f"{path}: a .json data file must hold a list of rows")
        yield from document
    else:
        raise DataFormatError(f"{path}: unsupported data format '{suffix}' (use .parquet, .jsonl or .json)")


def column_names(path: Path) -> list[str]:
    """The file's columns: a Parquet file's schema, else the first row's keys."""
    if path.suffix.lower() == ".parquet" and path.is_file():
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    first = next(iter(read_rows(path)), None)
    return list(first) if isinstance(first, dict) else []


def check_mapping(path: Path, columns: ColumnMapping, rows: Sequence[dict[str, Any]] | None = None) -> None:
    named = columns.named()
    if not named:
        return
    found = set(column_names(path)) if rows is None else {key for row in rows[:1] for key in row}
    for role, column in named.items():
        if column not in found:
            raise DataFormatError(
                f"columns.{role} = {column!r}: {path} has no column {column!r} "
                f"(its columns: {', '.join(sorted(found))})"
            )


def _to_problem(
    row: dict[str, Any], index: int, path: Path, columns: ColumnMapping, prompt: PromptSettings, verifier: str | None
) -> Problem:
    if not isinstance(row, dict):
        raise DataFormatError(f"{path} row {index}: expected an object, got {type(row).__name__}")
    where = f"{path} row {index}"
    prompt_value = _value(row, columns.problem, PROMPT_COLUMNS, where, required=True)
    text, system = _user_text(prompt_value, where)
    if not isinstance(prompt_value, list):
        text = prompt.user_message(text)
    answer_value = _value(row, columns.answer, ANSWER_COLUMNS, where, required=False)
    demos = _demonstrations(_value(row, columns.demonstrations, DEMO_COLUMNS, where, required=False))
    if answer_value is None:  # MATH-style rows with only a worked solution: its \boxed{} is the answer
        boxed = [b for b in map(last_boxed, demos) if b]
        if not boxed:
            _value(row, None, ANSWER_COLUMNS, where, required=True)  # raises, naming the columns
        answer_value = boxed[0]
    row_verifier = _value(row, columns.verifier, ("verifier",), where, required=False)
    row_id = _value(row, columns.id, ID_COLUMNS, where, required=False)
    return Problem(
        id=str(row_id if row_id not in (None, "") else f"{path.stem}-{index}"),
        prompt=text,
        answer=reference_answer(answer_value, where),
        demonstrations=tuple(demos),
        system=prompt.system_prompt if prompt.system_prompt is not None else system,
        verifier=str(row_verifier) if row_verifier else verifier,
    )


def _value(row: dict[str, Any], mapped: str | None, names: tuple[str, ...], where: str, required: bool) -> Any:
    if mapped is not None:
        if row.get(mapped) is None and required:
            raise DataFormatError(f"{where}: column {mapped!r} is empty")
        return row.get(mapped)
    lowered = {key.lower(): key for key in row if isinstance(key, str)}
    for name in names:
        key = lowered.get(name)
        if key is not None and row[key] is not None:
            return row[key]
    if required:
        raise DataFormatError(
            f"{where}: missing column '{names[0]}' (or any of {', '.join(names[1:])}); "
            f"found columns: {', '.join(sorted(map(str, row)))}"
        )
    return None


def _user_text(value: Any, where: str) -> tuple[str, str | None]:
    """(the problem's text, the system turn if the prompt is chat messages that have one)."""
    if isinstance(value, str) and value.strip():
        return value, None
    if isinstance(value, list):  # chat messages: the last user turn is the problem
        turns = [m for m in value if isinstance(m, dict)]
        users = [m.get("content") or "" for m in turns if m.get("role") == "user"]
        systems = [m.get("content") for m in turns if m.get("role") == "system" and m.get("content")]
        if users and users[-1]:
            return users[-1], systems[0] if systems else None
    raise DataFormatError(f"{where}: the prompt is neither text nor chat messages with a user turn")


def reference_answer(value: Any, where: str) -> str:
    """The answer a verifier compares with: a GSM8K ``... #### 72`` gives 72, a ``\\boxed{}`` its
    content, an integral number its digits (AMC files hold 142.0)."""
    if isinstance(value, dict):  # verl: reward_model = {"ground_truth": ..., "style": "rule"}
        value = value.get("ground_truth")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise DataFormatError(f"{where}: the answer is empty or not text")
    if "####" in value:
        value = value.rsplit("####", 1)[1].strip().replace(",", "")
    elif "\\boxed" in value:
        value = last_boxed(value) or value
    if not value.strip():
        raise DataFormatError(f"{where}: the answer is empty")
    return value.strip()


_BOX_TOKENS = re.compile(r"\\boxed\s*\{|\\.|[{}]", re.DOTALL)


def last_boxed(text: str) -> str | None:
    """The content of the last complete ``\\boxed{...}`` (braces nested), else None."""
    stack: list[int | None] = []
    last: str | None = None
    for match in _BOX_TOKENS.finditer(text):
        token = match.group()
        if token.startswith("\\boxed"):
            stack.append(match.end())
        elif token == "{":
            stack.append(None)
        elif token == "}" and stack:
            opened = stack.pop()
            if opened is not None and text[opened : match.start()].strip():
                last = text[opened : match.start()].strip()
    return last


def _demonstrations(value: Any) -> list[str]:
    if value is None:
        return []
    items: Iterable[Any] = value if isinstance(value, list) else [value]
    texts = []
    for item in items:
        if isinstance(item, dict):  # chat message
            if item.get("role", "assistant") == "assistant" and item.get("content"):
                texts.append(item["content"])
        elif isinstance(item, str) and item:
            texts.append(item)
    return texts


def with_system_prompt(problems: Sequence[Problem], prompt: PromptSettings) -> list[Problem]:
    """The built-in task's problems with the configured system turn (its instruction is its own)."""
    if prompt.system_prompt is None:
        return list(problems)
    return [p.model_copy(update={"system": prompt.system_prompt}) for p in problems]
