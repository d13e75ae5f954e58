"""Loading real data sets: OpenR1-Math-46k style Parquet, JSONL or JSON files.

Two layouts are understood:
- flat columns: ``problem`` (or ``question``/``prompt`` as text), ``answer``, and demonstrations
  in ``solution``/``demonstration`` (text) or ``demonstrations``/``solutions`` (list of texts);
- the verl / LUFFY layout of OpenR1-Math-46k: ``prompt`` (chat messages), ``target`` (chat
  messages with the demonstration) and ``reward_model.ground_truth``.
A missing column is reported by name, with the columns that were found.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from shared.problems import Problem

PROMPT_COLUMNS = ("problem", "question", "prompt")
ANSWER_COLUMNS = ("answer", "ground_truth", "reward_model")
DEMO_COLUMNS = ("demonstrations", "solutions", "solution", "demonstration", "target")
DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


class DataFormatError(ValueError):
    pass


def load_problems(path: str | Path, instruction: str | None = DEFAULT_INSTRUCTION) -> list[Problem]:
    """Read every row of ``path``; ``instruction`` is appended to plain-text problems."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    rows = list(_read_rows(path))
    if not rows:
        raise DataFormatError(f"{path} holds no rows")
    return [_to_problem(row, index, path, instruction) for index, row in enumerate(rows)]


def _read_rows(path: Path) -> Iterator[dict[str, Any]]:
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


def _to_problem(row: dict[str, Any], index: int, path: Path, instruction: str | None) -> Problem:
    if not isinstance(row, dict):
        raise DataFormatError(f"{path} row {index}: expected an object, got {type(row).__name__}")
    where = f"{path} row {index}"
    prompt_value = _first(row, PROMPT_COLUMNS, where, required=True)
    prompt = _user_text(prompt_value, where)
    if instruction and not isinstance(prompt_value, list) and instruction not in prompt:
        prompt = f"{prompt}\n{instruction}"
    answer = _answer(_first(row, ANSWER_COLUMNS, where, required=True), where)
    demonstrations = _demonstrations(_first(row, DEMO_COLUMNS, where, required=False))
    problem_id = str(row.get("id") or row.get("problem_id") or f"{path.stem}-{index}")
    return Problem(id=problem_id, prompt=prompt, answer=answer, demonstrations=tuple(demonstrations))


def _first(row: dict[str, Any], names: tuple[str, ...], where: str, required: bool) -> Any:
    for name in names:
        if row.get(name) is not None:
            return row[name]
    if required:
        raise DataFormatError(
            f"{where}: missing column '{names[0]}' (or any of {', '.join(names[1:])}); "
            f"found columns: {', '.join(sorted(row))}"
        )
    return None


def _user_text(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # chat messages: the last user turn is the problem
        users = [m.get("content", "") for m in value if isinstance(m, dict) and m.get("role") == "user"]
        if users and users[-1]:
            return users[-1]
    raise DataFormatError(f"{where}: the prompt is neither text nor chat messages with a user turn")


def _answer(value: Any, where: str) -> str:
    if isinstance(value, dict):  # verl: reward_model = {"ground_truth": ..., "style": "rule"}
        value = value.get("ground_truth")
    if isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise DataFormatError(f"{where}: the answer is empty or not text")
    return value


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
