"""--set on the command line: a bad key stops a command with a message naming it (exit code 2, no
traceback, nothing started), whether it runs a whole job or one service."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from launcher.cli import app


def test_run_with_an_unknown_setting_stops_before_anything_starts(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--steps", "3", "--set", "learner.nope=1", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "learner.nope: unknown setting" in result.output
    assert isinstance(result.exception, SystemExit)  # a message, not an exception's trace
    assert not out.exists()


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["run", "--set", "learner.optimizer.lr"], "expected SECTION.KEY=VALUE"),
        (["eval", "--set", "rollout.max_model_len=long"], "rollout.max_model_len"),
        (["compare", "--set", "lerner.seed=1"], "unknown section(s) lerner"),
        (["reward", "--set", "reward.nope=1"], "reward.nope: unknown setting"),
        (["rollout", "--set", "learner.seed=1"], "learner: not read by the rollout service"),
        (["learner", "--set", "learner.optimizer.lr=fast"], "learner.optimizer.lr"),
    ],
)
def test_every_command_that_takes_settings_names_a_bad_set(command, message):
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2 and message in result.output, result.output
    assert isinstance(result.exception, SystemExit)


def test_a_service_module_is_the_same_program_as_its_subcommand():
    # python -m services.reward parses its own command line: no launcher involved.
    done = subprocess.run(
        [sys.executable, "-m", "services.reward", "--port", "80x"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "--port: invalid int value" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "services.reward", "--set", "reward.workers=0"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2 and "reward.workers" in done.stderr and "Traceback" not in done.stderr
    help_text = CliRunner().invoke(app, ["reward", "--help"]).output
    assert "--set SECTION.KEY=VALUE" in help_text and "--item-timeout-s" in help_text
