"""Which settings a name reaches: the `prefix-rft` sub-commands, and whether a PRFT_ variable or a
nested setting path is one a service reads (used by the deployment contract tests)."""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import BaseModel

from shared.settings import CONFIG_ENV_VAR, ENV_PREFIX
from tests.helpers.deploy import REPO, settings_class

COMMON_SECTIONS = ("redis", "auth")


def cli_commands() -> dict:
    """The `prefix-rft` sub-commands, as click sees them (what the console script runs)."""
    import typer

    from launcher.cli import app

    return typer.main.get_command(app).commands


def variables_read_directly() -> set[str]:
    """PRFT_ variables the code reads itself (os.environ), outside the settings classes."""
    names = {CONFIG_ENV_VAR}
    pattern = re.compile(r"""environ(?:\.get\(|\[|\.setdefault\()\s*["'](PRFT_[A-Z0-9_]+)["']""")
    for path in [*REPO.joinpath("shared").rglob("*.py"), *REPO.joinpath("services").rglob("*.py")]:
        names.update(pattern.findall(path.read_text()))
    return names


# ---- field paths -----------------------------------------------------------------------------------


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _takes_any_key(annotation: Any) -> bool:
    if annotation is Any or typing.get_origin(annotation) is dict or annotation is dict:
        return True
    return any(_takes_any_key(arg) for arg in typing.get_args(annotation))


def setting_path_error(cls: type[BaseModel], path: list[str]) -> str | None:
    """None when ``cls`` has the nested field ``path`` (env names are case-insensitive); else why not."""
    model = cls
    for depth, part in enumerate(path):
        fields = {name.lower(): info for name, info in model.model_fields.items()}
        info = fields.get(part.lower())
        where = ".".join(path[: depth + 1])
        if info is None:
            return f"'{where}' is not a setting of {cls.__name__} (there: {', '.join(sorted(fields))})"
        if depth == len(path) - 1:
            return None
        nested = _nested_model(info.annotation)
        if nested is None:
            return None if _takes_any_key(info.annotation) else f"'{where}' has no sub-settings"
        model = nested
    return None


def env_name_error(service: str, name: str) -> str | None:
    """None when the ``service`` container reads the variable ``name``; else why it does not."""
    if not name.startswith(ENV_PREFIX):
        return None  # not ours (VLLM_*, POD_IP, ...)
    if name in variables_read_directly():
        return None
    parts = name[len(ENV_PREFIX) :].split("__")
    section = parts[0].lower()
    if len(parts) < 2:
        return f"{name}: not PRFT_<SECTION>__<KEY> and not read by the code"
    if section in COMMON_SECTIONS:
        return setting_path_error(settings_class(service), parts)
    if section != service:
        known = ", ".join((*COMMON_SECTIONS, service))
        return f"{name}: section '{section}' is not read by the {service} service (it reads {known})"
    return setting_path_error(settings_class(service), parts[1:])
