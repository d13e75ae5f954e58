"""Rollout settings: defaults, the YAML section, env vars, and the derived worker id and URL."""

import pytest

from services.rollout.settings import RolloutSettings
from shared.settings import SettingsError, load_settings


def test_defaults_bind_loopback_and_run_the_worker(monkeypatch):
    monkeypatch.delenv("PRFT_CONFIG", raising=False)
    settings = load_settings(RolloutSettings)
    assert settings.host == "127.0.0.1" and settings.port == 8000
    assert settings.worker_enabled and settings.reward_url == "http://127.0.0.1:8001"
    assert settings.public_base_url() == "http://127.0.0.1:8000"
    assert settings.resolved_worker_id()


def test_yaml_env_and_overrides(tmp_path, monkeypatch):
    config = tmp_path / "job.yaml"
    config.write_text(
        "redis: {namespace: jobA}\nauth: {token: t0k}\n"
        "rollout: {port: 9100, max_n: 8, host: 0.0.0.0, engine_args: {max_num_seqs: 64}}\n"
    )
    monkeypatch.setenv("PRFT_ROLLOUT__RECLAIM_IDLE_MS", "5000")
    monkeypatch.setenv("PRFT_ROLLOUT__WORKER_ID", "pod-7")
    settings = load_settings(RolloutSettings, config, model=tmp_path)
    assert settings.port == 9100 and settings.max_n == 8 and settings.reclaim_idle_ms == 5000
    assert settings.redis.namespace == "jobA" and settings.auth.token.get_secret_value() == "t0k"
    assert settings.engine_args == {"max_num_seqs": 64} and settings.model == tmp_path
    assert settings.resolved_worker_id() == "pod-7"
    # Bound to every interface: register a reachable address, not 0.0.0.0.
    assert settings.public_base_url() == "http://127.0.0.1:9100"
    monkeypatch.setenv("PRFT_ROLLOUT__PUBLIC_URL", "http://pod-7.rollout:9100/")
    assert load_settings(RolloutSettings, config).public_base_url() == "http://pod-7.rollout:9100"


def test_bad_values_are_named(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("rollout: {max_inflight_tasks: 0, dtype: float8, surprise: 1}\n")
    with pytest.raises(SettingsError) as info:
        load_settings(RolloutSettings, config)
    message = str(info.value)
    assert "max_inflight_tasks" in message and "dtype" in message and "surprise: unknown setting" in message


def test_the_swarm_address_is_the_public_urls_host_unless_one_is_advertised(monkeypatch):
    # A worker's peers dial this host: the address the learner already reaches it at, or one set
    # for the swarm alone (a pod's IP), never loopback when the deployment names one.
    monkeypatch.delenv("PRFT_CONFIG", raising=False)
    monkeypatch.setenv("PRFT_ROLLOUT__PUBLIC_URL", "http://worker-3:8000")
    settings = load_settings(RolloutSettings)
    assert settings.swarm.advertised_host(settings.public_base_url()) == "worker-3"
    monkeypatch.setenv("PRFT_ROLLOUT__SWARM__ADVERTISE_HOST", "10.1.2.3")
    settings = load_settings(RolloutSettings)
    assert settings.swarm.advertised_host(settings.public_base_url()) == "10.1.2.3"
    unset = settings.swarm.model_copy(update={"advertise_host": None})
    assert unset.advertised_host("http://[fd00::7]:8000") == "fd00::7"
    with pytest.raises(ValueError, match="advertise_host"):
        unset.advertised_host("not-a-url")
