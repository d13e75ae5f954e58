"""Model folders: a run's weights exported as a complete folder, and a folder without a usable
tokenizer refused with a message saying what is missing (by eval, the rollout service, the learner
and export), never a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from launcher.cli import app
from shared.modeling import ModelFolderError, check_model_folder, load_tokenizer
from shared.records import FINAL_FILE, FinalRecord


def weights_only(source: Path, target: Path) -> Path:
    """What a version directory held before versions were complete folders."""
    target.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(source / name, target / name)
    return target


def fake_run(tmp_path: Path, source: Path, versions: list[int], final: int | None) -> Path:
    run = tmp_path / "run"
    for version in versions:
        shutil.copytree(source, run / "learner" / "weights" / f"v{version}")
    if final is not None:
        record = FinalRecord(version=final, step=final, rank_digests=None)
        (run / "learner" / FINAL_FILE).write_text(record.model_dump_json())
    return run


def test_a_folder_without_a_tokenizer_is_refused_naming_what_is_missing(tmp_path, default_init_dir):
    folder = weights_only(default_init_dir, tmp_path / "v3")
    tokenizer_files = r"has no tokenizer files \(tokenizer.json, tokenizer.model or vocab.json\)"
    with pytest.raises(ModelFolderError, match=tokenizer_files):
        load_tokenizer(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match=r"has no weights \(model.safetensors\) and no tokenizer files"):
        check_model_folder(folder)
    with pytest.raises(ModelFolderError, match="no config.json"):
        check_model_folder(tmp_path)


def test_eval_refuses_an_incomplete_folder_with_a_message(tmp_path, default_init_dir):
    folder = weights_only(default_init_dir, tmp_path / "v3")
    result = CliRunner().invoke(app, ["eval", "--model", str(folder), "--split", "id"])
    assert result.exit_code == 2, result.output
    assert "tokenizer" in one_line(result.output) and "prefix-rft export" in one_line(result.output)
    assert isinstance(result.exception, SystemExit)  # a message, not an exception's trace


@pytest.mark.parametrize(("service", "setting"), [("rollout", "rollout.model"), ("learner", "learner.model")])
def test_a_service_refuses_an_incomplete_folder_before_it_starts(tmp_path, default_init_dir, service, setting):
    folder = weights_only(default_init_dir, tmp_path / "v3")
    done = subprocess.run(
        [sys.executable, "-m", f"services.{service}", "--set", f"{setting}={folder}"],
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{setting}: {folder} is not a complete model folder" in done.stderr
    assert "Traceback" not in done.stderr


def test_export_writes_the_final_version_as_a_complete_folder(tmp_path, default_init_dir):
    run = fake_run(tmp_path, default_init_dir, versions=[0, 2, 3], final=3)
    out = tmp_path / "exported"
    result = CliRunner().invoke(app, ["export", str(run), str(out)])
    assert result.exit_code == 0, result.output
    assert "exported v3" in result.output
    assert load_tokenizer(out).get_vocab() == load_tokenizer(default_init_dir).get_vocab()
    assert {p.name for p in out.iterdir()} >= {
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"
    }
    older = tmp_path / "v2"
    assert CliRunner().invoke(app, ["export", str(run), str(older), "--version", "2"]).exit_code == 0
    assert (older / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("versions", "final", "args", "message"),
    [
        ([0, 1], 1, ["--version", "7"], "no weights version 7 (versions on disk: v0, v1)"),
        ([0, 1], None, [], "the run has not finished (no learner/final.json); pass --version N"),
    ],
)
def test_export_names_what_is_there_when_asked_for_what_is_not(tmp_path, default_init_dir, versions, final, args,
                                                               message):
    run = fake_run(tmp_path, default_init_dir, versions, final)
    result = CliRunner().invoke(app, ["export", str(run), str(tmp_path / "out"), *args])
    assert result.exit_code == 2 and message in one_line(result.output), result.output


def test_export_refuses_an_incomplete_version_and_a_used_destination(tmp_path, default_init_dir):
    run = tmp_path / "run"
    weights_only(default_init_dir, run / "learner" / "weights" / "v5")
    result = CliRunner().invoke(app, ["export", str(run), str(tmp_path / "out"), "--version", "5"])
    assert result.exit_code == 2 and "tokenizer" in one_line(result.output), result.output
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    complete = fake_run(tmp_path / "other", default_init_dir, [1], final=1)
    result = CliRunner().invoke(app, ["export", str(complete), str(used)])
    assert result.exit_code == 2 and "not empty" in one_line(result.output)
    assert (used / "notes.txt").read_text() == "mine"
    missing = CliRunner().invoke(app, ["export", str(tmp_path / "nowhere"), str(tmp_path / "x")])
    assert missing.exit_code == 2 and "not a run directory" in one_line(missing.output)


def test_import_gguf_refuses_a_file_that_is_not_gguf(tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"PK\x03\x04 not a gguf file")
    result = CliRunner().invoke(app, ["import-gguf", str(bogus), str(tmp_path / "out")])
    assert result.exit_code == 2 and "not a GGUF file" in one_line(result.output)
    assert not (tmp_path / "out").exists()


def one_line(output: str) -> str:
    """The CLI's message as one line: it wraps long messages (a deep temporary path) at the terminal's width."""
    return " ".join(output.split())
