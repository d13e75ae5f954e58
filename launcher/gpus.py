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

from launcher.config import JobConfig
from shared.settings import SettingsError


class NotEnoughGpus(SettingsError):
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


class Placement(BaseModel):
    """How many learner ranks and rollout workers a local job starts, and their devices (None: no GPU plan)."""

    learner_ranks: int = Field(ge=1)
    rollout_workers: int = Field(ge=1)
    gpus: GpuPlan | None = None
    note: str | None = None  # why the processes share the machine's devices, for the launcher to show

    def learner_env(self) -> dict[str, str]:
        return self.gpus.learner_env() if self.gpus else {}

    def rollout_env(self, worker: int) -> dict[str, str]:
        return self.gpus.rollout_env(worker) if self.gpus else {}


def place_processes(
    learner_ranks: int | None,
    learner_gpus: int | None,
    rollout_gpus: int | None,
    rollout_workers: int,
    tensor_parallel: int,
    visible: Sequence[str],
) -> Placement:
    """The processes of a local job and their devices.

    Without GPUs the learner runs ``learner_ranks`` ranks (gloo) and asking for GPUs is refused. With
    GPUs each learner rank gets one device and each rollout worker ``tensor_parallel``; a job that
    asks for nothing gets one rank and ``rollout_workers`` workers on devices of their own when there
    are enough, else (one GPU, say) all of them on the devices they find, as before.
    """
    asked = {"--learner-gpus": learner_gpus, "--rollout-gpus": rollout_gpus}
    if not visible:
        given = [f"{flag} {value} (placement.{flag[2:].replace('-', '_')})" for flag, value in asked.items()
                 if value is not None]
        if given:
            raise NotEnoughGpus(
                f"{' and '.join(given)}: this machine shows no GPU (CUDA_VISIBLE_DEVICES or the driver); "
                "on CPUs use --learner-ranks N for a learner of N ranks (gloo)"
            )
        return Placement(learner_ranks=learner_ranks or 1, rollout_workers=rollout_workers)
    if learner_ranks is not None and learner_gpus is not None and learner_ranks != learner_gpus:
        raise NotEnoughGpus(
            f"--learner-ranks {learner_ranks} and --learner-gpus {learner_gpus} disagree: on GPUs the learner "
            "runs one rank per GPU (give one of them)"
        )
    if rollout_gpus is not None:
        workers = rollout_gpus // tensor_parallel
        if rollout_workers > 1 and rollout_workers * tensor_parallel != rollout_gpus:
            raise NotEnoughGpus(
                f"--rollout-workers {rollout_workers} and --rollout-gpus {rollout_gpus} disagree: each worker takes "
                f"{tensor_parallel} GPU(s) (rollout.engine_args.tensor_parallel_size), so {rollout_gpus} GPUs make "
                f"{max(workers, 1)} worker(s)"
            )
    request = GpuRequest(
        learner_gpus=learner_gpus or learner_ranks or 1,
        rollout_gpus=rollout_gpus or rollout_workers * tensor_parallel,
        tensor_parallel=tensor_parallel,
    )
    try:
        plan = plan_gpus(request, visible)
    except NotEnoughGpus:
        if learner_ranks is not None or any(value is not None for value in asked.values()):
            raise
        note = (
            f"this machine shows {len(visible)} GPU(s), fewer than one for the learner and {tensor_parallel} for "
            f"each of {rollout_workers} rollout worker(s): every process sees all of them"
        )
        return Placement(learner_ranks=1, rollout_workers=rollout_workers, note=note)
    return Placement(learner_ranks=plan.learner_ranks, rollout_workers=len(plan.rollout), gpus=plan)


def place_job(job: JobConfig, rollout_workers: int, visible: Sequence[str] | None = None) -> Placement:
    """:func:`place_processes` for a job's placement section, on this machine's GPUs (or ``visible``)."""
    placement = job.placement
    return place_processes(
        placement.learner_ranks,
        placement.learner_gpus,
        placement.rollout_gpus,
        rollout_workers,
        int(job.rollout.engine_args.get("tensor_parallel_size", 1)),
        visible_gpus() if visible is None else visible,
    )
