"""The interface every tracker backend implements, and what they share."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

# The package each backend needs, and what to install for it.
PACKAGES = {
    "tensorboard": ("tensorboard", "pip install tensorboard"),
    "wandb": ("wandb", "pip install wandb"),
    "mlflow": ("mlflow", "pip install mlflow-skinny"),
    "trackio": ("trackio", "pip install trackio"),
}
EXTRA_HINT = "or every tracker at once: pip install 'prefix-rft[tracking]'"


class TrackerUnavailable(RuntimeError):
    """A tracker was asked for but cannot be used (its package is missing)."""


def require(backend: str) -> ModuleType:
    """The backend's package, or a TrackerUnavailable naming what to install."""
    module, install = PACKAGES[backend]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = f"--report-to {backend} needs the {module!r} package: {install} ({EXTRA_HINT})"
        raise TrackerUnavailable(message) from exc


@dataclass(frozen=True)
class RunIdentity:
    """Which run a tracker logs to: the same names in every backend."""

    project: str
    name: str
    group: str  # the training job: its learner's run and its evaluation run share it
    dir: Path


class Tracker(ABC):
    """One backend's run. Keys are ``section/name`` (``train/loss``, ``eval/id/greedy_accuracy``)."""

    @abstractmethod
    def log_params(self, params: Mapping[str, Any]) -> None:
        """The run's hyper-parameters: a nested document (the job config)."""

    @abstractmethod
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    @abstractmethod
    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


class Trackers(Tracker):
    """Every tracker a run reports to, as one (none: every call does nothing)."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def log_params(self, params: Mapping[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.log_params(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for tracker in self.trackers:
            tracker.log_metrics(metrics, step)

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        for tracker in self.trackers:
            tracker.log_table(key, columns, rows, step)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()


def flatten(document: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"learner": {"lr": 1}}`` -> ``{"learner.lr": 1}``; lists and None become strings, as
    trackers that take flat scalar parameters (tensorboard's hparams, mlflow) need."""
    flat: dict[str, Any] = {}
    for key, value in document.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}{sep}", sep))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat
