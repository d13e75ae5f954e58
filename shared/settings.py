"""Typed settings: environment variables (prefix ``PRFT_``) over an optional YAML file over defaults.

One YAML file configures a whole job; each service reads its own section of it, e.g.::

    redis:   {url: redis://127.0.0.1:6379/0, namespace: prft}
    reward:  {port: 8001, workers: 2}
    learner: {algorithm: {name: prefix-rft}}

Environment variables override the file: ``PRFT_<SECTION>__<KEY>`` for a service's own keys
(``PRFT_REWARD__PORT=9001``, ``PRFT_LEARNER__ALGORITHM__NAME=sft``) and ``PRFT_REDIS__URL``,
``PRFT_AUTH__TOKEN`` for the job-wide sections. Unknown keys and wrong types stop start-up with a message
naming the offending key (see :class:`SettingsError`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "PRFT_"
CONFIG_ENV_VAR = "PRFT_CONFIG"


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


class YamlSectionSource(PydanticBaseSettingsSource):
    """Reads one section (or the whole document) of a YAML file as a settings source."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None, section: str | None):
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path is None:
            return
        if not path.is_file():
            raise SettingsError(f"config file not found: {path}")
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SettingsError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(document, dict):
            raise SettingsError(f"config file {path} must hold a mapping at the top level")
        data = document if section is None else document.get(section, {})
        if not isinstance(data, dict):
            raise SettingsError(f"config file {path}: section '{section}' must be a mapping")
        self._data = data

    def get_field_value(self, field, field_name):  # pragma: no cover - unused by __call__
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class ServiceSettings(BaseSettings):
    """Base for every service's settings. Subclasses set ``yaml_section``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )
    yaml_section: ClassVar[str | None] = None
    _config_path: ClassVar[Path | None] = None

    redis: RedisSettings = RedisSettings()
    auth: AuthSettings = AuthSettings()

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
            sources.append(_CommonSections(settings_cls, common_env()))
        sources.append(YamlSectionSource(settings_cls, cls._config_path, section))
        if cls._config_path is not None and section is not None:
            document = YamlSectionSource(settings_cls, cls._config_path, None)()
            sources.append(_CommonSections(settings_cls, document))
        return tuple(sources)


class _CommonSections(PydanticBaseSettingsSource):
    """The job-wide sections (redis, auth), from the top of the YAML file or from PRFT_REDIS__*, apply
    to every service."""

    COMMON = ("redis", "auth")

    def __init__(self, settings_cls, document: dict[str, Any]):
        super().__init__(settings_cls)
        self._data = {k: v for k, v in document.items() if k in self.COMMON}

    def get_field_value(self, field, field_name):  # pragma: no cover
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


S = TypeVar("S", bound=ServiceSettings)


def load_settings(cls: type[S], config: str | Path | None = None, **overrides: Any) -> S:
    """Build ``cls`` from defaults, the YAML file (``config`` or $PRFT_CONFIG), env vars and overrides.

    Raises :class:`SettingsError` naming each bad key, so a CLI can print it and exit.
    """
    path = config if config is not None else os.environ.get(CONFIG_ENV_VAR)
    bound = type(cls.__name__, (cls,), {"_config_path": Path(path) if path else None})
    try:
        return bound(**overrides)
    except ValidationError as exc:
        raise SettingsError(format_validation_error(exc, source=path)) from exc


def format_validation_error(exc: ValidationError, source: str | Path | None = None) -> str:
    where = f" (config file {source}, env vars {ENV_PREFIX}*)" if source else f" (env vars {ENV_PREFIX}*)"
    lines = [f"invalid settings{where}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown setting")
        else:
            lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)
