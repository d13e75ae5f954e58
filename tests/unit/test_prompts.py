"""The prompt a problem becomes: its system turn and instruction reach the token ids, through the
tokenizer's chat template or one given as a file; bad data settings stop a command with a message."""

import json

from typer.testing import CliRunner

from launcher.cli import app
from shared.data import PromptSettings
from shared.modeling import load_tokenizer, prompt_token_ids
from shared.problems import Problem


def said(result) -> str:
    """The command's output with the terminal's line wrapping undone."""
    return " ".join(result.output.split())


def test_a_template_without_a_system_turn_gets_the_system_prompt_in_the_user_turn(default_init_dir):
    tokenizer = load_tokenizer(default_init_dir)  # the built-in template renders user and assistant turns only
    problem = Problem(id="p", prompt="What is 2+2?\nPut the answer in \\boxed{}.", answer="4", system="Be brief.")
    text = tokenizer.decode(prompt_token_ids(tokenizer, problem.messages()))
    assert "Be brief." in text and text.index("Be brief.") < text.index("What is 2+2?")
    plain = Problem(id="p", prompt="What is 2+2?", answer="4")
    assert prompt_token_ids(tokenizer, plain.messages()) == prompt_token_ids(tokenizer, "What is 2+2?")


def test_a_chat_template_file_replaces_the_tokenizers(default_init_dir, tmp_path):
    template = tmp_path / "chat.jinja"
    template.write_text(
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    tokenizer = PromptSettings(chat_template=template).apply_to(load_tokenizer(default_init_dir))
    problem = Problem(id="p", prompt="Find x.", answer="1", system="Think first.")
    text = tokenizer.decode(prompt_token_ids(tokenizer, problem.messages()))
    assert text.replace(" ", "").startswith("[system]Thinkfirst.\n[user]Findx.\n[assistant]")


def test_a_run_whose_mapping_names_a_missing_column_stops_before_anything_starts(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "q", "gold": "1"}) + "\n")
    out = tmp_path / "run"
    args = ["run", "--data", str(data), "--out", str(out), "--set", "learner.data.columns.answer=answer_text"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "no column 'answer_text' (its columns: gold, question)" in said(result)
    assert isinstance(result.exception, SystemExit) and not out.exists()


def test_eval_names_a_benchmark_it_cannot_read(tmp_path):
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 2 and "missing.jsonl' is neither id nor ood nor an existing data file" in said(result)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "q"}) + "\n")
    result = CliRunner().invoke(app, ["eval", str(bad), "--k", "0"])
    assert result.exit_code == 2 and "missing column 'problem'" in said(result), result.output
    assert isinstance(result.exception, SystemExit)
