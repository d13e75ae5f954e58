"""LocalDeployment's stop order: by role, whatever order the processes were (re)started in."""

from __future__ import annotations

from dataclasses import dataclass

from launcher.deployment import LocalDeployment


@dataclass
class _Stopped:
    """What ``stop`` needs of a process: its name and pid, and a stop it records."""

    name: str
    order: list[str]
    pid: int = 0

    def stop(self) -> int:
        self.order.append(self.name)
        return 0


def test_the_learner_stops_first_and_redis_last_after_restarts(tmp_path):
    order: list[str] = []
    deployment = LocalDeployment(run_dir=tmp_path, config_path=tmp_path / "job.yaml")
    # As the fault tests leave it: a worker added, then redis, the reward service and the learner restarted.
    started = ["redis-server", "reward", "rollout-0", "learner", "rollout-1", "redis-server", "reward", "learner"]
    deployment.processes = [_Stopped(name, order) for name in started]
    deployment.stop()
    assert order == ["learner", "learner", "rollout-1", "rollout-0", "reward", "reward", "redis-server", "redis-server"]
