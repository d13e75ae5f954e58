"""Experiment tracking: a run's figures sent to tensorboard, wandb, mlflow or trackio besides
``metrics.jsonl``. One module per backend under ``backends/``, each behind :class:`Tracker`; each
backend's package is optional (``pip install 'prefix-rft[tracking]'``), imported only when asked for.

The learner's rank 0 logs every step record and tables of sampled completions (``services.learner``);
``prefix-rft run`` and ``compare`` log evaluation results (``launcher.tracking``). Both name their runs
after the run directory and share a group, so a job's training and evaluation sit side by side.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.tracking.base import RunIdentity, Tracker, Trackers, TrackerUnavailable, flatten, require
from shared.tracking.settings import BACKENDS, TrackingSettings

__all__ = [
    "BACKENDS",
    "RunIdentity",
    "Tracker",
    "TrackerUnavailable",
    "Trackers",
    "TrackingSettings",
    "check_available",
    "flatten",
    "open_trackers",
]


def check_available(backends: list[str]) -> None:
    """Raise TrackerUnavailable, naming the pip install, for the first backend whose package is missing:
    a launcher calls it before it starts anything."""
    for backend in backends:
        require(backend)


def open_trackers(
    settings: TrackingSettings, name: str, group: str, default_dir: Path, params: Mapping[str, Any]
) -> Trackers:
    """A run called ``name`` in every tracker of ``settings.report_to``, its hyper-parameters ``params``
    logged. A missing package raises TrackerUnavailable naming the pip install, before any run opens."""
    run = RunIdentity(project=settings.project, name=name, group=group, dir=(settings.dir or default_dir).resolve())
    makers = [_maker(backend, settings) for backend in settings.report_to]
    check_available(settings.report_to)
    opened: list[Tracker] = []
    try:
        for make in makers:
            tracker = make(run)
            opened.append(tracker)
            tracker.log_params(params)
    except BaseException:
        Trackers(opened).close()
        raise
    return Trackers(opened)


def _maker(backend: str, settings: TrackingSettings):
    if backend == "tensorboard":
        from shared.tracking.backends.tensorboard import TensorboardTracker

        return TensorboardTracker
    if backend == "mlflow":
        from shared.tracking.backends.mlflow import MlflowTracker

        return lambda run: MlflowTracker(run, settings.mlflow_uri)
    if backend == "wandb":
        from shared.tracking.backends.wandb import WandbTracker

        return lambda run: WandbTracker(run, settings.wandb_mode, settings.wandb_entity)
    if backend == "trackio":
        from shared.tracking.backends.trackio import TrackioTracker

        return TrackioTracker
    raise ValueError(f"unknown tracker {backend!r}; known: {', '.join(BACKENDS)}")
