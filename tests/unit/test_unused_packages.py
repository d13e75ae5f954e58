"""A rollout process hides the packages transformers would import for nothing (``rollout.hide_packages``):
transformers then finds them not installed, and the forkserver the engine core comes from hides the
same ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from services.rollout.settings import RolloutSettings
from services.rollout.unused_packages import ENV

# What transformers decides, and whether the packages were imported, after importing the modules that
# import them where installed (assisted generation: scikit-learn; detection losses: SciPy).
PROBE = """
import json, sys
{setup}
import transformers.generation.candidate_generator, transformers.loss.loss_for_object_detection
from transformers.utils import is_scipy_available, is_sklearn_available
print(json.dumps({{"available": [is_sklearn_available(), is_scipy_available()],
                  "imported": [sys.modules.get(name) is not None for name in ("sklearn", "scipy")]}}))
"""


def probe(setup: str, env: dict[str, str] | None = None) -> dict:
    code = PROBE.format(setup=setup)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_by_default_the_rollout_hides_scikit_learn_and_scipy():
    assert RolloutSettings().hide_packages == ["sklearn", "scipy"]


def test_hidden_packages_are_neither_available_to_transformers_nor_imported():
    # The premise: in this environment (lm-eval installs both) transformers imports them.
    assert probe("") == {"available": [True, True], "imported": [True, True]}
    hidden = "from services.rollout import unused_packages; unused_packages.hide(['sklearn', 'scipy'])"
    assert probe(hidden) == {"available": [False, False], "imported": [False, False]}


def test_the_forkserver_hides_what_the_rollout_process_hid():
    inherited = "from services.rollout import unused_packages; unused_packages.hide_inherited()"
    assert probe(inherited, env={ENV: "sklearn,scipy"}) == {"available": [False, False], "imported": [False, False]}
    assert probe(inherited, env={ENV: ""}) == {"available": [True, True], "imported": [True, True]}
