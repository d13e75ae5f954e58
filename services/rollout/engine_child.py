"""The vLLM engine core process dies with the rollout process that started it.

vLLM's AsyncLLM always runs its EngineCore in a child process (``make_client`` refuses asyncio without
multiprocessing; ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` only affects the synchronous ``LLM``), and that
child does not watch its parent: when the rollout process is SIGKILLed (OOM killer, ``kill -9``, a
node agent) the EngineCore lives on as an orphan holding the model (1.7 GB resident on the built-in
model; a GPU's memory on a GPU).

The child asks the kernel for SIGKILL when its parent goes (``prctl(PR_SET_PDEATHSIG)``): the kernel
delivers it even when the child is stuck in a C call holding the GIL, where a watchdog thread polling
the parent would never run, and SIGKILL cannot be caught or ignored. Set from inside the child (the
only place it can be set), by wrapping the process target vLLM starts, which works for both the fork
and the spawn start methods (the wrapper is a module-level function, so spawn pickles it by name).
The engine's own children (a multi-GPU executor's workers) already watch the EngineCore through vLLM's
death pipe, so they follow it.

PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not only the process (checked
here: a child forked from a thread that then returned got SIGKILL): ``RolloutEngine`` builds the engine
on a thread of its own that lives until the engine is shut down. Where prctl is unavailable (not
Linux) a daemon thread polls the parent instead.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import signal
import threading
import time

PR_SET_PDEATHSIG = 1
WATCH_INTERVAL_S = 0.5

_original_target = None  # EngineCoreProc.run_engine_core before install(); inherited by a forked child


def install() -> None:
    """Make every EngineCore process started from now on die with this process. Idempotent."""
    global _original_target
    from vllm.v1.engine.core import EngineCoreProc

    if _original_target is not None:
        return
    _original_target = EngineCoreProc.run_engine_core
    EngineCoreProc.run_engine_core = staticmethod(run_engine_core)


def run_engine_core(*args, **kwargs):
    """The EngineCore process's target: bind the child's life to its parent's, then run vLLM's."""
    die_with_parent()
    # A forked child inherits the rollout process's start-up state, collector off (entry.main); the
    # engine core runs for the life of the worker and must collect.
    gc.enable()
    target = _original_target
    if target is None:  # a spawned child imports this module afresh: vLLM's class is not wrapped there
        from vllm.v1.engine.core import EngineCoreProc

        target = EngineCoreProc.run_engine_core
    return target(*args, **kwargs)


def die_with_parent() -> None:
    parent = multiprocessing.parent_process()
    parent_pid = parent.pid if parent is not None else os.getppid()
    if not _set_parent_death_signal(signal.SIGKILL):
        threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watch", daemon=True).start()
    # The parent may have died between the fork and the prctl call: then no signal will ever come.
    if os.getppid() != parent_pid:
        os._exit(1)


def _set_parent_death_signal(sig: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCH_INTERVAL_S)
    os._exit(1)
