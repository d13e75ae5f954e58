"""Weights & Biases: online (``wandb login``) or offline under ``<dir>/wandb`` (``wandb sync`` later)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.tracking.base import RunIdentity, Tracker, require


class WandbTracker(Tracker):
    def __init__(self, run: RunIdentity, mode: str | None = None, entity: str | None = None):
        self.wandb = require("wandb")
        run.dir.mkdir(parents=True, exist_ok=True)
        self.run = self.wandb.init(
            project=run.project, name=run.name, group=run.group, dir=str(run.dir), mode=mode, entity=entity,
            reinit="create_new",
        )

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.run.config.update(dict(params), allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        self.run.log({key: self.wandb.Table(columns=columns, data=rows)}, step=step)

    def close(self) -> None:
        self.run.finish()
