"""mlflow: a run in the experiment ``project``, on a server or a local file store (``<dir>/mlruns``)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from shared.tracking.base import RunIdentity, Tracker, flatten, require

# mlflow refuses a file store unless told that it is wanted (it asks new users for a database);
# a file store is what needs no server and no database driver here.
_ALLOW_FILE_STORE = "MLFLOW_ALLOW_FILE_STORE"
_MAX_PARAM_CHARS = 6000  # mlflow's limit on a parameter's value


def default_uri(run: RunIdentity, configured: str | None) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or (run.dir / "mlruns").resolve().as_uri()


class MlflowTracker(Tracker):
    def __init__(self, run: RunIdentity, uri: str | None = None):
        require("mlflow")
        self.uri = default_uri(run, uri)
        if self.uri.startswith("file:") or "://" not in self.uri:
            os.environ.setdefault(_ALLOW_FILE_STORE, "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = self.client.get_experiment_by_name(run.project)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(run.project)
        self.run_id = self.client.create_run(experiment_id, run_name=run.name, tags={"group": run.group}).info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = [Param(key, str(value)[:_MAX_PARAM_CHARS]) for key, value in flatten(params).items()]
        for start in range(0, len(flat), 100):  # mlflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=flat[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        data = {column: [row[i] for row in rows] for i, column in enumerate(columns)}
        self.client.log_table(self.run_id, data=data, artifact_file=f"{key}/step_{step:06d}.json")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)
