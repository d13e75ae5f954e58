import re

import pytest

from shared.settings import (
    ServiceSettings,
    SettingsError,
    StrictModel,
    dotted,
    load_settings,
    parse_sets,
    public_base_url,
)


class DemoSection(StrictModel):
    batch: int = 4


class DemoSettings(ServiceSettings):
    yaml_section = "demo"
    port: int = 9000
    inner: DemoSection = DemoSection()


def test_defaults_then_yaml_then_env(tmp_path, monkeypatch):
    config = tmp_path / "job.yaml"
    config.write_text("redis: {namespace: jobA}\ndemo:\n  port: 9100\n  inner: {batch: 8}\n")
    settings = load_settings(DemoSettings, config)
    assert settings.port == 9100 and settings.inner.batch == 8
    assert settings.redis.namespace == "jobA"  # job-wide sections apply to every service

    monkeypatch.setenv("PRFT_DEMO__PORT", "9200")
    monkeypatch.setenv("PRFT_DEMO__INNER__BATCH", "16")
    settings = load_settings(DemoSettings, config)
    assert settings.port == 9200 and settings.inner.batch == 16


def test_config_path_from_environment(tmp_path, monkeypatch):
    config = tmp_path / "job.yaml"
    config.write_text("demo: {port: 9300}\n")
    monkeypatch.setenv("PRFT_CONFIG", str(config))
    assert load_settings(DemoSettings).port == 9300


def test_wrong_type_names_the_key(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("demo:\n  inner: {batch: many}\n")
    with pytest.raises(SettingsError, match=r"inner\.batch.*'many'"):
        load_settings(DemoSettings, config)


def test_unknown_yaml_key_names_the_key(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("demo:\n  prot: 9100\n")
    with pytest.raises(SettingsError, match="prot: unknown setting"):
        load_settings(DemoSettings, config)


def test_unknown_nested_key_names_the_key(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("redis: {urll: redis://x}\n")
    with pytest.raises(SettingsError, match=r"redis\.urll: unknown setting"):
        load_settings(DemoSettings, config)


def test_wrong_env_value_names_the_key(monkeypatch):
    monkeypatch.setenv("PRFT_DEMO__PORT", "eighty")
    with pytest.raises(SettingsError, match="port"):
        load_settings(DemoSettings)


def test_missing_or_broken_file_is_reported(tmp_path):
    with pytest.raises(SettingsError, match="not found"):
        load_settings(DemoSettings, tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("demo: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(DemoSettings, broken)


def test_token_is_secret_in_repr(monkeypatch):
    monkeypatch.setenv("PRFT_AUTH__TOKEN", "hunter2")
    settings = load_settings(DemoSettings)
    assert settings.auth.token.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(settings)


def test_common_sections_from_environment_apply_to_every_service(monkeypatch):
    monkeypatch.setenv("PRFT_REDIS__URL", "redis://127.0.0.1:7777/1")
    assert load_settings(DemoSettings).redis.url == "redis://127.0.0.1:7777/1"


def test_another_services_env_vars_do_not_leak(monkeypatch):
    monkeypatch.setenv("PRFT_OTHER__PORT", "1")
    assert load_settings(DemoSettings).port == 9000


# ---- --set overrides -------------------------------------------------------------------------------


def test_set_values_are_read_as_yaml_scalars():
    sets = parse_sets(["learner.optimizer.lr=2e-4", "rollout.max_model_len=4096", "rollout.worker_enabled=false",
                       "rollout.public_url=http://h:1/", "learner.model=", "learner.betas=[0.9, 0.95]"])
    assert sets["learner"]["optimizer"]["lr"] == 2e-4 and isinstance(sets["learner"]["optimizer"]["lr"], float)
    assert sets["rollout"] == {"max_model_len": 4096, "worker_enabled": False, "public_url": "http://h:1/"}
    assert sets["learner"]["model"] is None and sets["learner"]["betas"] == [0.9, 0.95]


def test_a_later_set_wins_and_a_malformed_one_is_named():
    assert parse_sets(["demo.port=1", "demo.port=2"]) == {"demo": {"port": 2}}
    for bad in ("demo.port", "=1", "demo..port=1"):
        with pytest.raises(SettingsError, match=re.escape(repr(bad))):
            parse_sets([bad])
    with pytest.raises(SettingsError, match="already set"):
        parse_sets(["demo.port=1", "demo.port.x=2"])


def test_sets_override_env_and_file_and_merge_into_sections(tmp_path, monkeypatch):
    config = tmp_path / "job.yaml"
    config.write_text("demo: {port: 9100, inner: {batch: 8}}\n")
    monkeypatch.setenv("PRFT_DEMO__PORT", "9200")
    settings = load_settings(DemoSettings, config, sets=parse_sets(["demo.port=9300", "redis.namespace=jobB"]))
    assert settings.port == 9300 and settings.inner.batch == 8 and settings.redis.namespace == "jobB"


def test_defaults_sit_under_the_file():
    defaults = dotted({"demo.port": 9500, "demo.inner.batch": 2})
    assert load_settings(DemoSettings, defaults=defaults).inner.batch == 2
    assert load_settings(DemoSettings, defaults=defaults, sets=parse_sets(["demo.port=1"])).port == 1


def test_a_bad_set_is_named_by_its_dotted_path_like_a_bad_file_key(tmp_path):
    with pytest.raises(SettingsError, match=r"demo\.nope: unknown setting"):
        load_settings(DemoSettings, sets=parse_sets(["demo.nope=1"]))
    with pytest.raises(SettingsError, match=r"demo\.inner\.batch: .*'many'"):
        load_settings(DemoSettings, sets=parse_sets(["demo.inner.batch=many"]))
    config = tmp_path / "job.yaml"
    config.write_text("demo: {nope: 1}\n")
    with pytest.raises(SettingsError, match=r"demo\.nope: unknown setting"):
        load_settings(DemoSettings, config)


def test_a_set_for_another_service_is_refused():
    with pytest.raises(SettingsError, match="learner: not read by the demo service"):
        load_settings(DemoSettings, sets=parse_sets(["learner.seed=1"]))


def test_one_public_url_rule():
    assert public_base_url("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert public_base_url("0.0.0.0", 8002) == "http://127.0.0.1:8002"  # reachable from this machine
    assert public_base_url("0.0.0.0", 8002, "http://learner:8002/") == "http://learner:8002"


def test_every_service_has_the_same_log_level_setting(monkeypatch):
    from services.learner.settings import LearnerSettings
    from services.reward.settings import RewardSettings
    from services.rollout.settings import RolloutSettings

    for cls in (RewardSettings, RolloutSettings, LearnerSettings):
        monkeypatch.setenv(f"PRFT_{cls.yaml_section.upper()}__LOG_LEVEL", "debug")
        settings = load_settings(cls)
        assert settings.log_level == "debug" and settings.python_log_level == "DEBUG"
        with pytest.raises(SettingsError, match=rf"{cls.yaml_section}\.log_level"):
            load_settings(cls, sets=parse_sets([f"{cls.yaml_section}.log_level=loud"]))
