"""Checkpoints: the DeepSpeed state plus the learner's own state, committed atomically.

A checkpoint is ``root/step{N}/`` (DeepSpeed's files, one set per rank) with ``learner_state.json``
next to them; it counts only once ``root/committed`` names it, which is written last. A crash at
any point leaves the previous committed checkpoint intact.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field

from services.learner.consumed import ConsumedState

log = logging.getLogger(__name__)

STATE_FILE = "learner_state.json"
COMMITTED = "committed"


class LearnerState(BaseModel):
    """Everything besides the engine that a resumed learner needs to continue exactly."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    step: int = 0  # optimizer steps taken (a step = one batch)
    version: int = 0  # weight version the engine's weights correspond to, or will once published
    position: int = 0  # data position
    issued: int = 0  # tasks issued
    commit: int = 0  # checkpoints committed so far; labels the ledger lines each one covers
    # Every group trained or dropped so far, as a watermark: a redelivered group is recognised as a duplicate.
    consumed: ConsumedState = Field(default_factory=ConsumedState)
    consumed_ids: list[str] = Field(default_factory=list)  # the same as a plain list: checkpoints before the watermark
    totals: dict[str, float] = Field(default_factory=dict)  # cumulative counters for metrics


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def rng_states() -> dict:
    states = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def restore_rng(states: dict) -> None:
    random.setstate(states["python"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


class Checkpointer:
    def __init__(self, root: Path, keep: int):
        self.root = root
        self.keep = keep

    def committed_tag(self) -> str | None:
        marker = self.root / COMMITTED
        return marker.read_text().strip() if marker.is_file() else None

    def save(self, engine, step: int, state: LearnerState | None, save_engine: bool = True) -> str:
        """Collective: every rank calls it; the main rank passes the learner state, the others None.

        ``save_engine=False`` rewrites only the learner state of a checkpoint already committed at
        this step (the weights and optimizer have not changed since), never DeepSpeed's files in place.
        """
        tag = f"step{step:08d}"
        if state is not None:
            self.root.mkdir(parents=True, exist_ok=True)
        _barrier()
        if save_engine:
            engine.save_checkpoint(str(self.root), tag=tag, client_state={"rng": rng_states()}, save_latest=False)
        _barrier()
        if state is not None:
            write_atomic(self.root / tag / STATE_FILE, state.model_dump_json())
            write_atomic(self.root / COMMITTED, tag)
            self._prune(keep_tag=tag)
        _barrier()
        return tag

    def load(self, engine) -> LearnerState | None:
        """Restore the engine from the committed checkpoint; None when there is none."""
        tag = self.committed_tag()
        if tag is None:
            return None
        path, client_state = engine.load_checkpoint(
            str(self.root), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load checkpoint {self.root / tag}")
        if client_state and "rng" in client_state:
            restore_rng(client_state["rng"])
        state = LearnerState.model_validate_json((self.root / tag / STATE_FILE).read_text())
        log.info("resumed from %s: step %d, version %d", self.root / tag, state.step, state.version)
        return state

    def _prune(self, keep_tag: str) -> None:
        tags = sorted(p.name for p in self.root.glob("step*") if p.is_dir())
        keep = set(tags[-self.keep :]) | {keep_tag}
        for name in tags:
            if name not in keep:
                shutil.rmtree(self.root / name, ignore_errors=True)


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
