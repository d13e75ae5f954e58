"""Rank 0's figures for the run's trackers (``learner.tracking``): every step record, and every
``samples_every`` steps a table of sampled completions."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from services.learner.settings import LearnerSettings
from shared.messages import TrajectoryGroup
from shared.records import StepRecord
from shared.settings import read_document
from shared.tracking import Trackers, flatten, open_trackers

log = logging.getLogger(__name__)

SAMPLE_COLUMNS = ["prompt", "prefix_len", "response", "reward", "kind", "verifier"]
SAMPLES_KEY = "samples"


def step_metrics(record: StepRecord) -> dict[str, float]:
    """The record's numbers as ``train/<name>`` (``train/staleness_hist/1``); its step is the x axis."""
    values = flatten(record.model_dump(exclude_none=True, exclude={"step", "time"}), "train/", sep="/")
    return {key: float(value) for key, value in values.items() if isinstance(value, (bool, int, float))}


def sample_rows(groups: Sequence[TrajectoryGroup], decode: Callable[[list[int]], str], limit: int) -> list[list[Any]]:
    """Up to ``limit`` trajectories of the step's first groups, each with its prompt as the model saw it."""
    rows: list[list[Any]] = []
    for group in groups:
        prompt = decode(group.prompt_token_ids)
        for traj in group.trajectories:
            if len(rows) == limit:
                return rows
            rows.append([prompt, traj.prefix_len, traj.text, traj.reward, traj.kind.value, group.verifier])
    return rows


class StepTracking:
    """Receives each step record with the groups it trained on (``StepMetrics.record``)."""

    def __init__(
        self, trackers: Trackers, decode: Callable[[list[int]], str], samples_every: int, samples_per_step: int
    ):
        self.trackers = trackers
        self.decode = decode
        self.samples_every = samples_every
        self.samples_per_step = samples_per_step

    def __call__(self, record: StepRecord, groups: Sequence[TrajectoryGroup]) -> None:
        self.trackers.log_metrics(step_metrics(record), record.step)
        # Step 1, then every samples_every steps: a short run shows its completions too.
        if self.samples_every and groups and (record.step - 1) % self.samples_every == 0:
            rows = sample_rows(groups, self.decode, self.samples_per_step)
            self.trackers.log_table(SAMPLES_KEY, SAMPLE_COLUMNS, rows, record.step)

    def close(self) -> None:
        self.trackers.close()


def run_name(settings: LearnerSettings) -> str:
    """The tracking run's name: the setting, else the job's directory (``runs/<job>/learner`` -> ``<job>``)."""
    if settings.tracking.run_name:
        return settings.tracking.run_name
    run_dir = settings.run_dir.resolve()
    return run_dir.parent.name if run_dir.name == "learner" else run_dir.name


def hyper_parameters(settings: LearnerSettings, config_path: Path | None) -> dict[str, Any]:
    """The job config as the run's hyper-parameters: the learner's settings as resolved (file, env vars,
    --set), the other services' sections as the job's file has them; never the bearer token."""
    document = read_document(config_path) if config_path is not None and config_path.is_file() else {}
    document = {section: value for section, value in document.items() if section != "auth"}
    document["redis"] = settings.redis.model_dump(mode="json")
    document["learner"] = settings.model_dump(mode="json", exclude={"redis", "auth"})
    return document


def open_step_tracking(settings: LearnerSettings, decode: Callable[[list[int]], str]) -> StepTracking | None:
    tracking = settings.tracking
    if not tracking.report_to:
        return None
    name = run_name(settings)
    config_path = getattr(settings, "_config_path", None)
    params = hyper_parameters(settings, config_path)
    trackers = open_trackers(tracking, name, name, settings.run_dir / "tracking", params)
    log.info("reporting to %s as run %r", ", ".join(tracking.report_to), name)
    return StepTracking(trackers, decode, tracking.samples_every, tracking.samples_per_step)
