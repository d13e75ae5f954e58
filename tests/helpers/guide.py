"""docs/custom-task.md as a script: the files it shows (fenced blocks with ``title="path"``) and the
shell commands it runs (```bash blocks), in order; ```console blocks are for reading only."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "custom-task.md"
_TITLE = re.compile(r'title="([^"]+)"')


def _fences(text: str) -> list[tuple[str, str]]:
    """(info string, content) of every fenced block."""
    return [(token.info.strip(), token.content) for token in MarkdownIt().parse(text) if token.type == "fence"]


def guide_files(text: str) -> dict[str, str]:
    """The files the guide has the reader write: path -> content."""
    return {match.group(1): content for info, content in _fences(text) if (match := _TITLE.search(info))}


def guide_commands(text: str) -> list[str]:
    """The ```bash blocks' commands, in order (a block may hold several lines)."""
    return [line for info, content in _fences(text) if info.split()[:1] == ["bash"]
            for line in content.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def guide_venv(folder: Path) -> Path:
    """A fresh ``.venv`` for the guide's ``.venv/bin/...`` commands: its own site-packages (so the plug-in
    is installed there, never into the environment the rest of the suite shares), over this environment's
    packages; ``prefix-rft`` runs this checkout's code (PYTHONPATH), ``pip`` this environment's pip."""
    venv = folder / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = (venv / "lib").glob("python*/site-packages")
    # A .pth line starting with "import" runs: addsitedir also reads this environment's own .pth files.
    base = sysconfig.get_paths()["purelib"]
    (site / "_prefix_rft_base.pth").write_text(f"import site; site.addsitedir({base!r})\n")
    for name, module in (("pip", "pip"), ("prefix-rft", "launcher.cli")):
        script = venv / "bin" / name
        script.write_text(f'#!/bin/sh\nexec "$(dirname "$0")/python" -m {module} "$@"\n')
        script.chmod(0o755)
    return venv


def guide_env(extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           # pip builds the package with this environment's setuptools instead of downloading one.
           "PIP_NO_BUILD_ISOLATION": "0"}
    env.pop("VIRTUAL_ENV", None)
    return {**env, **extra}


def run_guide(folder: Path, env: dict[str, str], timeout: float) -> list[subprocess.CompletedProcess]:
    """Writes the guide's files into ``folder`` and runs its commands there, stopping at the first failure."""
    text = GUIDE.read_text()
    for path, content in guide_files(text).items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(content)
    guide_venv(folder)
    done = []
    for command in guide_commands(text):
        result = subprocess.run(command, shell=True, cwd=folder, env=env, capture_output=True, text=True,
                                timeout=timeout)
        done.append(result)
        if result.returncode != 0:
            break
    return done
