"""A job's configuration as one typed model: the job-wide sections (redis, auth) and each service's
own settings model. The launcher builds it from, lowest first: its defaults for a local job, the
user's YAML file, env vars ``PRFT_<SECTION>__<KEY>``, what the command's flags decide, and ``--set``
overrides; it is validated before any process starts and dumped as the run's ``job.yaml``, which
every service of the job reads (``--config``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from launcher.evaluate import EvalSettings
from services.learner.settings import LearnerSettings
from services.reward.settings import RewardSettings
from services.rollout.settings import RolloutSettings
from shared.settings import (
    COMMON_SECTIONS,
    AuthSettings,
    RedisSettings,
    ServiceSettings,
    SettingsError,
    deep_merge,
    dotted,
    format_validation_error,
    load_settings,
    read_document,
)


class PlacementSettings(ServiceSettings):
    """Where a local job's processes run: learner ranks and GPUs (``prefix-rft run``'s ``--learner-ranks``,
    ``--learner-gpus`` and ``--rollout-gpus``). Only the launcher reads it: see launcher.gpus.place_processes."""

    yaml_section: ClassVar[str] = "placement"

    # Learner processes (DeepSpeed data-parallel ranks under torchrun). None: one per learner GPU, else 1.
    learner_ranks: int | None = Field(None, ge=1)
    # GPUs of the learner, one rank each. None: learner_ranks on a GPU machine; refused on one without.
    learner_gpus: int | None = Field(None, ge=1)
    # GPUs of the rollout workers, rollout.engine_args.tensor_parallel_size each; this decides how many
    # workers start. None: the rollout workers' count times their tensor parallel size.
    rollout_gpus: int | None = Field(None, ge=1)


SERVICE_SETTINGS: dict[str, type] = {"reward": RewardSettings, "rollout": RolloutSettings, "learner": LearnerSettings}
LAUNCHER_SETTINGS: dict[str, type] = {"placement": PlacementSettings}
# Read by the launcher alone: how `eval`, `run` and `compare` evaluate (launcher.evaluate.EvalSettings).
EVAL_SECTION = "eval"
SECTIONS = (*COMMON_SECTIONS, *SERVICE_SETTINGS, *LAUNCHER_SETTINGS, EVAL_SECTION)

# The launcher's defaults for a job on one machine, under the user's file: sized so that the default
# job (the built-in model and task) finishes in about 15 minutes on 2 cores.
LOCAL_JOB_DEFAULTS = dotted(
    {
        "learner.batch_prompts": 16,
        "learner.mini_batch_prompts": 16,
        "learner.micro_batch": 32,
        "learner.max_staleness": 1,
        "learner.checkpoint_every": 25,
        "learner.sampling.temperature": 1.0,
        "learner.sampling.max_tokens": 160,
        # A local run stops its workers after its learner: tasks still in flight then feed nobody, and a
        # worker must not spend the launcher's grace on them (retrying a reward service that died, say).
        "rollout.drain_timeout_s": 5.0,
    }
)


class JobConfig(BaseModel):
    """Every setting of a job. A service's section holds the job-wide redis and auth as well (its model
    has them); they are kept equal to the job's own."""

    model_config = ConfigDict(extra="forbid")

    redis: RedisSettings
    auth: AuthSettings
    reward: RewardSettings
    rollout: RolloutSettings
    learner: LearnerSettings
    placement: PlacementSettings = PlacementSettings()
    eval: EvalSettings = EvalSettings()

    @model_validator(mode="after")
    def _one_redis_and_token(self) -> JobConfig:
        for name in (*SERVICE_SETTINGS, *LAUNCHER_SETTINGS):
            section = getattr(self, name)
            section.redis, section.auth = self.redis, self.auth
        return self

    def check(self) -> JobConfig:
        """What no section can check alone: the workers accept the learner's requests."""
        sampling, algorithm = self.learner.sampling, self.learner.algorithm
        rollout, problems = self.rollout, []
        if sampling.max_tokens > rollout.max_tokens:
            problems.append(
                f"learner.sampling.max_tokens {sampling.max_tokens} exceeds rollout.max_tokens {rollout.max_tokens}"
            )
        if algorithm.n_rollouts > rollout.max_n:
            problems.append(
                f"learner.algorithm.n_rollouts {algorithm.n_rollouts} exceeds rollout.max_n {rollout.max_n}"
            )
        if problems:
            raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))
        return self

    @classmethod
    def load(
        cls,
        config: str | Path | None = None,
        sets: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> JobConfig:
        """Each section as its service would load it (see :func:`shared.settings.load_settings`), and the
        job as a whole checked. ``sets`` and ``defaults`` are job documents (``parse_sets`` gives one)."""
        for what, document in (("--set", sets or {}), ("defaults", defaults or {})):
            _check_sections(what, document)
        if config is not None:
            _check_sections(f"config file {config}", read_document(config))
        sections = {
            name: load_settings(settings, config, sets=_part(sets, name), defaults=_part(defaults, name))
            for name, settings in {**SERVICE_SETTINGS, **LAUNCHER_SETTINGS}.items()
        }
        learner = sections["learner"]
        evaluation = _eval_settings(config, sets, defaults)
        return cls(redis=learner.redis, auth=learner.auth, eval=evaluation, **sections).check()

    def with_redis_url(self, url: str) -> JobConfig:
        """The same job on the Redis at ``url`` (a private redis-server's, known once it has started)."""
        redis = RedisSettings(url=url, namespace=self.redis.namespace)
        sections = {name: getattr(self, name).model_copy() for name in (*SERVICE_SETTINGS, *LAUNCHER_SETTINGS)}
        return JobConfig(redis=redis, auth=self.auth, eval=self.eval, **sections)

    def document(self) -> dict[str, Any]:
        """The YAML document every service reads: the token in clear (the file is private to the user)."""
        document: dict[str, Any] = {
            "redis": self.redis.model_dump(mode="json"),
            "auth": {"token": self.auth.token.get_secret_value()},
        }
        for name in SERVICE_SETTINGS:
            document[name] = getattr(self, name).model_dump(mode="json", exclude=set(COMMON_SECTIONS))
        # The services skip it; it records how the job was laid out.
        document["placement"] = self.placement.model_dump(mode="json", exclude={*COMMON_SECTIONS, "log_level"})
        document[EVAL_SECTION] = self.eval.model_dump(mode="json")
        return document

    def dump(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump(self.document(), sort_keys=False))
        path.chmod(0o600)  # it holds the bearer token
        return path


def _eval_settings(
    config: str | Path | None, sets: Mapping[str, Any] | None, defaults: Mapping[str, Any] | None
) -> EvalSettings:
    """The eval section: defaults, then the file, then --set (no env vars: no service reads it)."""
    layers = [(defaults or {}).get(EVAL_SECTION) or {}]
    if config is not None:
        layers.append(read_document(config).get(EVAL_SECTION) or {})
    layers.append((sets or {}).get(EVAL_SECTION) or {})
    try:
        return EvalSettings.model_validate(deep_merge({}, *layers))
    except ValidationError as exc:
        raise SettingsError(format_validation_error(exc, source=config, section=EVAL_SECTION)) from exc


def _check_sections(what: str, document: Mapping[str, Any]) -> None:
    unknown = sorted(set(document) - set(SECTIONS))
    if unknown:
        raise SettingsError(f"{what}: unknown section(s) {', '.join(unknown)} (known: {', '.join(SECTIONS)})")


def _part(document: Mapping[str, Any] | None, service: str) -> dict[str, Any]:
    """The sections of a job document that ``service`` reads."""
    return {k: v for k, v in (document or {}).items() if k in (service, *COMMON_SECTIONS)}
