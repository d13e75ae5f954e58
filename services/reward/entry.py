"""The reward service's command line: ``python -m services.reward`` and ``prefix-rft reward``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from shared.service_cli import load_or_exit, service_parser


def build_parser() -> argparse.ArgumentParser:
    parser = service_parser("prefix-rft reward", "Serve the reward service: POST /v1/score verifies math answers.")
    parser.add_argument("--host", help="Interface to bind (default 127.0.0.1).")
    parser.add_argument("--port", type=int, help="Port (default 8001).")
    parser.add_argument("--workers", type=int, help="Verifier processes.")
    parser.add_argument("--item-timeout-s", type=float, help="Hard deadline per item, in seconds.")
    parser.add_argument("--log-level", help="critical, error, warning, info, debug or trace.")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)

    # Imported here: the verifier processes re-import this module and need none of it.
    from services.reward.main import serve
    from services.reward.registry import BadVerifier
    from services.reward.settings import RewardSettings

    settings = load_or_exit(
        parser, RewardSettings, args, host=args.host, port=args.port, workers=args.workers,
        item_timeout_s=args.item_timeout_s, log_level=args.log_level,
    )
    try:
        serve(settings)
    except BadVerifier as exc:  # a verifier path or plug-in that cannot be used: say which, no traceback
        parser.exit(2, f"error: {exc}\n")
