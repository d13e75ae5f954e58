"""Per-step metrics: one JSON line per step in the run directory, and the same numbers for Prometheus."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from shared.messages import RolloutKind, TrajectoryGroup

_NAME = re.compile(r"[^a-zA-Z0-9_]")


class JsonlLog:
    """Append-only JSON lines, each with a ``step``; a resumed run cuts the lines of the lost steps."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, value: int, key: str = "step") -> int:
        """Drop records whose ``key`` is above ``value`` (a crashed run's lost work); returns how many."""
        records = self.read()
        kept = [r for r in records if r.get(key, 0) <= value]
        if len(kept) != len(records):
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
            tmp.replace(self.path)
        return len(records) - len(kept)


class StepMetrics:
    """The latest value of every numeric metric as a ``learner_<name>`` gauge, plus the JSONL log."""

    def __init__(self, log: JsonlLog):
        self.log = log
        self.registry = CollectorRegistry()
        self._gauges: dict[str, Gauge] = {}
        self._lock = threading.Lock()
        self.latest: dict[str, Any] = {}

    def record(self, record: dict[str, Any]) -> None:
        self.log.append(record)
        with self._lock:
            self.latest = record
            for key, value in _flatten(record).items():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                self._gauge(key).set(value)

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


def batch_stats(groups: list[TrajectoryGroup], version: int) -> dict[str, Any]:
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
    stats: dict[str, Any] = {
        "reward_mean": _mean(all_rewards),
        "reward_on_policy": _mean(rewards[RolloutKind.on_policy.value]),
        "reward_hybrid": _mean(rewards[RolloutKind.hybrid.value]),
        "reward_demonstration": _mean(rewards[RolloutKind.demonstration.value]),
        "prefix_token_share": prefix_tokens / response_tokens if response_tokens else 0.0,
        "prefix_len_min": min(prefix_lens) if prefix_lens else None,
        "prefix_len_max": max(prefix_lens) if prefix_lens else None,
        "generated_tokens": generated,
        "response_tokens": response_tokens,
        "staleness_mean": _mean(lags),
        "staleness_hist": {str(lag): lags.count(lag) for lag in sorted(set(lags))},
        "groups": len(groups),
    }
    return stats


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
