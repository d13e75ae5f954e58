"""The learner service loop: every rank runs the plans rank 0 makes; SIGTERM checkpoints and exits.

Run alone (``python -m services.learner``) it is a one-process group; under ``torchrun`` or the
``deepspeed`` launcher every process runs this same loop.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import torch.distributed as dist

from services.learner.app import BackgroundServer, create_app
from services.learner.checkpoint import Checkpointer, LearnerState
from services.learner.coordinator import Coordinator, Plan
from services.learner.engine import DistInfo, build_engine, init_distributed
from services.learner.metrics import JsonlLog, StepMetrics
from services.learner.settings import LearnerSettings
from services.learner.trainer import Trainer
from services.learner.weights import WeightStore, digest, full_state_dict

log = logging.getLogger(__name__)


RUN_ID_FILE = "run_id"


class RunDirInUse(RuntimeError):
    pass


def resolve_model(settings: LearnerSettings) -> Path:
    if settings.model is not None:
        return Path(settings.model)
    from shared.base_policy import default_base_policy

    return default_base_policy()


def serve(settings: LearnerSettings, resume: bool) -> None:
    stop_event = threading.Event()
    is_main = int(os.environ.get("RANK", "0")) == 0
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    metrics = StepMetrics(JsonlLog(settings.run_dir / "metrics.jsonl"))
    store = WeightStore(settings.run_dir / "weights", settings.keep_weights)
    holder: dict = {}
    server = None
    if is_main:
        # Up before the slow engine start, so a supervisor sees the process is alive.
        app = create_app(lambda: holder["c"].status() if "c" in holder else {"phase": "starting"}, store, metrics)
        server = BackgroundServer(app, settings.host, settings.port)
        server.start()
    try:
        _run(settings, resume, stop_event, metrics, store, holder)
    finally:
        if server is not None:
            server.stop()
        if dist.is_initialized():
            dist.destroy_process_group()


def _run(settings, resume, stop_event, metrics, store, holder) -> None:
    info = init_distributed(settings)
    checkpointer = Checkpointer(settings.run_dir / "checkpoints", settings.keep_checkpoints)
    committed = checkpointer.committed_tag()
    if committed is not None and not resume:
        raise RunDirInUse(f"{settings.run_dir} holds checkpoint {committed}: pass --resume, or use another run_dir")
    if resume and committed is None:
        log.warning("--resume: no checkpoint in %s: training restarts from the initial weights", settings.run_dir)

    model_dir = resolve_model(settings)
    from shared.modeling import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    engine = build_engine(settings, model_dir, info)
    trainer = Trainer(engine, settings, info)
    restored = checkpointer.load(engine) if committed is not None else None

    coordinator = None
    if info.is_main:
        state = restored or _initial_state(settings.run_dir, resume)
        max_len = settings.max_seq_len or getattr(engine.module.config, "max_position_embeddings", None)
        coordinator = Coordinator(settings, tokenizer, state, metrics, store, info.world_size, stop_event, max_len)
        if restored is not None or state.run_id == _previous_run_id(settings.run_dir):
            # Also after a crash before the first checkpoint: same run, nothing trained yet.
            coordinator.resumed(from_checkpoint=restored is not None)
        else:
            coordinator.fresh_start()
        (settings.run_dir / RUN_ID_FILE).write_text(state.run_id)
        holder["c"] = coordinator
    log.info("rank %d/%d ready (ZeRO-%d, %s)", info.rank, info.world_size, settings.deepspeed.zero_stage,
             settings.deepspeed.dtype)

    # From here on a stop request is served at the next step boundary, with a checkpoint.
    _install_signal_handlers(stop_event)
    first = _broadcast(coordinator.first_plan(restored is not None) if coordinator else None, info)
    if first is not None:
        _publish(engine, settings, info, coordinator, initial=restored is None)
    try:
        while True:
            plan = _broadcast(coordinator.next_plan() if coordinator else None, info)
            if plan.kind == "idle":
                continue
            if plan.kind == "train":
                started = time.monotonic()
                train_metrics = trainer.train(plan.batch, plan.sft)
                train_s = time.monotonic() - started
                publish_s = _publish(engine, settings, info, coordinator, initial=False) if plan.publish else None
                if coordinator:
                    coordinator.step_done(plan, train_metrics, train_s, publish_s)
                if plan.checkpoint:
                    _checkpoint(engine, checkpointer, coordinator, plan.step + 1, save_engine=True)
                continue
            if plan.publish:
                _publish(engine, settings, info, coordinator, initial=False)
            if plan.checkpoint:
                _checkpoint(engine, checkpointer, coordinator, plan.step, save_engine=plan.save_engine)
            digests = _rank_digests(engine, settings, info)
            if coordinator:
                coordinator.finish(final=plan.final, rank_digests=digests)
            log.info("rank %d: %s at step %d", info.rank, "finished" if plan.final else "stopped", plan.step)
            return
    finally:
        if coordinator is not None and coordinator.phase not in ("done", "stopped"):
            coordinator.publisher.close(timeout=1.0)


def _previous_run_id(run_dir: Path) -> str | None:
    path = run_dir / RUN_ID_FILE
    return path.read_text().strip() if path.is_file() else None


def _initial_state(run_dir: Path, resume: bool) -> LearnerState:
    """No checkpoint: a new run, or with --resume the run that crashed before its first checkpoint."""
    previous = _previous_run_id(run_dir) if resume else None
    return LearnerState(run_id=previous or uuid.uuid4().hex[:8])


def _broadcast(plan: Plan | None, info: DistInfo) -> Plan | None:
    if info.world_size == 1:
        return plan
    box = [plan]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _publish(engine, settings: LearnerSettings, info: DistInfo, coordinator, initial: bool) -> float | None:
    started = time.monotonic()
    state_dict = full_state_dict(engine, settings.deepspeed.zero_stage, info.is_main)
    if coordinator is None:
        return None
    coordinator.publish_weights(engine.module, state_dict, initial=initial)
    return time.monotonic() - started


def _rank_digests(engine, settings: LearnerSettings, info: DistInfo) -> list[str] | None:
    """Every rank's weight checksum (they must agree); None under ZeRO-3, where no rank holds them all."""
    if settings.deepspeed.zero_stage == 3:
        return None
    mine = digest(engine.module.state_dict())
    if info.world_size == 1:
        return [mine]
    gathered: list = [None] * info.world_size
    dist.all_gather_object(gathered, mine)
    return gathered


def _checkpoint(engine, checkpointer: Checkpointer, coordinator, step: int, save_engine: bool) -> None:
    state = coordinator.checkpoint_state() if coordinator else None
    checkpointer.save(engine, step, state, save_engine=save_engine)
    if coordinator:
        coordinator.checkpoint_done()


def _install_signal_handlers(stop_event: threading.Event) -> None:
    def request_stop(signum, _frame):
        if stop_event.is_set():  # a second signal: give up on the clean stop
            raise SystemExit(128 + signum)
        log.warning("signal %d: checkpointing and stopping after the current step", signum)
        stop_event.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
