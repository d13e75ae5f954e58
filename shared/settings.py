"""Typed settings: ``--set`` overrides over environment variables (prefix ``PRFT_``) over an optional YAML
file over defaults.

One YAML file configures a whole job; each service reads its own section of it, e.g.::

    redis:   {url: redis://127.0.0.1:6379/0, namespace: prft}
    reward:  {port: 8001, workers: 2}
    learner: {algorithm: {name: prefix-rft}}

Environment variables override the file: ``PRFT_<SECTION>__<KEY>`` for a service's own keys
(``PRFT_REWARD__PORT=9001``, ``PRFT_LEARNER__ALGORITHM__NAME=sft``) and ``PRFT_REDIS__URL``,
``PRFT_AUTH__TOKEN`` for the job-wide sections. Dotted overrides (``--set learner.optimizer.lr=2e-4``,
see :func:`parse_sets`) override both. Unknown keys and wrong types stop start-up with a message
naming the offending key by its dotted path (see :class:`SettingsError`), whichever layer it came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

ENV_PREFIX = "PRFT_"
CONFIG_ENV_VAR = "PRFT_CONFIG"
COMMON_SECTIONS = ("redis", "auth")
LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]


class SettingsError(ValueError):
    """A configuration value is wrong; the message names every offending key."""


class StrictModel(BaseModel):
    """A settings section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class RedisSettings(StrictModel):
    url: str = "redis://127.0.0.1:6379/0"
    namespace: str = Field("prft", pattern=r"^[A-Za-z0-9_.-]+$")


class AuthSettings(StrictModel):
    # Bearer token for mutating endpoints (weight pushes). Empty means "refuse every push".
    token: SecretStr = SecretStr("")


# ---- the YAML file and --set -----------------------------------------------------------------------


def read_document(path: str | Path) -> dict[str, Any]:
    """The job's YAML file as a mapping of sections; a missing file or bad YAML is a SettingsError."""
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"config file not found: {path}")
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise SettingsError(f"config file {path} must hold a mapping at the top level")
    for section, data in document.items():
        if data is not None and not isinstance(data, dict):
            raise SettingsError(f"config file {path}: section '{section}' must be a mapping")
    return document


