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

from services.learner.app import BackgroundServer, StatusSource, create_app
from services.learner.checkpoint import Checkpointer, LearnerState
from services.learner.coordinator import Follower, Rank0
from services.learner.engine import DistInfo, build_engine, init_distributed
from services.learner.metrics import StepMetrics
from services.learner.plan import Plan
from services.learner.settings import LearnerSettings
from services.learner.tracking import open_step_tracking
from services.learner.trainer import Trainer
from services.learner.weights import WeightStore
from shared.records import metrics_file

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
    metrics = StepMetrics(metrics_file(settings.run_dir))
    store = WeightStore(
        settings.run_dir / "weights", settings.keep_weights, settings.keep_weights_every, settings.weights.bucket_bytes
    )
    status = StatusSource()
    start_gate = threading.Event() if settings.start_on_request else None
    server = None
    if is_main:
        # Up before the slow engine start, so a supervisor sees the process is alive.
        app = create_app(status, store, metrics, settings.auth.token.get_secret_value(), start_gate)
        server = BackgroundServer(app, settings.host, settings.port)
        server.start()
    try:
        loop = _start(settings, resume, stop_event, metrics, store, status)
        try:
            if start_gate is not None:
                loop.hooks.hold(start_gate)
            loop.run()
        finally:
            loop.hooks.close()
            metrics.close()
    finally:
        if server is not None:
            server.stop()
        if dist.is_initialized():
            dist.destroy_process_group()


class Loop:
    """What every rank runs: the plans rank 0 makes, through the hooks of its kind of rank."""

    def __init__(self, hooks: Follower, trainer: Trainer, info: DistInfo):
        self.hooks = hooks
        self.trainer = trainer
        self.info = info

    def run(self) -> None:
        first = self.hooks.first_plan()
        if first is not None:
            self.hooks.publish(first)
        while True:
            plan = self.hooks.next_plan()
            if plan.kind == "train":
                self.step(plan)
            elif plan.kind == "stop":
                self.stop(plan)
                return
            # "idle": rank 0 is still waiting for groups; nothing to do but take the next plan

    def step(self, plan: Plan) -> None:
        started = time.monotonic()
        trainer_metrics = self.trainer.train(plan.batch, plan.sft, plan.held_version)
        train_s = time.monotonic() - started
        publish_s = self.hooks.publish(plan) if plan.publish else None
        self.hooks.record(plan, trainer_metrics, train_s, publish_s)
        if plan.checkpoint:
            self.hooks.checkpoint(plan.step + 1, save_engine=True)

    def stop(self, plan: Plan) -> None:
        if plan.publish:
            self.hooks.publish(plan)
        if plan.checkpoint:
            self.hooks.checkpoint(plan.step, save_engine=plan.save_engine)
        self.hooks.finish(plan)
        log.info("rank %d: %s at step %d", self.info.rank, "finished" if plan.final else "stopped", plan.step)


def _start(settings, resume, stop_event, metrics, store, status: StatusSource) -> Loop:
    """Engine, checkpoint and the hooks of this rank; rank 0's status goes live."""
    info = init_distributed(settings)
    checkpointer = Checkpointer(settings.run_dir / "checkpoints", settings.keep_checkpoints)
    committed = checkpointer.committed_tag()
    if committed is not None and not resume:
        raise RunDirInUse(f"{settings.run_dir} holds checkpoint {committed}: pass --resume, or use another run_dir")
    if resume and committed is None:
        log.warning("--resume: no checkpoint in %s: training restarts from the initial weights", settings.run_dir)

    model_dir = resolve_model(settings)
    from shared.modeling import load_tokenizer

    tokenizer = settings.prompt.apply_to(load_tokenizer(model_dir))
    engine = build_engine(settings, model_dir, info)
    trainer = Trainer(engine, settings, info)
    restored = checkpointer.load(engine) if committed is not None else None

    hooks: Follower
    if info.is_main:
        state = restored or _initial_state(settings.run_dir, resume)
        max_len = settings.max_seq_len or getattr(engine.module.config, "max_position_embeddings", None)
        rank0 = Rank0(settings, info, engine, checkpointer, tokenizer, state, metrics, store, stop_event, max_len)
        if restored is not None or state.run_id == _previous_run_id(settings.run_dir):
            # Also after a crash before the first checkpoint: same run, nothing trained yet.
            rank0.resumed(from_checkpoint=restored is not None)
        else:
            rank0.fresh_start()
        (settings.run_dir / RUN_ID_FILE).write_text(state.run_id)
        status.attach(rank0.status)
        tracking = open_step_tracking(settings, lambda ids: tokenizer.decode(ids, skip_special_tokens=False))
        if tracking is not None:
            metrics.observers.append(tracking)
        hooks = rank0
    else:
        hooks = Follower(settings, info, engine, checkpointer)
    log.info("rank %d/%d ready (ZeRO-%d, %s)", info.rank, info.world_size, settings.deepspeed.zero_stage,
             settings.deepspeed.dtype)
    # From here on a stop request is served at the next step boundary, with a checkpoint.
    _install_signal_handlers(stop_event)
    return Loop(hooks, trainer, info)


def _previous_run_id(run_dir: Path) -> str | None:
    path = run_dir / RUN_ID_FILE
    return path.read_text().strip() if path.is_file() else None


def _initial_state(run_dir: Path, resume: bool) -> LearnerState:
    """No checkpoint: a new run, or with --resume the run that crashed before its first checkpoint."""
    previous = _previous_run_id(run_dir) if resume else None
    return LearnerState(run_id=previous or uuid.uuid4().hex[:8])


def _install_signal_handlers(stop_event: threading.Event) -> None:
    def request_stop(signum, _frame):
        if stop_event.is_set():  # a second signal: give up on the clean stop
            raise SystemExit(128 + signum)
        log.warning("signal %d: checkpointing and stopping after the current step", signum)
        stop_event.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
