import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from pydantic import ValidationError

from launcher.config import JobConfig
from shared.data import (
    PAPER_INSTRUCTION,
    ColumnMapping,
    DataFormatError,
    DataSettings,
    PromptSettings,
    heldout_problems,
    load_problems,
    training_problems,
)
from shared.settings import SettingsError, parse_sets


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


# ---- benchmark layouts -------------------------------------------------------------------------------


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_math500_layout_keeps_the_answer_column_and_the_solution_as_demonstration(tmp_path):
    path = write_jsonl(tmp_path / "math500.jsonl", [{
        "problem": "Compute $\\frac{1}{2}+\\frac{1}{2}$.", "solution": "It is $\\boxed{1}$.", "answer": "1",
        "subject": "Algebra", "level": 1, "unique_id": "test/algebra/1.json",
    }])
    (problem,) = load_problems(path)
    assert (problem.id, problem.answer) == ("test/algebra/1.json", "1")
    assert problem.demonstrations == ("It is $\\boxed{1}$.",)


def test_gsm8k_answer_after_four_hashes_is_the_reference(tmp_path):
    path = tmp_path / "gsm8k.parquet"
    answer = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n48+24 = <<48+24=72>>72\n#### 1,072"
    pq.write_table(pa.Table.from_pylist([{"question": "How many clips?", "answer": answer}]), path)
    (problem,) = load_problems(path)
    assert problem.answer == "1072"
    assert problem.prompt.startswith("How many clips?")


def test_aime_capitalised_columns_and_amc_float_answers(tmp_path):
    aime = write_jsonl(tmp_path / "aime.jsonl", [{"ID": "2024-I-1", "Problem": "Find m+n.", "Answer": 204}])
    amc = write_jsonl(tmp_path / "amc.jsonl", [{"problem": "Find x.", "answer": 142.0, "url": "u"}])
    assert load_problems(aime)[0].answer == "204"
    assert load_problems(amc)[0].answer == "142"


def test_a_solution_alone_gives_its_last_box_as_the_answer(tmp_path):
    solution = "so \\boxed{2} no, \\boxed{\\frac{3}{4}}"
    path = write_jsonl(tmp_path / "math.jsonl", [{"problem": "p", "solution": solution}])
    assert load_problems(path)[0].answer == "\\frac{3}{4}"


def test_a_boxed_answer_column_is_unboxed(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"problem": "p", "answer": "$\\boxed{x^{2}}$"}])
    assert load_problems(path)[0].answer == "x^{2}"


# ---- mappings and prompts ----------------------------------------------------------------------------


def test_a_column_mapping_reads_other_names_and_the_verifier_column(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"q": "What is 2+3?", "gold": "5", "trace": "2+3=5 \\boxed{5}", "check": "format"},
        {"q": "What is 1+3?", "gold": "4", "trace": "\\boxed{4}", "check": None},
    ])
    columns = ColumnMapping(problem="q", answer="gold", demonstrations="trace", verifier="check")
    first, second = load_problems(path, columns, verifier="math")
    assert (first.prompt.split("\n")[0], first.answer) == ("What is 2+3?", "5")
    assert first.demonstrations == ("2+3=5 \\boxed{5}",)
    assert (first.verifier, second.verifier) == ("format", "math")  # the row's own, else the file's


def test_a_mapped_column_the_file_lacks_is_refused_when_settings_are_read(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"problem": "p", "answer": "1"}])
    with pytest.raises(ValidationError, match=r"columns.problem = 'q'.*no column 'q' \(its columns: answer, problem\)"):
        DataSettings(path=path, columns={"problem": "q"})
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"problem": "p", "answer": "1"}]), parquet)
    with pytest.raises(ValidationError, match="no column 'gold'"):
        DataSettings.model_validate({"path": str(parquet), "columns": {"answer": "gold"}})
    assert DataSettings.model_validate(str(path)).path == path  # a plain string is the path


def test_instruction_presets_and_templates():
    assert PromptSettings().user_message("Find x.") == "Find x.\n" + PAPER_INSTRUCTION
    assert PromptSettings(instruction="none").user_message("Find x.") == "Find x."
    custom = PromptSettings(instruction="Solve: {problem}\nAnswer in \\boxed{}.")
    assert custom.user_message("2+{2}") == "Solve: 2+{2}\nAnswer in \\boxed{}."
    assert PromptSettings().user_message("Find x. " + PAPER_INSTRUCTION) == "Find x. " + PAPER_INSTRUCTION
    with pytest.raises(ValidationError, match="neither a preset"):
        PromptSettings(instruction="Think hard.")
    with pytest.raises(ValidationError, match="chat template file not found"):
        PromptSettings(chat_template="/nonexistent/template.jinja")


def test_the_verl_layout_keeps_its_system_turn_unless_a_system_prompt_is_set(tmp_path):
    path = tmp_path / "luffy.parquet"
    pq.write_table(pa.Table.from_pylist([{
        "prompt": [{"role": "system", "content": "Think first."}, {"role": "user", "content": "Find x."}],
        "reward_model": {"ground_truth": "3", "style": "rule"},
    }]), path)
    (kept,) = load_problems(path)
    assert kept.system == "Think first." and kept.prompt == "Find x."
    assert kept.messages() == [{"role": "system", "content": "Think first."}, {"role": "user", "content": "Find x."}]
    (replaced,) = load_problems(path, prompt=PromptSettings(system_prompt="Be brief."))
    assert replaced.system == "Be brief."


def test_held_out_rows_are_never_training_rows(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"problem": f"p{i}", "answer": str(i)} for i in range(50)])
    data = DataSettings(path=path, holdout=10)
    train, held = training_problems(data, PromptSettings()), heldout_problems(data, PromptSettings())
    assert len(train) == 40 and len(held) == 10
    assert not {p.id for p in train} & {p.id for p in held}
    assert held == heldout_problems(data, PromptSettings())  # every process draws the same rows
    with pytest.raises(DataFormatError, match="leaves nothing to train on"):
        training_problems(DataSettings(path=path, holdout=50), PromptSettings())


def test_learner_settings_take_the_data_section_from_yaml_and_set(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"q": "p", "gold": "1"}])
    config = tmp_path / "job.yaml"
    learner = {"data": {"path": str(path), "columns": {"problem": "q"}}, "prompt": {"instruction": "none"}}
    config.write_text(yaml.safe_dump({"learner": learner}))
    sets = parse_sets(["learner.data.columns.answer=gold", "learner.prompt.system_prompt=Hi"])
    job = JobConfig.load(config, sets=sets)
    (problem,) = training_problems(job.learner.data, job.learner.prompt)
    assert (problem.prompt, problem.answer, problem.system) == ("p", "1", "Hi")
    with pytest.raises(SettingsError, match="no column 'nope'"):
        JobConfig.load(config, sets=parse_sets(["learner.data.columns.answer=nope"]))


def test_the_data_file_from_an_env_var_as_a_path_or_by_key(tmp_path, monkeypatch):
    from services.learner.settings import LearnerSettings
    from shared.settings import load_settings

    monkeypatch.setenv("PRFT_LEARNER__DATA", "/data/f.parquet")
    assert str(load_settings(LearnerSettings).data.path) == "/data/f.parquet"
    monkeypatch.delenv("PRFT_LEARNER__DATA")
    monkeypatch.setenv("PRFT_LEARNER__DATA__HOLDOUT", "7")
    assert load_settings(LearnerSettings).data.holdout == 7
