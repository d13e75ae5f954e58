"""Per-step metrics: one JSON line per step in the run directory, and the same numbers for Prometheus."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from shared.messages import RolloutKind, TrajectoryGroup
from shared.records import BatchStats, JsonlFile, StepRecord

_NAME = re.compile(r"[^a-zA-Z0-9_]")


class StepObserver(Protocol):
    """Told of every step record with the groups it trained on (the trackers: services.learner.tracking)."""

    def __call__(self, record: StepRecord, groups: Sequence[TrajectoryGroup]) -> None: ...

    def close(self) -> None: ...


class StepMetrics:
    """The latest value of every numeric metric as a ``learner_<name>`` gauge, plus the JSONL log."""

    def __init__(self, log: JsonlFile[StepRecord]):
        self.log = log
        self.observers: list[StepObserver] = []
        self.registry = CollectorRegistry()
        self._gauges: dict[str, Gauge] = {}
        self._lock = threading.Lock()
        self.latest: StepRecord | None = None

    def record(self, record: StepRecord, groups: Sequence[TrajectoryGroup] = ()) -> None:
        self.log.append(record)
        with self._lock:
            self.latest = record
            for key, value in _flatten(record.model_dump(exclude_none=True)).items():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                self._gauge(key).set(value)
        for observer in self.observers:
            observer(record, groups)

    def close(self) -> None:
        for observer in self.observers:
            observer.close()

    def set(self, **values: float) -> None:
        """Gauges updated between steps (queue depths, outstanding tasks)."""
        with self._lock:
            for key, value in values.items():
                self._gauge(key).set(value)

    def _gauge(self, key: str) -> Gauge:
        gauge = self._gauges.get(key)
        if gauge is None:
            gauge = Gauge(f"learner_{_NAME.sub('_', key)}", key, registry=self.registry)
            self._gauges[key] = gauge
        return gauge

    def exposition(self) -> bytes:
        with self._lock:
            return generate_latest(self.registry)


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}_"))
        else:
            flat[name] = value
    return flat


def batch_stats(groups: list[TrajectoryGroup], version: int) -> BatchStats:
    """Rewards by rollout kind, prefix shares and staleness of the groups one step trains on."""
    rewards: dict[str, list[float]] = {kind.value: [] for kind in RolloutKind}
    prefix_tokens = response_tokens = generated = 0
    prefix_lens = []
    for group in groups:
        for traj in group.trajectories:
            rewards[traj.kind.value].append(traj.reward)
            prefix_tokens += traj.prefix_len
            response_tokens += len(traj.response_token_ids)
            if traj.kind == RolloutKind.hybrid:
                prefix_lens.append(traj.prefix_len)
            if traj.policy_version is not None:
                generated += len(traj.response_token_ids) - traj.prefix_len
    lags = [version - g.oldest_policy_version for g in groups]
    all_rewards = [r for values in rewards.values() for r in values]
    return BatchStats(
        reward_mean=_mean(all_rewards),
        reward_on_policy=_mean(rewards[RolloutKind.on_policy.value]),
        reward_hybrid=_mean(rewards[RolloutKind.hybrid.value]),
        reward_demonstration=_mean(rewards[RolloutKind.demonstration.value]),
        prefix_token_share=prefix_tokens / response_tokens if response_tokens else 0.0,
        prefix_len_min=min(prefix_lens) if prefix_lens else None,
        prefix_len_max=max(prefix_lens) if prefix_lens else None,
        generated_tokens=generated,
        response_tokens=response_tokens,
        staleness_mean=_mean(lags),
        staleness_hist={str(lag): lags.count(lag) for lag in sorted(set(lags))},
        groups=len(groups),
    )


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
