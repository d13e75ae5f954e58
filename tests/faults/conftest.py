"""The fault-injection suite's pytest hooks; what its tests use to wait on a deployment and read its
metrics and ledger is in tests/helpers/faults.py."""

from __future__ import annotations

# pytest's "incremental" recipe, for modules that set INCREMENTAL = True: the scenarios of one deployment
# run in order, each on the state the one before left; after a failure the rest are skipped rather than
# failing for the wrong reason.
_failed: dict[str, str] = {}


def pytest_runtest_makereport(item, call):
    if getattr(item.module, "INCREMENTAL", False) and call.excinfo is not None and call.when == "call":
        _failed.setdefault(str(item.path), item.name)


def pytest_runtest_setup(item):
    if getattr(item.module, "INCREMENTAL", False) and str(item.path) in _failed:
        import pytest

        pytest.skip(f"an earlier scenario of this deployment failed: {_failed[str(item.path)]}")
