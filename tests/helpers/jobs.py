"""Job configurations the end-to-end tests run."""

from __future__ import annotations

from pathlib import Path

# A few small steps: every process real, small enough for CPUs.
SMALL_JOB = """
learner:
  batch_prompts: 4
  mini_batch_prompts: 4
  micro_batch: 16
  checkpoint_every: 2
  sampling: {temperature: 1.0, max_tokens: 96}
"""


def deployment_job(token: str, namespace: str, model: Path, run_dir: Path, steps: int, *,
                   reward: dict | None = None, rollout: dict | None = None, learner: dict | None = None) -> dict:
    """The job a hand-started ``LocalDeployment`` runs in the fault and weights tests: Prefix-RFT on the
    default model in steps of two prompts, with quick heartbeats; ``reward``, ``rollout`` and
    ``learner`` add to (or replace keys of) their sections."""
    return {
        "redis": {"namespace": namespace},
        "auth": {"token": token},
        "reward": {"workers": 1, **(reward or {})},
        "rollout": {
            "max_inflight_tasks": 2, "heartbeat_s": 0.5, "reward_backoff_s": 0.2, "drain_timeout_s": 5,
            **(rollout or {}),
        },
        "learner": {
            "model": str(model),
            "dataset": {"train_size": 200},
            "algorithm": {"name": "prefix-rft", "n_rollouts": 4},
            "sampling": {"temperature": 1.0, "max_tokens": 32},
            "batch_prompts": 2,
            "mini_batch_prompts": 2,
            "micro_batch": 8,
            "max_staleness": 1,
            "total_steps": steps,
            "run_dir": str(run_dir / "learner"),
            **(learner or {}),
        },
    }
