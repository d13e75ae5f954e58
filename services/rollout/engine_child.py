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

Where vLLM would spawn the engine core (always on CPU: a fresh interpreter that imports torch and vLLM
again, after the rollout process has imported them: the larger part of the start-up), it is forked
from a forkserver instead, started by ``start_forkserver`` at the beginning of the rollout process and
importing torch and vLLM (``engine_preload``) while the rollout process imports its own: the two
import phases run side by side instead of one after the other. The forkserver is a single-threaded
process that has only imported modules, so forking from it is as safe as spawning. It has a
parent-death signal of its own: a SIGKILLed rollout process takes the forkserver with it at once, and
the forkserver the engine core.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.context import ForkServerContext, ForkServerProcess

PR_SET_PDEATHSIG = 1
WATCH_INTERVAL_S = 0.5

PRELOAD_MODULE = "services.rollout.engine_preload"

_original_target = None  # EngineCoreProc.run_engine_core before install(); inherited by a forked child
_forkserver_pid = 0  # the preloaded forkserver's, once start_forkserver ran; 0 when none runs


class _ProcessWithCallersEnvironment(ForkServerProcess):
    """A forkserver's child runs with the environment its caller had at ``start()``, as a spawned
    child does: vLLM sets the engine core's OMP_NUM_THREADS and its platform's variables just before
    starting it, after the forkserver (whose environment a forked child would otherwise keep) started."""

    def start(self) -> None:
        self._callers_environment = dict(os.environ)
        super().start()

    def run(self) -> None:
        os.environ.clear()
        os.environ.update(self._callers_environment)
        super().run()


class _PreloadedForkServer(ForkServerContext):
    Process = _ProcessWithCallersEnvironment


def start_forkserver() -> None:
    """Start the forkserver the engine core will be forked from, importing ``engine_preload`` now,
    while this process goes on with its own imports. Call it early, before importing torch."""
    global _forkserver_pid
    from multiprocessing import forkserver

    forkserver.set_forkserver_preload([PRELOAD_MODULE])
    forkserver.ensure_running()
    _forkserver_pid = forkserver._forkserver._forkserver_pid
    # It notices this process's exit only once its imports are done: a start that fails before the
    # engine (a bad model folder) would leave it importing for seconds after the message.
    atexit.register(_stop_forkserver, _forkserver_pid)


def _stop_forkserver(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def install() -> None:
    """Make every EngineCore process started from now on die with this process, and fork it from the
    preloaded forkserver where vLLM would spawn it (when ``start_forkserver`` ran). Idempotent."""
    global _original_target
    import vllm.v1.engine.utils as engine_utils
    from vllm.v1.engine.core import EngineCoreProc

    if _original_target is not None:
        return
    _original_target = EngineCoreProc.run_engine_core
    EngineCoreProc.run_engine_core = staticmethod(run_engine_core)
    vllms_context = engine_utils.get_mp_context

    def get_mp_context():
        global _forkserver_pid
        context = vllms_context()
        if _forkserver_pid and context.get_start_method() == "spawn":
            return _PreloadedForkServer()
        if _forkserver_pid:  # vLLM forks from this process (a GPU): the forkserver's memory is not needed
            _stop_forkserver(_forkserver_pid)
            _forkserver_pid = 0
        return context

    engine_utils.get_mp_context = get_mp_context


def run_engine_core(*args, **kwargs):
    """The EngineCore process's target: bind the child's life to its parent's, then run vLLM's."""
    die_with_parent()
    # A group of its own: a SIGTERM to the rollout's process group (a launcher stopping it, Ctrl-C in a
    # terminal) is for the rollout process, which drains its tasks and then stops the engine. Caught by
    # the engine core too, it killed the engine under a swap in progress and the worker never exited.
    # (It still dies with its parent: die_with_parent.)
    os.setpgid(0, 0)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the forkserver ignores it (engine_preload); vLLM sets its own
    # A forked child inherits the rollout process's start-up state, collector off (entry.main); the
    # engine core runs for the life of the worker and must collect.
    gc.enable()
    target = _original_target
    if target is None:  # a spawned child imports this module afresh: vLLM's class is not wrapped there
        from vllm.v1.engine.core import EngineCoreProc

        target = EngineCoreProc.run_engine_core
    return target(*args, **kwargs)


def die_with_parent() -> None:
    owner = multiprocessing.parent_process()  # the rollout process
    owner_pid = owner.pid if owner is not None else os.getppid()
    forker = os.getppid()  # the rollout process, or the forkserver that forked this one for it
    if not _set_parent_death_signal(signal.SIGKILL):
        threading.Thread(target=_watch_parent, args=(forker,), name="parent-watch", daemon=True).start()
    # The parent may have died between the fork and the prctl call: then no signal will ever come.
    if os.getppid() != forker or not _alive(owner_pid):
        os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
