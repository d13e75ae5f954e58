"""The verifier plug-in package in tests/plugins/within_one, installed with pip as a user would."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

PLUGIN_SOURCE = Path(__file__).parents[1] / "plugins" / "within_one"
ENTRY_POINT = "within_one"  # registered by the package under prefix_rft.verifiers
PATH = "prefix_rft_within_one:strict_length"  # a function used by its module:function path


def install_plugin(root: Path) -> Path:
    """pip-installs the package into ``root/site`` (not the project's environment); put that directory
    on PYTHONPATH and Python finds the package and its entry points."""
    source = shutil.copytree(PLUGIN_SOURCE, root / "source")  # pip builds in place; keep tests/ clean
    site = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target",
         str(site), str(source)],
        check=True, capture_output=True, text=True,
    )
    return site
