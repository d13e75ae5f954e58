"""A whole local deployment as separate processes on loopback: redis-server, reward, rollout workers,
learner. Every process logs to a file in the run directory; ``stop`` ends all of them, and
``check`` names the first one that died, with the tail of its log.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.cpus import CorePlan, pin, thread_env
from launcher.processes import (
    ManagedProcess,
    ProcessDied,
    free_port,
    start_process,
    start_redis_server,
    wait_http_ready,
)

log = logging.getLogger(__name__)

# Stop order by the first part of a process's name (rollout-0 -> "rollout"); unnamed roles go with the workers.
_STOP_ORDER = {"learner": 0, "rollout": 1, "reward": 2, "redis": 3}


@dataclass
class LocalDeployment:
    run_dir: Path
    config_path: Path
    redis_url: str | None = None  # None: start a private redis-server
    processes: list[ManagedProcess] = field(default_factory=list)
    reward_url: str = ""
    rollout_urls: list[str] = field(default_factory=list)
    learner_url: str = ""
    # Disjoint cores for the learner and each worker (None: every process may use every core).
    cores: CorePlan | None = None
    # Services started with wait=False, with the URL that answers 200 once each is ready.
    starting: list[tuple[ManagedProcess, str, float]] = field(default_factory=list)

    def service_argv(self, service: str, sets: dict[str, Any], *flags: str) -> list[str]:
        """``python -m services.<service>`` on the job's file, with what this process alone has (its port,
        its worker id) as --set overrides, the same as a user would give them."""
        if self.redis_url:
            sets = {"redis.url": self.redis_url, **sets}
        argv = ["-m", f"services.{service}", "--config", str(self.config_path), *flags]
        for key, value in sets.items():
            argv += ["--set", f"{key}={json.dumps(value)}"]  # JSON is YAML: a path stays a string
        return argv

    def start_redis(self) -> str:
        if self.redis_url is None:
            process, self.redis_url = start_redis_server(self.run_dir / "redis", appendonly=True)
            self._register(process)
        return self.redis_url

    def restart_redis(self) -> None:
        """Stop the private redis-server (SIGTERM: it flushes its append-only file) and start it again
        on the same port and directory, so it reloads every key."""
        old = self.process("redis-server")
        port = old.extra["port"]
        old.stop()
        process, _ = start_redis_server(self.run_dir / "redis", port=port, appendonly=True)
        self._register(process)

    def start_reward(self, workers: int, port: int | None = None, wait: bool = True) -> str:
        """``port``: the port of a reward service that stopped (the workers know its URL). ``wait=False``:
        return once it is started; :meth:`wait_ready` waits for it (the services start in parallel)."""
        port = port or free_port()
        process = self._start("reward", self.service_argv("reward", {"reward.port": port, "reward.workers": workers}))
        self.reward_url = f"http://127.0.0.1:{port}"
        self._ready_at(process, f"{self.reward_url}/healthz", 120, wait)
        return self.reward_url

    def start_rollout_worker(
        self, model: Path, index: int, consume_tasks: bool = True, env: dict[str, str] | None = None, wait: bool = True
    ) -> str:
        """``consume_tasks=False`` serves HTTP only (evaluation without Redis). ``env``: what only this
        worker gets (its CUDA_VISIBLE_DEVICES). ``wait``: as for :meth:`start_reward`."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        sets = {
            "rollout.port": port,
            "rollout.model": str(model),
            "rollout.public_url": url,
            "rollout.reward_url": self.reward_url,
            "rollout.worker_id": f"rollout-{index}",
            "rollout.worker_enabled": consume_tasks,
        }
        # Each engine needs its own RPC path when several share a machine. vLLM's cache (VLLM_CACHE_ROOT,
        # ~/.cache/vllm by default) is shared: its entries are written atomically, and a fresh one costs
        # every start a subprocess that imports vLLM to inspect the model class (about 20 s on 2 cores).
        env = {
            "VLLM_RPC_BASE_PATH": str(self.run_dir / f"vllm-rpc-{index}"),
            **(env or {}),
        }
        cores = self.cores.workers[index % len(self.cores.workers)] if self.cores else None
        process = self._start(f"rollout-{index}", self.service_argv("rollout", sets), env, cores)
        self.rollout_urls.append(url)
        self._ready_at(process, f"{url}/readyz", 300, wait)
        return url

    def start_learner(
        self, resume: bool = False, ranks: int = 1, env: dict[str, str] | None = None, wait: bool = True
    ) -> str:
        """One process, or with ``ranks`` > 1 torchrun starting that many (data-parallel, gloo on CPUs,
        NCCL on GPUs) in its process group, so stopping it stops them all. Rank 0 serves HTTP.
        ``env``: what only the learner gets (its CUDA_VISIBLE_DEVICES; rank i takes the i-th device).
        ``wait``: as for :meth:`start_reward`."""
        port = free_port()
        argv = self.service_argv("learner", {"learner.port": port}, *(["--resume"] if resume else []))
        if ranks > 1:
            argv = [
                "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(ranks),
                "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *argv,
            ]
        cores = self.cores.learner if self.cores else None
        env = dict(env or {})
        if cores is not None and ranks > 1:  # the ranks share the learner's cores
            env["OMP_NUM_THREADS"] = str(max(1, len(cores) // ranks))
        process = self._start("learner", argv, env, cores)
        self.learner_url = f"http://127.0.0.1:{port}"
        self._ready_at(process, f"{self.learner_url}/v1/status", 300, wait)
        return self.learner_url

    def wait_ready(self) -> None:
        """Wait for every service started with ``wait=False``; the first that dies or times out raises,
        naming it, with its log tail."""
        while self.starting:
            process, url, timeout = self.starting.pop(0)
            wait_http_ready(process, url, timeout=timeout)

    def _ready_at(self, process: ManagedProcess, url: str, timeout: float, wait: bool) -> None:
        self.starting.append((process, url, timeout))
        if wait:
            self.wait_ready()

    def process(self, name: str) -> ManagedProcess:
        """The latest process started under ``name`` (a restarted service replaces the one before)."""
        return next(p for p in reversed(self.processes) if p.name == name)

    def check(self, allow_exited: tuple[str, ...] = ()) -> None:
        """Raise :class:`ProcessDied` naming the first process that exited (except those allowed to)."""
        latest = {p.name: p for p in self.processes}
        for process in latest.values():
            if process.name not in allow_exited:
                process.check_alive()

    def stop(self) -> None:
        """The learner first, then the workers (which finish their tasks, talking to the reward service
        and Redis), then the reward service, then redis-server: by role, not by start order, which a
        restarted service changes."""
        for process in sorted(reversed(self.processes), key=lambda p: _STOP_ORDER.get(p.name.split("-")[0], 1)):
            code = process.stop()
            log.info("stopped %s (pid %d, exit code %s)", process.name, process.pid, code)

    def _start(
        self, name: str, module_argv: list[str], env: dict[str, str] | None = None, cores: tuple[int, ...] | None = None
    ) -> ManagedProcess:
        """``env`` over the thread pools sized to ``cores``."""
        env = {"PYTHONUNBUFFERED": "1", **(thread_env(cores) if cores is not None else {}), **(env or {})}
        process = start_process(name, [sys.executable, *module_argv], self.run_dir / "logs" / f"{name}.log", env=env)
        if cores is not None:
            pin(process.pid, cores)
        self._register(process)
        pinned = f", cores {list(cores)}" if cores else ""
        log.info("started %s (pid %d%s), log %s", name, process.pid, pinned, process.log_path)
        return process

    def _register(self, process: ManagedProcess) -> None:
        self.processes.append(process)
        # Written as processes start, so an operator (or a test) can find every pid of the run.
        (self.run_dir / "processes.json").write_text(
            json.dumps([{"name": p.name, "pid": p.pid, "log": str(p.log_path)} for p in self.processes], indent=1)
        )


__all__ = ["LocalDeployment", "ProcessDied"]
