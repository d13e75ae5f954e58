"""trackio: a local SQLite store (``$TRACKIO_DIR``, else trackio's default), viewed with ``trackio show``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.tracking.base import RunIdentity, Tracker, require


class TrackioTracker(Tracker):
    def __init__(self, run: RunIdentity):
        self.trackio = require("trackio")
        self.run = self.trackio.init(project=run.project, name=run.name, group=run.group, resume="never")

    def log_params(self, params: Mapping[str, Any]) -> None:
        # trackio takes a run's config once, at init; later keys go into the same record.
        self.run.config.update(dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        self.run.log({key: self.trackio.Table(columns=columns, data=rows)}, step=step)

    def close(self) -> None:
        self.run.finish()
