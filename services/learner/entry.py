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
    parser.add_argument(
        "--report-to", metavar="TRACKERS",
        help="Log step records to tensorboard, wandb, mlflow, trackio (comma-separated) or none; "
        "same as --set learner.tracking.report_to=...",
    )
    # The deepspeed launcher passes it; the rank comes from the environment (RANK, LOCAL_RANK).
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)

    from services.learner.main import serve
    from services.learner.settings import LearnerSettings

    if args.report_to is not None:
        args.sets.append(f"learner.tracking.report_to={args.report_to}")
    settings = load_or_exit(parser, LearnerSettings, args)
    model_folder_or_exit(parser, settings.model, "learner.model")
    from shared.tracking import TrackerUnavailable, check_available

    try:
        check_available(settings.tracking.report_to)
    except TrackerUnavailable as exc:
        parser.exit(2, f"error: {exc}\n")
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=settings.python_log_level,
        format=f"%(asctime)s %(levelname)s [rank {rank}] %(name)s: %(message)s",
    )
    serve(settings, resume=args.resume)