# YAML 1.1 (PyYAML) reads 2e-4 as a string; a --set value written like a number is one.
_NUMBER = re.compile(r"^[-+]?(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def parse_value(text: str) -> Any:
    """A ``--set`` value as YAML reads it (``4096`` an int, ``2e-4`` a float, ``true``, ``null``, ``[1, 2]``)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # not YAML: the text itself, for the field to accept or name
    if isinstance(value, str) and _NUMBER.match(value):
        return float(value)
    return value


def parse_sets(items: Iterable[str]) -> dict[str, Any]:
    """``["learner.optimizer.lr=2e-4", "rollout.max_model_len=4096"]`` as the nested mapping a YAML file
    would give (``{"learner": {"optimizer": {"lr": 0.0002}}, ...}``); later items win."""
    result: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise SettingsError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. learner.optimizer.lr=2e-4")
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SettingsError(f"--set {item!r}: {'.'.join(parts[: depth + 1])} is already set to a value")
            node = child
        node[parts[-1]] = parse_value(text)
    return result


def dotted(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """``{"learner.batch_prompts": 16}`` as ``{"learner": {"batch_prompts": 16}}`` (keys as ``--set`` has them)."""
    return deep_merge({}, *(_nest(key, value) for key, value in mapping.items()))


def _nest(key: str, value: Any) -> dict[str, Any]:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def deep_merge(base: dict[str, Any], *layers: Mapping[str, Any]) -> dict[str, Any]:
    """``layers`` over ``base``, mapping by mapping (a later layer's scalar replaces, its mapping merges)."""
    result = dict(base)
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
                result[key] = deep_merge(dict(result[key]), value)
            else:
                result[key] = value
    return result


# ---- service settings ------------------------------------------------------------------------------


class ServiceSettings(BaseSettings):
    """Base for every service's settings. Subclasses set ``yaml_section``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )
    yaml_section: ClassVar[str | None] = None
    # Set by load_settings on a per-call subclass: the layers under and over the env vars.
    _config_path: ClassVar[Path | None] = None
    _document: ClassVar[dict[str, Any]] = {}
    _defaults: ClassVar[dict[str, Any]] = {}

    redis: RedisSettings = RedisSettings()
    auth: AuthSettings = AuthSettings()
    # One level for the service's own log and its HTTP server's.
    log_level: LogLevel = "info"

    @property
    def python_log_level(self) -> str:
        return "DEBUG" if self.log_level == "trace" else self.log_level.upper()

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        section = cls.yaml_section
        own_env = EnvSettingsSource(
            settings_cls,
            env_prefix=f"{ENV_PREFIX}{section.upper()}__" if section else ENV_PREFIX,
            env_nested_delimiter="__",
        )
        sources: list[PydanticBaseSettingsSource] = [init_settings, own_env]
        if section is not None:
            common_env = EnvSettingsSource(settings_cls, env_prefix=ENV_PREFIX, env_nested_delimiter="__")
            sources.append(InitSettingsSource(settings_cls, _common(common_env())))
        if cls._config_path is not None:
            if section is None:
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=cls._config_path))
            else:
                if cls._document.get(section):
                    sources.append(
                        YamlConfigSettingsSource(settings_cls, yaml_file=cls._config_path, yaml_config_section=section)
                    )
                sources.append(InitSettingsSource(settings_cls, _common(cls._document)))
        if cls._defaults:
            sources.append(InitSettingsSource(settings_cls, cls._defaults))
        return tuple(sources)


def _common(document: Mapping[str, Any]) -> dict[str, Any]:
    """The job-wide sections (redis, auth) of a document: they apply to every service."""
    return {k: v for k, v in document.items() if k in COMMON_SECTIONS and v is not None}


def public_base_url(host: str, port: int, public_url: str | None = None) -> str:
    """The one rule for where other processes reach a service: ``public_url`` when given (a deployment
    across machines sets it), else the address it binds, loopback when it binds every interface."""
    if public_url:
        return public_url.rstrip("/")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


S = TypeVar("S", bound=ServiceSettings)


def load_settings(
    cls: type[S],
    config: str | Path | None = None,
    sets: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> S:
    """Build ``cls`` from, lowest first: its defaults, ``defaults`` (a job document that a launcher
    decides), the YAML file (``config`` or $PRFT_CONFIG), env vars, ``overrides`` (the service's fields)
    and ``sets`` (a job document, as :func:`parse_sets` gives: the service's own section and the
    job-wide ones).

    Raises :class:`SettingsError` naming each bad key by its dotted path, so a CLI can print it and exit.
    """
    path = config if config is not None else os.environ.get(CONFIG_ENV_VAR)
    section = cls.yaml_section
    document = read_document(path) if path else {}
    init = deep_merge(overrides, _for_service(cls, sets or {}, "--set"))
    attributes = {
        "_config_path": Path(path) if path else None,
        "_document": document,
        "_defaults": _for_service(cls, defaults or {}, "defaults"),
    }
    bound = type(cls.__name__, (cls,), attributes)
    try:
        return bound(**init)
    except ValidationError as exc:
        raise SettingsError(format_validation_error(exc, source=path, section=section)) from exc


def _for_service(cls: type[ServiceSettings], document: Mapping[str, Any], what: str) -> dict[str, Any]:
    """The part of a job document that ``cls`` reads; a section it does not read is an error."""
    section = cls.yaml_section
    if section is None:
        return dict(document)
    wrong = sorted(set(document) - {section, *COMMON_SECTIONS})
    if wrong:
        raise SettingsError(
            f"{what}: {', '.join(wrong)}: not read by the {section} service "
            f"(it reads {', '.join((section, *COMMON_SECTIONS))})"
        )
    return deep_merge(dict(document.get(section) or {}), _common(document))


def format_validation_error(
    exc: ValidationError, source: str | Path | None = None, section: str | None = None
) -> str:
    where = f" (--set, config file {source}, env vars {ENV_PREFIX}*)" if source else f" (--set, env vars {ENV_PREFIX}*)"
    lines = [f"invalid settings{where}:"]
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        if section and loc and loc[0] not in COMMON_SECTIONS:
            loc.insert(0, section)  # named as in the job file and --set: learner.optimizer.lr
        key = ".".join(loc) or "<root>"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown setting")
        else:
            lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)
