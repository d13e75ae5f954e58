"""The job's settings as one model: how `prefix-rft run` builds them, checks them before anything starts,
and writes them as job.yaml for every service to read."""

from pathlib import Path

import pytest
import yaml

from launcher.config import JobConfig
from launcher.run import RunOptions, build_job_config
from services.learner.settings import LearnerSettings
from services.reward.settings import RewardSettings
from services.rollout.settings import RolloutSettings
from shared.settings import SettingsError, load_settings, parse_sets


@pytest.fixture(autouse=True)
def _no_prft_environment(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("PRFT_"):
            monkeypatch.delenv(name)


def test_run_records_a_set_learning_rate_in_job_yaml(tmp_path):
    run_dir = tmp_path / "run"
    # learner.lr is the shorthand users type; the value lives at learner.optimizer.lr.
    options = RunOptions(steps=3, sets=parse_sets(["learner.lr=2e-4", "rollout.max_model_len=4096"]))
    path = build_job_config(options, run_dir).dump(tmp_path / "job.yaml")
    written = yaml.safe_load(path.read_text())
    assert written["learner"]["optimizer"]["lr"] == 2e-4 and written["rollout"]["max_model_len"] == 4096
    assert written["learner"]["total_steps"] == 3 and written["learner"]["run_dir"] == str(run_dir / "learner")
    # What each service reads from that file is what the launcher decided.
    assert load_settings(LearnerSettings, path).lr == 2e-4
    assert load_settings(RolloutSettings, path).max_model_len == 4096
    assert path.stat().st_mode & 0o777 == 0o600  # it holds the bearer token


def test_a_bad_set_stops_the_run_naming_the_key(tmp_path):
    for sets, key in ((["learner.nope=1"], "learner.nope: unknown setting"), (["learner.seed=x"], "learner.seed")):
        with pytest.raises(SettingsError, match=key):
            build_job_config(RunOptions(sets=parse_sets(sets)), tmp_path)
    with pytest.raises(SettingsError, match="unknown section.*lerner"):
        build_job_config(RunOptions(sets=parse_sets(["lerner.seed=1"])), tmp_path)


def test_layers_launcher_defaults_then_file_then_options_then_sets(tmp_path, monkeypatch):
    user = tmp_path / "user.yaml"
    user.write_text(
        "learner:\n  micro_batch: 8\n  total_steps: 999\n  sampling: {max_tokens: 100}\n"
        "  algorithm: {name: sft, schedule: {kind: uniform}}\n"
        "redis: {namespace: mine}\n"
    )
    monkeypatch.setenv("PRFT_LEARNER__CHECKPOINT_EVERY", "7")
    options = RunOptions(steps=5, algorithm="luffy", config=user, reward_workers=3, sets=parse_sets(["learner.seed=4"]))
    job = build_job_config(options, tmp_path)
    learner = job.learner
    assert learner.micro_batch == 8 and learner.sampling.max_tokens == 100  # the file over the launcher's defaults
    assert learner.sampling.temperature == 1.0 and learner.batch_prompts == 16  # the launcher's defaults
    assert learner.checkpoint_every == 7  # env vars over the file and the defaults
    assert learner.total_steps == 5 and learner.algorithm.name.value == "luffy"  # the options over the file
    assert learner.algorithm.schedule.kind == "uniform" and learner.algorithm.schedule.decay_steps == 5
    assert learner.seed == 4 and job.reward.workers == 3
    assert job.redis.namespace == "mine" and job.learner.redis.namespace == "mine"
    assert len(job.auth.token.get_secret_value()) >= 32  # a private token unless the file gives one


def test_each_run_gets_its_own_namespace_and_token(tmp_path):
    a, b = (build_job_config(RunOptions(), tmp_path) for _ in range(2))
    assert a.redis.namespace != b.redis.namespace and a.auth.token != b.auth.token
    assert build_job_config(RunOptions(algorithm="sft-then-rft", steps=10), tmp_path).learner.algorithm.sft_steps == 5


def test_job_yaml_round_trips_through_every_service(tmp_path):
    job = build_job_config(RunOptions(algorithm="prefix-rft-uniform", steps=4), tmp_path)
    path = job.dump(tmp_path / "job.yaml")
    assert JobConfig.load(path).document() == job.document()
    for cls in (RewardSettings, RolloutSettings, LearnerSettings):
        settings = load_settings(cls, path)
        assert settings.auth.token == job.auth.token and settings.redis == job.redis
        assert settings.model_dump(exclude={"redis", "auth"}) == getattr(job, cls.yaml_section).model_dump(
            exclude={"redis", "auth"}
        )


def test_a_private_redis_is_recorded_in_every_section(tmp_path):
    job = build_job_config(RunOptions(), tmp_path).with_redis_url("redis://127.0.0.1:7001/0")
    assert {job.redis.url, job.reward.redis.url, job.rollout.redis.url, job.learner.redis.url} == {
        "redis://127.0.0.1:7001/0"
    }
    assert yaml.safe_load(job.dump(tmp_path / "job.yaml").read_text())["redis"]["url"] == "redis://127.0.0.1:7001/0"


def test_settings_that_only_fit_together_are_checked_across_sections(tmp_path):
    with pytest.raises(SettingsError, match=r"learner\.sampling\.max_tokens 8192 exceeds rollout\.max_tokens 4096"):
        JobConfig.load(sets=parse_sets(["learner.sampling.max_tokens=8192"]))
    with pytest.raises(SettingsError, match=r"n_rollouts 16 exceeds rollout\.max_n 8"):
        JobConfig.load(sets=parse_sets(["learner.algorithm.n_rollouts=16", "rollout.max_n=8"]))


def test_a_misspelt_section_in_the_file_is_refused(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("rewrad: {port: 1}\n")
    with pytest.raises(SettingsError, match="unknown section.*rewrad"):
        JobConfig.load(config)


def test_the_shipped_configs_load_as_a_job():
    repo = Path(__file__).resolve().parents[2]
    paths = [*(repo / "configs").glob("*.yaml"), repo / "deploy" / "k8s" / "base" / "config.yaml"]
    assert len(paths) > 1
    for path in paths:
        JobConfig.load(path)


def test_a_service_module_starts_without_the_launcher():
    import subprocess
    import sys

    code = (
        "import runpy, sys\n"
        "sys.argv = ['x', '--set', 'redis.nope=1']  # stops once the service's modules are imported\n"
        "for service in ('reward', 'rollout', 'learner'):\n"
        "    try:\n"
        "        runpy.run_module(f'services.{service}', run_name='__main__')\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'launcher'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_local_deployment_starts_each_service_on_the_job_file_with_its_own_overrides(tmp_path):
    from launcher.deployment import LocalDeployment
    from services.rollout.entry import build_parser
    from shared.service_cli import load_or_exit

    config = build_job_config(RunOptions(), tmp_path).dump(tmp_path / "job.yaml")
    deployment = LocalDeployment(run_dir=tmp_path, config_path=config, redis_url="redis://127.0.0.1:7002/0")
    model = tmp_path / "a model: v2"  # YAML would read an unquoted "a: b" as a mapping
    argv = deployment.service_argv("rollout", {"rollout.model": str(model), "rollout.worker_enabled": False})
    assert argv[:2] == ["-m", "services.rollout"]
    parser = build_parser()
    settings = load_or_exit(parser, RolloutSettings, parser.parse_args(argv[2:]))
    assert settings.model == model and settings.worker_enabled is False
    assert settings.redis.url == "redis://127.0.0.1:7002/0"
    assert settings.auth.token.get_secret_value() == yaml.safe_load(config.read_text())["auth"]["token"]
