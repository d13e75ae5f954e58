"""Where a run's figures go besides ``metrics.jsonl``: the ``learner.tracking`` settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from shared.settings import StrictModel

Backend = Literal["tensorboard", "wandb", "mlflow", "trackio"]
BACKENDS: tuple[str, ...] = ("tensorboard", "wandb", "mlflow", "trackio")


class TrackingSettings(StrictModel):
    # Trackers to log to: any of tensorboard, wandb, mlflow, trackio; "none" (or nothing) for none.
    # Also given as one comma-separated string ("tensorboard,mlflow"), as --report-to takes it.
    report_to: list[Backend] = Field(default_factory=list)
    project: str = "prefix-rft"  # wandb and trackio project, mlflow experiment
    run_name: str | None = None  # None: the name of the run's directory
    # Tensorboard event files, mlflow's file store and wandb's run files go under it. None: the
    # learner's run_dir/tracking.
    dir: Path | None = None
    samples_every: int = Field(10, ge=0)  # steps between tables of sampled completions; 0: none
    samples_per_step: int = Field(8, ge=1)  # rows of such a table
    # mlflow tracking URI: a server (http://host:5000) or a store; None: $MLFLOW_TRACKING_URI, else a
    # file store in ``dir``/mlruns.
    mlflow_uri: str | None = None
    # None: $WANDB_MODE, else wandb's default (online: needs `wandb login`). offline writes the run
    # under ``dir``/wandb for a later `wandb sync`.
    wandb_mode: Literal["online", "offline"] | None = None
    wandb_entity: str | None = None

    @field_validator("report_to", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            value = [v.lower() if isinstance(v, str) else v for v in value]
            if "none" in value:
                if len(value) > 1:
                    raise ValueError("'none' cannot be combined with a tracker")
                return []
            unknown = [v for v in value if v not in BACKENDS]
            if unknown:
                raise ValueError(f"unknown tracker {unknown[0]!r}; known: {', '.join(BACKENDS)}, none")
            return list(dict.fromkeys(value))
        return value
