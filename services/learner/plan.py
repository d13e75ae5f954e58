"""The plan of each step: rank 0 makes it, every rank executes it (so their collectives line up)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.distributed as dist

from services.learner.batching import TrainBatch


@dataclass
class Plan:
    kind: Literal["train", "idle", "publish", "stop"]
    step: int  # optimizer steps completed before this plan
    batch: TrainBatch | None = None
    sft: bool = False
    publish: bool = False  # publish the weights after the step
    new_version: bool = True  # publish under the next version number (False: the starting weights' own)
    checkpoint: bool = False
    save_engine: bool = True  # False: the last checkpoint is at this step already
    final: bool = False
    # The published version the engine's weights are at the start of this step (None: trained since);
    # the trainer compares its log-probs with the engine's on the tokens sampled at that version.
    held_version: int | None = None


def broadcast(plan: Plan | None, world_size: int) -> Plan | None:
    """Rank 0's plan on every rank (the others pass None)."""
    if world_size == 1:
        return plan
    box = [plan]
    dist.broadcast_object_list(box, src=0)
    return box[0]
