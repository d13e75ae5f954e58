"""What the forkserver that forks the engine core imports while the rollout process imports its own
(``engine_child.start_forkserver``): the engine core then starts with torch and vLLM already loaded.

The collector is off while importing (millions of long-lived objects, nothing to collect, as in
``entry.main``), and the heap is frozen afterwards so the engine core's collections skip what it
inherits; ``engine_child.run_engine_core`` turns the collector back on in the engine core. A module
that fails to import (a platform's worker on another platform) is left to the engine core to import.
The forkserver, like the engine core, dies with the rollout process.
"""

from __future__ import annotations

import gc
import importlib
import signal

from services.rollout import engine_child, unused_packages

MODULES = (
    "torch",
    "vllm.v1.engine.core",
    "vllm.v1.executor.uniproc_executor",
    "vllm.v1.worker.gpu_worker",
    "vllm.v1.worker.cpu_worker",
    "vllm.v1.worker.cpu_model_runner",
    "vllm.v1.attention.backends.cpu_attn",
    "vllm.model_executor.model_loader",
    "services.rollout.engine_ext",
)

# The forkserver dies with the rollout process at once (its own exit, once the alive pipe closes,
# tears down torch and vLLM: seconds), and the engine core it forked follows it.
engine_child.die_with_parent()
# A SIGTERM to the rollout's process group (a launcher stopping it) is for the rollout process, which
# shuts the engine down in order: the forkserver dying of it would kill the engine core under it.
signal.signal(signal.SIGTERM, signal.SIG_IGN)
gc.disable()
unused_packages.hide_inherited()
for name in MODULES:
    try:
        importlib.import_module(name)
    except ImportError:
        pass
try:
    import setproctitle

    # vLLM names the engine core's process "VLLM::EngineCore" with setproctitle, which finds the
    # memory it rewrites on its first use: after the child's environment is replaced (engine_child)
    # it no longer can, and the process would stay "python". Found now, the children inherit it.
    setproctitle.getproctitle()
except ImportError:
    pass
gc.freeze()
