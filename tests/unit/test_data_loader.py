import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.data import DataFormatError, load_problems


def test_flat_jsonl(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [
        {"problem": "What is 1+1?", "answer": "2", "solution": "1+1=2, \\boxed{2}"},
        {"problem": "What is 2+2?", "answer": 4},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    problems = load_problems(path)
    assert [p.answer for p in problems] == ["2", "4"]
    assert problems[0].demonstrations == ("1+1=2, \\boxed{2}",)
    assert not problems[1].has_demonstration
    assert problems[0].prompt.endswith("within \\boxed{}.")


def test_openr1_verl_layout_parquet(tmp_path):
    path = tmp_path / "openr1.parquet"
    table = pa.Table.from_pylist([
        {
            "data_source": "openr1",
            "prompt": [{"role": "system", "content": "sys"}, {"role": "user", "content": "Find x. \\boxed{}"}],
            "target": [{"role": "assistant", "content": "<think>...</think> \\boxed{3}"}],
            "reward_model": {"ground_truth": "3", "style": "rule"},
        }
    ])
    pq.write_table(table, path)
    (problem,) = load_problems(path)
    assert problem.prompt == "Find x. \\boxed{}"
    assert problem.answer == "3"
    assert problem.demonstrations == ("<think>...</think> \\boxed{3}",)


def test_several_demonstrations(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"question": "q", "answer": "1", "demonstrations": ["a \\boxed{1}", "b \\boxed{1}"]}]))
    assert len(load_problems(path)[0].demonstrations) == 2


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"problem": "q", "solution": "s"}) + "\n")
    with pytest.raises(DataFormatError, match=r"row 0: missing column 'answer'.*found columns: problem, solution"):
        load_problems(path)


def test_bad_json_line_is_located(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"problem": "q", "answer": "1"}) + "\n{oops\n")
    with pytest.raises(DataFormatError, match=r"d.jsonl:2"):
        load_problems(path)


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_problems(tmp_path / "none.jsonl")
    path = tmp_path / "d.csv"
    path.write_text("a,b\n")
    with pytest.raises(DataFormatError, match="unsupported data format '.csv'"):
        load_problems(path)
