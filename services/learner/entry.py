"""The learner's command line: ``python -m services.learner`` and ``prefix-rft learner``, also under
torchrun or the deepspeed launcher (which add ``--local_rank``)."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from shared.service_cli import load_or_exit, model_folder_or_exit, service_parser


def build_parser() -> argparse.ArgumentParser:
    parser = service_parser("prefix-rft learner", "Run the DeepSpeed learner (also under torchrun or deepspeed).")
    parser.add_argument(
        "--resume", action="store_true", help="Continue from the run directory's last checkpoint."
    )
    # The deepspeed launcher passes it; the rank comes from the environment (RANK, LOCAL_RANK).
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)

    from services.learner.main import serve
    from services.learner.settings import LearnerSettings

    settings = load_or_exit(parser, LearnerSettings, args)
    model_folder_or_exit(parser, settings.model, "learner.model")
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=settings.python_log_level,
        format=f"%(asctime)s %(levelname)s [rank {rank}] %(name)s: %(message)s",
    )
    serve(settings, resume=args.resume)
