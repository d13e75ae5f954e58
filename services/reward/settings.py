"""Reward service settings: the ``reward`` section of the job's YAML file (env vars ``PRFT_REWARD__*``)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field

from shared.settings import ServiceSettings


class RewardSettings(ServiceSettings):
    yaml_section = "reward"

    host: str = "127.0.0.1"
    port: int = Field(8001, ge=1, le=65535)
    # Verifier processes; each scores one item at a time. (Named before they were called verifier
    # processes; kept, since job files and PRFT_REWARD__WORKERS use it.)
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    # Hard deadline per item, from the moment it is handed to a verifier process.
    item_timeout_s: float = Field(5.0, gt=0.0, le=600.0)
    max_items_per_request: int = Field(1024, ge=1)
    max_text_bytes: int = Field(64 * 1024, ge=1)  # per response and per reference, UTF-8
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1)
    # Address-space cap per verifier process: a runaway expression ends in MemoryError (status "error")
    # instead of waking the kernel's OOM killer. None: no cap.
    worker_memory_mb: int | None = Field(4096, ge=256)
    worker_start_timeout_s: float = Field(60.0, gt=0.0)
    # How the math verifier reads an answer (services/reward/answers/rules.py). "standard": what
    # math-verify, the MATH grader and verl's math_dapo agree on (a labelled "x = 2" matches a
    # reference 2, a unit after a number is dropped, an approximation next to an exact value is
    # ignored). "strict": a label or unit the reference does not have makes the answer wrong, and
    # the rules marked lenient are off (math-verify still reads "a \approx b" as a by itself).
    strictness: Literal["standard", "strict"] = "standard"
    # Verifiers by ``module:function`` path, on top of the installed entry points (``prefix_rft.verifiers``);
    # requests name them by the path. Each is imported at start-up: a bad one stops the service.
    verifier_paths: list[str] = Field(default_factory=list)
    access_log: bool = False  # one log line per request costs CPU the verifiers could use
