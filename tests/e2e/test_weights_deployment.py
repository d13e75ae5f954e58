"""Weights across a real deployment (issue 20): a DeepSpeed learner trains and publishes a version every
step while real vLLM workers take each one (by its delta when they hold the version before), a third
worker joins mid-run and takes a whole version, and every version a worker served answers greedy
requests exactly as transformers does on that version's folder (``tests.helpers.weights_run``), all on the
default transport (http: the learner serves the buckets); the ledger reconciles exactly. The ``s3``
transport's deployment is in ``test_weights_deployment_s3.py``.
"""

from __future__ import annotations

import pytest

from tests.helpers.faults import metric
from tests.helpers.weights_run import assert_greedy_is_transformers, assert_reconciles, train_job

pytestmark = [pytest.mark.integration]

HTTP_STEPS = 5


@pytest.fixture(scope="module")
def http_run(tmp_path_factory, default_base_dir):
    weights = {"transport": "http", "full_every": 1000}  # deltas for every version after v0
    run = train_job(tmp_path_factory.mktemp("deploy-http"), default_base_dir, HTTP_STEPS, weights, workers=2,
                    join=True)
    yield run
    run.deployment.stop()


def test_http_every_version_served_is_greedy_equal_to_transformers(http_run):
    run = http_run
    assert run.final.step == HTTP_STEPS and run.final.version == HTTP_STEPS
    versions = set(range(run.final.version + 1))
    assert {int(p.name[1:]) for p in run.weights.glob("v*")} >= versions
    assert not run.watcher.errors, run.watcher.errors
    assert_greedy_is_transformers(run, versions)


def test_http_workers_took_deltas_and_the_joiner_a_whole_version(http_run):
    run = http_run
    for url in run.initial:
        assert metric(url, "rollout_weight_fetches_total", path="delta") > 0, f"{url} never took a delta"
    # The joiner started after v1, while the job ran: the job's version came whole (it held no base),
    # and it went on to serve the versions published after it joined.
    assert run.joined_at is not None and run.joined_at >= 1
    assert metric(run.joiner, "rollout_weight_fetches_total", path="full") >= 1
    served = run.watcher.versions(run.joiner)
    assert max(served) == run.final.version > run.joined_at, served


def test_http_run_reconciles_exactly(http_run):
    assert_reconciles(http_run, HTTP_STEPS)
