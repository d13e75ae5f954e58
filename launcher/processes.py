"""Starting and stopping local processes: free ports, a private redis-server, readiness waits.

Used by ``prefix-rft run`` to stand up a local deployment and by the tests, which run every
service as a real process on loopback.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from shared.net import free_port


class ProcessDied(RuntimeError):
    pass


@dataclass
class ManagedProcess:
    """A child process with its log file; ``stop`` is idempotent and escalates to SIGKILL."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    extra: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def check_alive(self) -> None:
        if not self.alive():
            raise ProcessDied(
                f"{self.name} exited with code {self.popen.returncode}; last lines of {self.log_path}:\n"
                f"{self.log_tail()}"
            )

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.alive():
            _signal_group(self.popen, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.popen, signal.SIGKILL)
                self.popen.wait(10)
        return self.popen.returncode

    def kill(self) -> None:
        if self.alive():
            _signal_group(self.popen, signal.SIGKILL)
            self.popen.wait(10)


def _signal_group(popen: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(popen.pid, sig)
    except ProcessLookupError:
        pass


def start_process(
    name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> ManagedProcess:
    """Start ``argv`` in its own process group (so stopping it also stops its children)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("ab")
    popen = subprocess.Popen(
        list(argv),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        start_new_session=True,
    )
    log_file.close()
    return ManagedProcess(name=name, popen=popen, log_path=log_path)


def wait_http_ready(process: ManagedProcess, url: str, timeout: float = 120.0, interval: float = 0.2) -> None:
    """Poll ``url`` until it answers 200; fail early, with the log tail, if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check_alive()
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    raise TimeoutError(f"{process.name} not ready at {url} after {timeout:.0f} s; log tail:\n{process.log_tail()}")


def redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (make install runs: apt-get install redis-server)")
    return binary


def start_redis_server(
    workdir: Path, port: int | None = None, password: str | None = None, appendonly: bool = False
) -> tuple[ManagedProcess, str]:
    """A private redis-server on loopback; returns the process and its URL."""
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        redis_server_binary(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(workdir),
        "--save", "",
        "--appendonly", "yes" if appendonly else "no",
        "--daemonize", "no",
    ]
    if password:
        argv += ["--requirepass", password]
    process = start_process("redis-server", argv, workdir / "redis.log")
    url = f"redis://{':' + password + '@' if password else ''}127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    while True:
        process.check_alive()
        try:
            client.ping()
            break
        except redis.ConnectionError as exc:
            if time.monotonic() > deadline:
                process.kill()
                raise TimeoutError(f"redis-server did not answer on port {port}: {process.log_tail()}") from exc
            time.sleep(0.05)
    client.close()
    process.extra["port"] = port
    return process, url
