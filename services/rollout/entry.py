"""A rollout worker's command line: ``python -m services.rollout`` and ``prefix-rft rollout``."""

from __future__ import annotations

import argparse
import gc
from collections.abc import Sequence

from shared.service_cli import load_or_exit, model_folder_or_exit, service_parser


def build_parser() -> argparse.ArgumentParser:
    parser = service_parser(
        "prefix-rft rollout",
        "Serve a rollout worker: a vLLM engine behind POST /v1/generate, consuming tasks from Redis.",
    )
    parser.add_argument("--model", help="Local Hugging Face model directory (default: the built-in base policy).")
    parser.add_argument("--host", help="Interface to bind (default 127.0.0.1).")
    parser.add_argument("--port", type=int, help="Port (default 8000).")
    parser.add_argument("--public-url", help="URL registered for weight pushes (default: http://host:port).")
    parser.add_argument("--worker-id", help="Consumer name and registry key (default: hostname-pid).")
    parser.add_argument("--reward-url", help="Reward service base URL.")
    parser.add_argument(
        "--worker", action=argparse.BooleanOptionalAction, default=None, help="Consume tasks from Redis (default on)."
    )
    parser.add_argument("--log-level", help="critical, error, warning, info, debug or trace.")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    # Start-up creates millions of objects that live as long as the process (torch, vLLM, transformers):
    # the collector's full passes over them were about 20% of the import time, for nothing to collect.
    # services.rollout.main freezes them and turns it back on once the engine is ready.
    gc.disable()
    parser = build_parser()
    args = parser.parse_args(argv)

    from services.rollout.settings import RolloutSettings

    settings = load_or_exit(
        parser, RolloutSettings, args, model=args.model, host=args.host, port=args.port,
        public_url=args.public_url, worker_id=args.worker_id, reward_url=args.reward_url,
        worker_enabled=args.worker, log_level=args.log_level,
    )
    from services.rollout import engine_child, unused_packages

    unused_packages.hide(settings.hide_packages)  # before anything imports transformers, forkserver included
    engine_child.start_forkserver()  # imports the engine core's modules while this process imports its own
    model_folder_or_exit(parser, settings.model, "rollout.model")
    from services.rollout.main import serve

    serve(settings)
