"""The DeepSpeed engine: distributed init, ds_config from the settings, model + torch AdamW.

On CPU the engine runs with gloo; on CUDA with NCCL. A torch AdamW is passed in because DeepSpeed's
FusedAdam would compile an extension first (about a minute on CPU). Gradient accumulation is driven
by the trainer (it sets the accumulation boundary itself), so the config's accumulation steps stay 1
and batches of any number of rows work.
"""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from services.learner.settings import LearnerSettings
from shared.net import free_port

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def backend(settings: LearnerSettings) -> str:
    return settings.deepspeed.backend or ("nccl" if torch.cuda.is_available() else "gloo")


def init_distributed(settings: LearnerSettings) -> DistInfo:
    """Join the process group the launcher set up, or make a one-process group when run alone."""
    import deepspeed

    if "RANK" not in os.environ:  # started directly, not by torchrun or the deepspeed launcher
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend=backend(settings), auto_mpi_discovery=False)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)


def ds_config(settings: LearnerSettings, world_size: int) -> dict:
    ds = settings.deepspeed
    config: dict = {
        "train_micro_batch_size_per_gpu": settings.micro_batch,
        "gradient_accumulation_steps": 1,
        "train_batch_size": settings.micro_batch * world_size,
        "gradient_clipping": ds.gradient_clipping,
        "zero_optimization": {"stage": ds.zero_stage},
        "bf16": {"enabled": ds.dtype == "bf16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if ds.zero_stage == 3:
        # Weights are published from a consolidated copy; gather it on save.
        config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
    config.update(ds.extra_config)
    return config


def model_dtype(settings: LearnerSettings) -> torch.dtype:
    return torch.bfloat16 if settings.deepspeed.dtype == "bf16" else torch.float32


def build_engine(settings: LearnerSettings, model_dir: Path, info: DistInfo):
    """Load the model from ``model_dir`` and wrap it in a DeepSpeed engine with a torch AdamW."""
    import deepspeed

    from shared.modeling import load_model

    config = ds_config(settings, info.world_size)
    # Under ZeRO-3 the model must be built with its parameters partitioned from the start.
    zero3 = _zero3_context(config) if settings.deepspeed.zero_stage == 3 else nullcontext()
    with zero3:
        model = load_model(model_dir, dtype=model_dtype(settings))
    model.config.use_cache = False
    set_gradient_checkpointing(model, settings.use_gradient_checkpointing)
    opt = settings.optimizer
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / opt.warmup_steps) if opt.warmup_steps else 1.0
    )
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config, dist_init_required=False
    )
    return engine


def set_gradient_checkpointing(model, enabled: bool) -> None:
    """Recompute each decoder layer's activations in the backward pass (or stop doing so)."""
    if enabled:
        # Non-reentrant: works when the inputs need no gradient (the embeddings' output does) and
        # is the variant torch recommends; the re-entrant one would need enable_input_require_grads.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif model.is_gradient_checkpointing:
        model.gradient_checkpointing_disable()


class _Zero3Holder:
    """Keeps the HfDeepSpeedConfig alive while the model is built (transformers holds a weak ref)."""

    def __init__(self, config: dict):
        from transformers.integrations import HfDeepSpeedConfig

        self.hf_config = HfDeepSpeedConfig(config)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_ZERO3_KEEPALIVE: list = []


def _zero3_context(config: dict) -> _Zero3Holder:
    holder = _Zero3Holder(config)
    _ZERO3_KEEPALIVE.append(holder)  # must outlive model construction and the engine
    return holder
