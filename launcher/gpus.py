"""Which GPUs each process of a local deployment sees: one ``CUDA_VISIBLE_DEVICES`` per process.

Without it every process lands on GPU 0: the learner and each vLLM engine (which takes a fixed
share of its GPU's memory on start) then compete for one device and the second engine fails to
start. The learner gets the first ``learner_gpus`` devices, one torchrun rank each (rank i on the
i-th, as LOCAL_RANK picks it); the rollout workers get the next ``rollout_gpus``, one worker per
``tensor_parallel`` devices. No device is shared.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, Field


class NotEnoughGpus(ValueError):
    """The job asks for more GPUs than the machine shows, or for a split that does not divide."""


class GpuRequest(BaseModel):
    learner_gpus: int = Field(1, ge=1)
    rollout_gpus: int = Field(1, ge=0)  # 0: no local rollout workers (they run elsewhere)
    tensor_parallel: int = Field(1, ge=1)  # GPUs per rollout worker


class GpuPlan(BaseModel):
    learner: tuple[str, ...]  # device ids, as CUDA_VISIBLE_DEVICES names them
    rollout: list[tuple[str, ...]]  # one entry per rollout worker

    @property
    def learner_ranks(self) -> int:
        return len(self.learner)

    def learner_env(self) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": ",".join(self.learner)}

    def rollout_env(self, worker: int) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": ",".join(self.rollout[worker])}


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The devices this process may hand out: those of its own CUDA_VISIBLE_DEVICES when it has one
    (ids kept as given, indices or UUIDs, so children see a subset of what the launcher was given),
    else every device the driver shows."""
    environ = os.environ if environ is None else environ
    given = environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [d.strip() for d in given.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def plan_gpus(request: GpuRequest, visible: Sequence[str]) -> GpuPlan:
    """Disjoint devices for the learner and each rollout worker; NotEnoughGpus says why not."""
    if request.rollout_gpus % request.tensor_parallel:
        raise NotEnoughGpus(
            f"rollout_gpus {request.rollout_gpus} is not a multiple of tensor_parallel {request.tensor_parallel}: "
            f"each rollout worker takes {request.tensor_parallel} GPUs"
        )
    needed = request.learner_gpus + request.rollout_gpus
    if needed > len(visible):
        shown = ",".join(visible) if visible else "none"
        raise NotEnoughGpus(
            f"the job needs {needed} GPUs ({request.learner_gpus} for the learner + {request.rollout_gpus} for "
            f"rollout) but this machine shows {len(visible)} (devices: {shown}); lower --learner-gpus or "
            f"--rollout-gpus, or run the rollout workers on another machine with --rollout-gpus 0"
        )
    learner = tuple(visible[: request.learner_gpus])
    rest = list(visible[request.learner_gpus : needed])
    tp = request.tensor_parallel
    rollout = [tuple(rest[start : start + tp]) for start in range(0, len(rest), tp)]
    return GpuPlan(learner=learner, rollout=rollout)
