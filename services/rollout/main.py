"""One rollout process: the HTTP API at once (/healthz answers while the engine loads), then the engine,
then the task worker. SIGTERM or SIGINT: stop taking tasks, finish or hand back those in flight,
deregister, stop the server, shut the engine down, exit 0. If the engine dies, exit 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from pathlib import Path

import uvicorn

from services.rollout.settings import RolloutSettings

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: this process decides the order of shutdown."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def resolve_model(settings: RolloutSettings) -> Path:
    if settings.model is not None:
        if not (settings.model / "config.json").is_file():
            raise FileNotFoundError(f"rollout.model {settings.model} is not a Hugging Face model directory")
        return settings.model
    from shared.base_policy import default_base_policy

    return default_base_policy()


async def run(settings: RolloutSettings) -> int:
    from services.rollout.engine import RolloutEngine, configure_vllm_environment
    from services.rollout.metrics import RolloutMetrics
    from services.rollout.updates import WeightUpdater

    configure_vllm_environment(settings)
    from services.rollout.app import create_app

    model_path = resolve_model(settings)
    metrics = RolloutMetrics()
    engine = RolloutEngine(settings, model_path, metrics)
    token = settings.auth.token.get_secret_value() or None
    swarm = _worker_swarm(settings, token)
    updater = WeightUpdater(
        engine, metrics, settings.weights_fetch_timeout_s, settings.download_dir, token, swarm=swarm
    )
    app = create_app(settings, engine, updater, metrics)
    server = _Server(
        uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level=settings.log_level,
            access_log=settings.access_log, timeout_graceful_shutdown=5,
        )
    )

    stop = asyncio.Event()
    fatal: list[str] = []

    def on_fatal(reason: str) -> None:
        log.error("stopping: %s", reason)
        fatal.append(reason)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    server_task = asyncio.create_task(server.serve(), name="http")
    worker = None
    try:
        # The engine core is forked from this process: frozen, the heap it inherits (every module
        # imported so far) is skipped by its collections, the full one vLLM runs before it says it is
        # ready included, and fewer of its pages are copied from this process. (On CPU vLLM's platform
        # forces spawn: the engine core is a fresh interpreter and this does not apply.)
        gc.freeze()
        await engine.start()
        # Start-up is over (entry.main turned the collector off): what exists now lives as long as the
        # process; frozen, the collections from now on skip it (vLLM's engine core does the same).
        gc.freeze()
        gc.enable()
        if settings.worker_enabled and not stop.is_set():
            from services.rollout.worker import TaskWorker

            worker = TaskWorker(settings, engine, updater, metrics, on_fatal)
            worker.launch()
        watch = asyncio.create_task(_watch_engine(engine, on_fatal), name="engine-watch")
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([server_task, stopped], return_when="FIRST_COMPLETED")
        watch.cancel()
        stopped.cancel()
        if server_task in done:
            server_task.result()  # the server failed (e.g. the port is taken): raise its error
            return 1
        log.info("shutting down")
        if worker is not None:
            await worker.stop()
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await server_task
        engine.shutdown()
        if swarm is not None:
            swarm.close()
    return 1 if fatal else 0


def _worker_swarm(settings: RolloutSettings, token: str | None):
    """The worker's swarm node (started by the first version that comes through the swarm); None where
    libtorrent (the swarm extra) is not installed: such a worker takes versions by http or file only."""
    try:
        from services.rollout.swarm import WorkerSwarm
    except ImportError:
        return None
    return WorkerSwarm(settings, token)


async def _watch_engine(engine, on_fatal) -> None:
    while True:
        await asyncio.sleep(1.0)
        if engine.dead_reason is not None:
            on_fatal(f"the engine is down: {engine.dead_reason}")
            return


def serve(settings: RolloutSettings) -> None:
    """Run the rollout service until SIGTERM (``prefix-rft rollout`` and ``python -m services.rollout``)."""
    logging.basicConfig(
        level=settings.python_log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    code = asyncio.run(run(settings))
    # Everything is shut down; what is left is the interpreter's teardown, whose garbage collections
    # walk the whole object graph of torch and vLLM (measured here on a loaded machine: 10.7 s, 1.3 s
    # frozen), most of an idle worker's time from SIGTERM to exit. Frozen objects are skipped, and
    # the operating system reclaims their memory anyway.
    gc.freeze()
    if code:
        sys.exit(code)
