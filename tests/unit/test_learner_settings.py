import pytest

from services.learner.engine import ds_config
from services.learner.settings import DEFAULT_MODEL_LR, PAPER_LR, LearnerSettings
from shared.settings import SettingsError, load_settings


def test_algorithm_name_in_yaml_selects_the_preset(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("learner:\n  algorithm: {name: luffy, entropy_coef: 0.01}\n")
    settings = load_settings(LearnerSettings, config)
    algo = settings.algorithm
    assert algo.name.value == "luffy" and algo.n_demonstration == 1 and algo.n_hybrid == 0
    assert algo.entropy_coef == 0.01  # the other keys override the preset's fields


def test_env_override_of_the_algorithm(tmp_path, monkeypatch):
    config = tmp_path / "job.yaml"
    config.write_text("learner:\n  algorithm: {name: prefix-rft}\n")
    monkeypatch.setenv("PRFT_LEARNER__ALGORITHM__NAME", "prefix-rft-uniform")
    settings = load_settings(LearnerSettings, config)
    assert settings.algorithm.schedule.kind == "uniform"


def test_a_schedule_section_keeps_the_uniform_ablation_uniform(tmp_path):
    # prefix-rft run and compare write {decay_steps: <steps>} into every job's schedule.
    config = tmp_path / "job.yaml"
    config.write_text("learner:\n  algorithm: {name: prefix-rft-uniform, schedule: {decay_steps: 40}}\n")
    schedule = load_settings(LearnerSettings, config).algorithm.schedule
    assert (schedule.kind, schedule.decay_steps) == ("uniform", 40)
    assert schedule.bounds(0) == schedule.bounds(39) == (0.05, 0.95)
    config.write_text("learner:\n  algorithm: {name: prefix-rft, schedule: {decay_steps: 40, high: 0.9}}\n")
    schedule = load_settings(LearnerSettings, config).algorithm.schedule
    assert (schedule.kind, schedule.decay_steps, schedule.high) == ("cosine", 40, 0.9)


def test_paper_values_are_the_defaults():
    settings = LearnerSettings(model="/some/model")
    algo = settings.algorithm
    assert (algo.n_rollouts, algo.n_hybrid, algo.dual_clip_c) == (8, 1, 3.0)
    assert (algo.clip_eps_low, algo.clip_eps_high) == (0.2, 0.2)
    assert (algo.entropy_clip_top, algo.entropy_coef, algo.schedule.decay_steps) == (0.2, 0.001, 500)
    assert settings.lr == PAPER_LR and settings.sampling.temperature == 1.0
    assert LearnerSettings().lr == DEFAULT_MODEL_LR  # the built-in tiny model needs a larger step


def test_batch_must_split_into_mini_batches(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("learner: {batch_prompts: 6, mini_batch_prompts: 4}\n")
    with pytest.raises(SettingsError, match="mini_batch_prompts"):
        load_settings(LearnerSettings, config)


def test_ds_config_follows_the_settings():
    settings = LearnerSettings(micro_batch=4, deepspeed={"zero_stage": 3, "dtype": "bf16", "gradient_clipping": 0.5})
    config = ds_config(settings, world_size=2)
    assert config["zero_optimization"]["stage"] == 3 and config["bf16"] == {"enabled": True}
    assert config["train_batch_size"] == 8 and config["gradient_clipping"] == 0.5


def test_staleness_window():
    settings = LearnerSettings(batch_prompts=4, mini_batch_prompts=2, max_staleness=2)
    assert settings.window == 12  # AReaL's admission rule: (max_staleness + 1) x batch
