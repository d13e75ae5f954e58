"""The s3 transport's settings: a bucket is required (a run stops with a message naming the setting,
before anything starts), names are checked, and a push names an s3:// manifest only for the s3
transport. Its behaviour against a real store is in tests/integration/test_weights_s3.py."""

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from launcher.cli import app
from shared.api.rollout import WeightUpdate
from shared.weights.settings import WeightsSettings


def test_a_run_on_s3_without_a_bucket_stops_naming_the_setting(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["run", "--steps", "1", "--set", "learner.weights.transport=s3", "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    assert "learner.weights" in result.output and "needs s3.bucket" in result.output
    assert isinstance(result.exception, SystemExit) and not out.exists()


def test_s3_settings_take_a_bucket_and_refuse_bad_names():
    settings = WeightsSettings.model_validate({"transport": "s3", "s3": {"bucket": "weights", "prefix": "jobs/a"}})
    assert (settings.s3.bucket, settings.s3.prefix, settings.s3.endpoint_url) == ("weights", "jobs/a", None)
    for bad in ({"bucket": "Weights_1"}, {"bucket": "w", "prefix": "/abs"}, {"bucket": "weights", "part_mb": 1},
                {"bucket": "weights", "endpoint_url": "minio:9000"}, {"bucket": "weights", "access_key": "k"}):
        with pytest.raises(ValidationError):
            WeightsSettings.model_validate({"transport": "s3", "s3": bad})


def test_a_push_names_an_s3_manifest_only_for_the_s3_transport():
    ok = WeightUpdate(version=2, uri="http://l/v1/weights/2", manifest="s3://b/p/v2/manifest.json", transport="s3")
    assert ok.transport == "s3"
    for bad in ({"manifest": "http://l/v1/weights/2/manifest", "transport": "s3"},
                {"manifest": "s3://b/p/v2/manifest.json", "transport": "http"}):
        with pytest.raises(ValidationError, match="manifest"):
            WeightUpdate(version=2, uri="http://l/v1/weights/2", **bad)
    with pytest.raises(ValidationError):  # the whole-file address stays one a worker without a transport reads
        WeightUpdate(version=2, uri="s3://b/p/v2/model.safetensors")
