"""docs/custom-task.md is a script tests/e2e/test_custom_task.py runs: what it writes and runs is read
from the Markdown, and its verifier package is the one the plug-in tests install."""

from __future__ import annotations

from tests.helpers.guide import GUIDE, guide_commands, guide_files
from tests.helpers.plugins import PLUGIN_SOURCE


def test_the_guides_package_is_the_one_in_tests():
    files = guide_files(GUIDE.read_text())
    for name in ("pyproject.toml", "prefix_rft_within_one.py"):
        assert files[f"within_one/{name}"] == (PLUGIN_SOURCE / name).read_text()


def test_the_guide_goes_from_its_files_to_a_training_run():
    text = GUIDE.read_text()
    assert set(guide_files(text)) == {
        "within_one/pyproject.toml", "within_one/prefix_rft_within_one.py", "problems.jsonl", "task.yaml"
    }
    commands = guide_commands(text)
    assert commands[0] == ".venv/bin/pip install -e within_one"
    assert commands[-1].startswith(".venv/bin/prefix-rft run --data problems.jsonl --config task.yaml")
    assert len(commands) == 2  # ```console blocks (a server left running, a real model) are not run


def test_files_and_commands_are_read_from_fenced_blocks_only():
    text = '```python title="a/b.py"\nx = 1\n```\n\n```bash\n# a comment\necho hi\n\necho there\n```\n' \
           "```console\n$ curl x\n```\n    indented = 'not a fence'\n"
    assert guide_files(text) == {"a/b.py": "x = 1\n"}
    assert guide_commands(text) == ["echo hi", "echo there"]
