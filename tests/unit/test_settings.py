import pytest

from shared.settings import ServiceSettings, SettingsError, StrictModel, load_settings


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
