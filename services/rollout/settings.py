"""Rollout service settings: the ``rollout`` section of the job's YAML file (env vars ``PRFT_ROLLOUT__*``)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from shared.settings import ServiceSettings, public_base_url
from shared.weights.settings import SwarmSettings


class RolloutSettings(ServiceSettings):
    yaml_section = "rollout"

    host: str = "127.0.0.1"  # loopback unless a deployment asks for more
    port: int = Field(8000, ge=1, le=65535)
    # Local Hugging Face model directory; None: the built-in base policy (built on first use).
    model: Path | None = None
    # Where the learner reaches this worker (registered in Redis); None: see shared.settings.public_base_url.
    public_url: str | None = None
    # Consumer name in the tasks stream and key in the workers registry; None: {hostname}-{pid}.
    worker_id: str | None = None
    reward_url: str = "http://127.0.0.1:8001"

    # The name the OpenAI-compatible routes serve the model under (GET /v1/models lists it; requests
    # name it in "model" or leave it out).
    served_model_name: str = Field("prefix-rft", min_length=1)
    # Chat template of POST /v1/chat/completions: a Jinja file or the template text; None: the served
    # tokenizer's own (a model without one gets 400s on chat completions until this is set).
    chat_template: str | None = None

    # Engine. "auto": float32 on CPU, bfloat16 on GPUs.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int | None = Field(None, ge=16)  # None: the model's own context length
    kv_cache_gib: int = Field(1, ge=1)  # CPU only (VLLM_CPU_KVCACHE_SPACE); GPUs use gpu_memory_utilization
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0)
    enable_prefix_caching: bool = True  # the N samples of a group share the prompt
    seed: int = 0
    # Top-level packages this process and its engine core must not import: transformers imports these
    # whenever they are installed, and a rollout process uses neither (services/rollout/unused_packages.py).
    # Empty: hide none (a vLLM plugin of yours that needs one of them).
    hide_packages: list[str] = Field(default_factory=lambda: ["sklearn", "scipy"])
    # Anything else AsyncEngineArgs takes (e.g. tensor_parallel_size on a multi-GPU node).
    engine_args: dict[str, Any] = Field(default_factory=dict)

    # Request limits: larger requests get a 4xx instead of reaching the engine.
    max_n: int = Field(64, ge=1)
    max_tokens: int = Field(4096, ge=1)
    max_prompt_chars: int = Field(1_000_000, ge=1)
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1)  # checked before the body is parsed (413)

    # Worker loop: consumes tasks from Redis when enabled.
    worker_enabled: bool = True
    max_inflight_tasks: int = Field(4, ge=1, le=1024)
    heartbeat_s: float = Field(2.0, gt=0.0)
    # Tasks pending this long on a consumer that stopped refreshing them are taken over.
    reclaim_idle_ms: int = Field(30_000, ge=100)
    # A task delivered this many times without producing a group goes to the dead letters.
    max_deliveries: int = Field(5, ge=1)
    # On SIGTERM: time to finish tasks in flight before releasing them to other workers.
    drain_timeout_s: float = Field(60.0, ge=0.0)
    # Then the engine core gets SIGTERM and this long before SIGKILL. No task is left in it by then
    # (finished or handed back), and its own teardown is a full garbage collection of its heap
    # (longer than vLLM's default 5 s grace on CPU) that a process about to end does not need.
    # 0: SIGKILL at once (vLLM still gives ROCm, whose teardown frees device memory, its own grace).
    engine_shutdown_grace_s: float = Field(0.0, ge=0.0)

    # Reward service calls: each attempt has a timeout; failures back off up to reward_retries times.
    reward_timeout_s: float = Field(120.0, gt=0.0)
    reward_retries: int = Field(6, ge=0)
    reward_backoff_s: float = Field(0.5, gt=0.0)

    weights_fetch_timeout_s: float = Field(600.0, gt=0.0)
    # Where http(s) weights are downloaded before a swap (deleted after it); None: the system temp dir.
    download_dir: Path | None = None
    # This worker's node when versions come through the swarm transport (its port, limits, storage).
    swarm: SwarmSettings = SwarmSettings()
    access_log: bool = False

    def resolved_worker_id(self) -> str:
        return self.worker_id or f"{socket.gethostname()}-{os.getpid()}"

    def public_base_url(self) -> str:
        return public_base_url(self.host, self.port, self.public_url)
