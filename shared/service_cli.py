"""The command line every service shares: ``--config FILE`` and repeatable ``--set SECTION.KEY=VALUE``,
loaded into the service's settings with the same errors as the YAML file (a message, exit code 2)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TypeVar

from shared.settings import ServiceSettings, SettingsError, load_settings, parse_sets

S = TypeVar("S", bound=ServiceSettings)

SET_HELP = (
    "Override one setting, e.g. --set learner.optimizer.lr=2e-4 (repeatable; values are read as YAML; "
    "over env vars PRFT_<SECTION>__<KEY> and the config file)."
)


def service_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", type=Path, default=None, help="Job YAML file (default: $PRFT_CONFIG).")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE", help=SET_HELP)
    return parser


def load_or_exit(parser: argparse.ArgumentParser, cls: type[S], args: argparse.Namespace, **flags: Any) -> S:
    """The settings of ``cls``; the flags that were given (not None) override the file and env vars,
    ``--set`` overrides them all. A bad value ends the process with a message naming it."""
    given = {key: value for key, value in flags.items() if value is not None}
    try:
        return load_settings(cls, args.config, sets=parse_sets(args.sets), **given)
    except SettingsError as exc:
        parser.exit(2, f"error: {exc}\n")


def model_folder_or_exit(parser: argparse.ArgumentParser, model: str | Path | None, setting: str) -> None:
    """A service given a model folder without a usable tokenizer (or weights, or config) ends with a
    message saying what is missing, before its engine starts (vLLM would fail later, in a traceback)."""
    if model is None:
        return
    from shared.modeling import ModelFolderError, load_tokenizer

    try:
        load_tokenizer(model)
    except ModelFolderError as exc:
        parser.exit(2, f"error: {setting}: {exc}\n")
