"""The ``prefix-rft`` command line: one sub-command per service, plus the jobs built on them."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console

from shared.settings import SettingsError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Prefix-RFT: blend SFT and RFT by prefix sampling.")
console = Console(stderr=True)


@app.callback()
def main() -> None:
    """Prefix-RFT: blend SFT and RFT by prefix sampling."""


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


@app.command("build-default-model")
def build_default_model_command(
    cache_dir: Path = typer.Option(None, help="Where built models are cached (default: $PRFT_CACHE_DIR or ~/.cache/prefix-rft)."),
) -> None:
    """Build (or find in the cache) the built-in tokenizer, model and warmed-up base policy."""
    from shared.base_policy import default_base_policy

    setup_logging()
    path = default_base_policy(cache_dir=cache_dir)
    typer.echo(str(path))


def load_or_fail(settings_cls, config: Path | None, **overrides):
    """Settings for a sub-command; a bad value stops with a message naming it."""
    from shared.settings import load_settings

    try:
        return load_settings(settings_cls, config, **overrides)
    except SettingsError as exc:
        fail(str(exc))


if __name__ == "__main__":
    app()
