"""Weights across a real deployment on the ``s3`` transport, against a real SeaweedFS: a DeepSpeed
learner uploads every version (and its delta) once, a real vLLM worker reads them with ranged GETs
(taking each delta, as it holds the version before), every version it served answers greedy requests
exactly as transformers does on that version's folder, and the ledger reconciles exactly. Its own
module, so that the http deployment of ``test_weights_deployment.py`` is down before this one starts.
"""

from __future__ import annotations

import pytest

from tests.helpers.faults import metric
from tests.helpers.weights_run import assert_greedy_is_transformers, assert_reconciles, train_job

pytestmark = [pytest.mark.integration]

S3_STEPS = 3


@pytest.fixture(scope="module")
def s3_run(tmp_path_factory, default_base_dir, seaweedfs):
    weights = {"transport": "s3", "full_every": 1000, "s3": {"bucket": seaweedfs.bucket, "prefix": "deployment"}}
    run = train_job(tmp_path_factory.mktemp("deploy-s3"), default_base_dir, S3_STEPS, weights, workers=1,
                    join=False, env=seaweedfs.env())
    yield run
    run.deployment.stop()


def test_s3_versions_are_greedy_equal_to_transformers_and_came_by_delta(s3_run):
    run = s3_run
    assert run.final.version == S3_STEPS
    assert not run.watcher.errors, run.watcher.errors
    served = run.watcher.versions(run.initial[0])
    assert run.final.version in served
    assert_greedy_is_transformers(run, served)
    assert metric(run.initial[0], "rollout_weight_fetches_total", path="delta") > 0


def test_s3_run_reconciles_exactly(s3_run):
    assert_reconciles(s3_run, S3_STEPS)
