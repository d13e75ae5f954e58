"""Keep packages a rollout process never uses out of it (``rollout.hide_packages``).

transformers imports scikit-learn (assisted generation) and SciPy (detection losses, audio and vision
processors) whenever they are installed, and vLLM imports transformers. A rollout process uses
neither, but where they are installed (lm-eval-harness, in the same environment, brings both) the rollout
process and its engine core each import them on the way to readiness: a worker then took 11 s from
start to ``/readyz`` on a quiet two-core machine instead of 7 s (docs/benchmarks.md, "Rollout service").

A name mapped to None in ``sys.modules`` is Python's own way to make an import fail: ``import scipy``
raises ModuleNotFoundError and ``importlib.util.find_spec("scipy")`` answers None, which is how
transformers decides a package is not installed (vLLM's optional SciPy import falls back the same way).
Hidden first thing in the rollout process and in the forkserver its engine core is forked from, so
nothing has imported them yet.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

# How the rollout process hands its setting to the forkserver (started with this process's environment).
ENV = "PRFT_ROLLOUT_HIDDEN_PACKAGES"


def hide(names: Iterable[str]) -> None:
    """Make each top-level package unimportable in this process and the processes it forks (one already
    imported stays)."""
    names = [name for name in names if name]
    for name in names:
        sys.modules.setdefault(name, None)
    os.environ[ENV] = ",".join(names)


def hide_inherited() -> None:
    """In the forkserver: hide what the rollout process hid."""
    hide(os.environ.get(ENV, "").split(","))
