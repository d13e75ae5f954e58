"""The comparison's bookkeeping: variant settings, summaries over seeds, verdicts and the markdown report."""

import io
from pathlib import Path

import pytest
from rich.console import Console

from launcher.compare import (
    VARIANTS,
    CompareOptions,
    Comparison,
    _check_one_base,
    _discard_unfinished,
    _run_options,
    _summarise,
    demo_fraction_verdict,
    demonstration_style,
    reward_curves,
    split_names,
    validate_variants,
    write_results,
)
from launcher.evaluate import EvalResult
from launcher.probes import ProbeSettings, StyleProbe
from launcher.report import RunReport
from launcher.run import build_job_config
from services.learner.algorithm import AlgorithmName
from shared.api.rollout import SamplingParams
from shared.modeling import weights_digest
from shared.records import metrics_file
from shared.settings import SettingsError, parse_sets
from tests.helpers.records import step_record


def report(tmp_path: Path, algorithm: str, seed: int, id_acc: float, ood_acc: float) -> RunReport:
    def result(split, acc):
        return EvalResult(
            split=split,
            n_problems=10,
            greedy_accuracy=acc,
            avg_at_k=acc,
            pass_at_k=acc,
            k=4,
            mean_response_tokens=40.0,
            model_versions=[5],
        )

    return RunReport(
        algorithm=algorithm,
        seed=seed,
        steps=5,
        model="m",
        model_digest="0123456789abcdef",
        data="d",
        wall_time_s=60.0,
        train_time_s=30.0,
        tokens_per_s=100.0,
        dropped_stale_groups=0,
        trained_groups=20,
        accuracy_before={"id": 0.4, "ood": 0.05} if seed == 0 else {},
        accuracy_after={"id": id_acc, "ood": ood_acc},
        evaluation_before={},
        evaluation_after={"id": result("id", id_acc), "ood": result("ood", ood_acc)},
        run_dir=str(tmp_path / algorithm / str(seed)),
    )


def test_unknown_variants_are_named():
    with pytest.raises(ValueError, match="bogus"):
        validate_variants(["prefix-rft", "bogus"])


def test_a_demonstration_quantity_variant_sets_the_fraction_in_the_run_config(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text("learner:\n  optimizer:\n    lr: 0.0001\n")
    options = CompareOptions(steps=7, config=user, out=tmp_path)
    run = _run_options(options, "demo-10", seed=2, run_dir=tmp_path / "demo-10" / "seed-2", first=False)
    assert run.algorithm == AlgorithmName.prefix_rft and run.seed == 2 and run.steps == 7
    assert not run.evaluate_before
    job = build_job_config(run, tmp_path / "demo-10" / "seed-2")
    assert job.learner.algorithm.demo_fraction == 0.1
    assert job.learner.optimizer.lr == 0.0001  # the user's settings apply to every variant
    rft = _run_options(options, "rft", seed=2, run_dir=tmp_path / "rft" / "seed-2", first=False)
    assert build_job_config(rft, tmp_path / "rft" / "seed-2").learner.algorithm.demo_fraction == 1.0


def test_teacher_demonstrations_reach_the_learners_task_settings(tmp_path):
    options = CompareOptions(demonstrations="teacher", out=tmp_path)
    run = _run_options(options, "sft", seed=0, run_dir=tmp_path / "sft" / "seed-0", first=True)
    assert build_job_config(run, tmp_path / "sft" / "seed-0").learner.dataset.demonstrations == "teacher"
    assert demonstration_style(options) == "teacher"


def test_the_demonstration_style_comes_from_the_config_when_not_given(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text("learner:\n  dataset:\n    demonstrations: teacher\n")
    assert demonstration_style(CompareOptions(config=user)) == "teacher"
    assert demonstration_style(CompareOptions()) == "column"
    run = _run_options(CompareOptions(config=user), "rft", seed=0, run_dir=tmp_path / "rft", first=False)
    assert build_job_config(run, tmp_path / "rft").learner.dataset.demonstrations == "teacher"


def test_an_unknown_demonstration_style_is_refused():
    with pytest.raises(ValueError, match="column"):
        CompareOptions(demonstrations="oracle")


def test_summary_has_mean_and_sample_spread_over_seeds(tmp_path):
    by_seed = {s: report(tmp_path, "rft", s, acc, 0.0) for s, acc in enumerate([0.4, 0.5, 0.6])}
    summary = _summarise("rft", by_seed)
    assert summary.greedy["id"].mean == pytest.approx(0.5)
    assert summary.greedy["id"].std == pytest.approx(0.1)
    assert summary.label == VARIANTS["rft"].label


def test_results_table_and_verdicts(tmp_path):
    runs = {
        "prefix-rft": {s: report(tmp_path, "prefix-rft", s, 0.70 + 0.01 * s, 0.10) for s in range(3)},
        "sft": {s: report(tmp_path, "sft", s, 0.50 + 0.01 * s, 0.10 + 0.05 * s) for s in range(3)},
        "demo-1": {s: report(tmp_path, "prefix-rft", s, 0.45, 0.10) for s in range(3)},
    }
    options = CompareOptions(
        variants=list(runs),
        steps=5,
        out=tmp_path / "out",
        results=tmp_path / "docs" / "r.md",
        command="prefix-rft compare --steps 5",
    )
    comparison = Comparison(
        options=options,
        base={"id": 0.4, "ood": 0.05},
        base_avg_at_k={},
        summaries=[_summarise(n, r) for n, r in runs.items()],
        runs=runs,
        wall_time_s=10.0,
        machine="test machine",
    )
    curves = tmp_path / "curves.png"
    curves.write_bytes(b"png")
    write_results(comparison, options.results, curves)
    text = options.results.read_text()
    assert "`prefix-rft compare --steps 5`" in text and "test machine" in text
    assert "- Base policy: the built-in default, weights digest `0123456789abcdef`" in text
    assert "| Prefix-RFT | 0.710 ± 0.010 |" in text
    assert "Prefix-RFT vs SFT: +0.200 (spread 0.010): ahead, beyond the seed spread." in text
    assert "Prefix-RFT vs SFT: -0.050 (spread 0.050): within the seed spread: not decisive." in text
    assert "- Prefix-RFT above SFT: agrees (+0.200, beyond the seed spread)." in text  # the paper's pairs, first split
    # 1% of the demonstrations should still beat SFT; here it does not.
    assert "- Prefix-RFT, 1% demonstrations above SFT: reversed (-0.060, beyond the seed spread)." in text
    assert "10% demonstrations above" not in text  # a pair with a variant that did not run is left out
    assert (tmp_path / "docs" / "results" / "r.png").read_bytes() == b"png"


def test_each_run_of_a_comparison_has_its_own_name_in_the_trackers(tmp_path):
    """Every run's directory is seed-<n>; a tracker (one wandb project, one mlflow experiment) would get
    runs of one name from every variant."""
    from services.learner.tracking import run_name

    options = CompareOptions(out=tmp_path / "ablation")
    names = {
        run_name(build_job_config(run, run.out).learner)
        for variant in ("rft", "prefix-rft")
        for run in [_run_options(options, variant, seed=0, run_dir=options.out / variant / "seed-0", first=True)]
    }
    assert names == {"ablation-rft-seed-0", "ablation-prefix-rft-seed-0"}


def comparison_of(tmp_path: Path, runs: dict, base: dict | None = None, **options) -> Comparison:
    opts = CompareOptions(variants=list(runs), steps=5, out=tmp_path / "out", results=tmp_path / "r.md", **options)
    return Comparison(
        options=opts,
        base=base if base is not None else {"id": 0.4, "ood": 0.05},
        base_avg_at_k={},
        summaries=[_summarise(n, r) for n, r in runs.items()],
        runs=runs,
        wall_time_s=1.0,
        machine="test machine",
    )


def seeds_at(tmp_path: Path, algorithm: str, accuracies: list[float]) -> dict:
    return {s: report(tmp_path, algorithm, s, acc, 0.0) for s, acc in enumerate(accuracies)}


def test_ten_percent_of_the_demonstrations_keeping_most_of_the_gain_is_computed_and_said(tmp_path):
    # base 0.40; Prefix-RFT 0.60 (gain 0.20); 10%: 0.59 keeps 0.19 / 0.20 = 95%
    runs = {"prefix-rft": seeds_at(tmp_path, "prefix-rft", [0.59, 0.60, 0.61]),
            "demo-10": seeds_at(tmp_path, "prefix-rft", [0.58, 0.59, 0.60])}
    sentence = demo_fraction_verdict(comparison_of(tmp_path, runs), "id")
    assert sentence.startswith("With 10% of the demonstrations Prefix-RFT keeps 95% of its gain over the base policy")
    assert "base 0.400, Prefix-RFT 0.600 ± 0.010, with 10% 0.590 ± 0.010): it keeps at least 90%." in sentence


def test_ten_percent_losing_more_than_a_tenth_of_the_gain_does_not_keep_it(tmp_path):
    # gain 0.20; 10%: 0.55 keeps 0.15 / 0.20 = 75%
    runs = {"prefix-rft": seeds_at(tmp_path, "prefix-rft", [0.6, 0.6]),
            "demo-10": seeds_at(tmp_path, "prefix-rft", [0.55, 0.55])}
    comparison = comparison_of(tmp_path, runs)
    assert "keeps 75% of its gain" in demo_fraction_verdict(comparison, "id")
    assert "it does not keep at least 90%." in demo_fraction_verdict(comparison, "id")
    curves = tmp_path / "c.png"
    curves.write_bytes(b"png")
    write_results(comparison, comparison.options.results, curves)
    assert "### Fewer demonstrations" in comparison.options.results.read_text()
    assert "it does not keep at least 90%." in comparison.options.results.read_text()


def test_no_gain_over_the_base_is_said_as_such(tmp_path):
    runs = {"prefix-rft": seeds_at(tmp_path, "prefix-rft", [0.3, 0.3]),
            "demo-10": seeds_at(tmp_path, "prefix-rft", [0.35, 0.35])}
    assert "no gain to keep" in demo_fraction_verdict(comparison_of(tmp_path, runs), "id")


def test_the_fewer_demonstrations_sentence_needs_both_variants(tmp_path):
    runs = {"prefix-rft": seeds_at(tmp_path, "prefix-rft", [0.6, 0.6]), "rft": seeds_at(tmp_path, "rft", [0.5, 0.5])}
    comparison = comparison_of(tmp_path, runs)
    assert demo_fraction_verdict(comparison, "id") is None
    curves = tmp_path / "c.png"
    curves.write_bytes(b"png")
    write_results(comparison, comparison.options.results, curves)
    assert "Fewer demonstrations" not in comparison.options.results.read_text()


def test_the_guard_variant_turns_the_guard_on_and_only_there(tmp_path):
    options = CompareOptions(out=tmp_path)
    guarded = _run_options(options, "prefix-rft-guard", seed=0, run_dir=tmp_path / "g", first=False)
    assert guarded.algorithm == AlgorithmName.prefix_rft
    assert build_job_config(guarded, tmp_path / "g").learner.algorithm.hybrid_guard_threshold == 0.5
    plain = _run_options(options, "prefix-rft", seed=0, run_dir=tmp_path / "p", first=False)
    assert build_job_config(plain, tmp_path / "p").learner.algorithm.hybrid_guard_threshold is None


def test_the_ood_split_is_chosen_by_a_dataset_setting_and_named_in_the_results(tmp_path):
    options = CompareOptions(sets=parse_sets(["learner.dataset.ood=new-names"]), out=tmp_path)
    run = _run_options(options, "rft", seed=0, run_dir=tmp_path / "rft", first=True)
    assert build_job_config(run, tmp_path / "rft").learner.dataset.ood_name == "new-names"
    runs = {"rft": seeds_at(tmp_path, "rft", [0.5, 0.5])}
    comparison = comparison_of(tmp_path, runs, sets=options.sets)
    curves = tmp_path / "c.png"
    curves.write_bytes(b"png")
    write_results(comparison, comparison.options.results, curves)
    text = comparison.options.results.read_text()
    assert "ood: `new-names` (2-3 operations, starting amounts 10-99, changes up to 99, new-names wording)" in text
    assert "ood: `longer`" in split_names(CompareOptions())  # the default, as the first comparisons ran


def test_the_probes_are_written_into_the_results(tmp_path):
    probe = StyleProbe(
        style="verified", model="m", settings=ProbeSettings(), tokens=1234, mean_logprob=-1.5, hybrid_reward=0.42,
        sampling=SamplingParams(temperature=1.0),
    )
    comparison = comparison_of(tmp_path, {"rft": seeds_at(tmp_path, "rft", [0.5])}, demonstrations="verified")
    comparison.probes = probe
    curves = tmp_path / "c.png"
    curves.write_bytes(b"png")
    write_results(comparison, comparison.options.results, curves)
    text = comparison.options.results.read_text()
    assert "- Demonstrations: verified (" in text
    assert "mean log-prob per demonstration token under the base policy -1.500 (1234 tokens of 100" in text
    assert "from a prefix ratio of 0.5: 0.420" in text


def test_an_interrupted_run_is_cleared_so_the_comparison_can_start_it_again(tmp_path):
    # What a run stopped mid-way leaves: a checkpoint, which the learner would refuse to start over.
    run_dir = tmp_path / "prefix-rft" / "seed-0"
    (run_dir / "learner" / "checkpoints" / "step-2").mkdir(parents=True)
    _discard_unfinished(run_dir, 5, Console(file=io.StringIO()))
    assert not run_dir.exists()


def test_a_finished_run_of_another_length_is_refused_and_kept(tmp_path):
    run_dir = tmp_path / "prefix-rft" / "seed-0"
    run_dir.mkdir(parents=True)
    (run_dir / "report.json").write_text(report(tmp_path, "prefix-rft", 0, 0.5, 0.1).model_dump_json())
    with pytest.raises(SettingsError, match=r"finished run of 5 steps, not 100.*another --out"):
        _discard_unfinished(run_dir, 100, Console(file=io.StringIO()))
    assert (run_dir / "report.json").is_file()


def _fake_model_folder(path: Path, weights: bytes) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "tokenizer.json").write_text("{}")
    (path / "model.safetensors").write_bytes(weights)
    return path


def _finished_run(tmp_path: Path, digest: str | None) -> CompareOptions:
    options = CompareOptions(variants=["prefix-rft"], seeds=[0], steps=5, out=tmp_path / "out")
    run_dir = options.out / "prefix-rft" / "seed-0"
    run_dir.mkdir(parents=True)
    finished = report(tmp_path, "prefix-rft", 0, 0.5, 0.1).model_copy(update={"model_digest": digest})
    (run_dir / "report.json").write_text(finished.model_dump_json())
    return options


@pytest.fixture
def this_machines_base(tmp_path, monkeypatch) -> Path:
    base = _fake_model_folder(tmp_path / "base", b"weights built here")
    monkeypatch.setattr("shared.base_policy.default_base_policy", lambda: base)
    return base


def test_finished_runs_from_another_base_policy_are_refused_by_name(tmp_path, this_machines_base):
    elsewhere = weights_digest(_fake_model_folder(tmp_path / "elsewhere", b"weights built on another CPU"))
    options = _finished_run(tmp_path, elsewhere)
    with pytest.raises(SettingsError, match=rf"1 of the 1 finished runs .* another base policy .*weights {elsewhere}"):
        _check_one_base(options, Console(file=io.StringIO()))


def test_finished_runs_without_a_recorded_base_are_refused(tmp_path, this_machines_base):
    with pytest.raises(SettingsError, match="weights not recorded"):
        _check_one_base(_finished_run(tmp_path, None), Console(file=io.StringIO()))


def test_finished_runs_from_this_machines_base_policy_are_reused(tmp_path, this_machines_base):
    _check_one_base(_finished_run(tmp_path, weights_digest(this_machines_base)), Console(file=io.StringIO()))


def test_nothing_is_built_to_check_when_no_run_is_reused(tmp_path, monkeypatch):
    def build():
        raise AssertionError("the base policy was built for nothing")

    monkeypatch.setattr("shared.base_policy.default_base_policy", build)
    _check_one_base(CompareOptions(variants=["sft"], seeds=[0], out=tmp_path / "empty"), Console(file=io.StringIO()))


def test_the_weights_digest_follows_the_weights_bytes_not_the_folder(tmp_path):
    one = weights_digest(_fake_model_folder(tmp_path / "one", b"\x00\x01" * 1000))
    assert weights_digest(_fake_model_folder(tmp_path / "copy", b"\x00\x01" * 1000)) == one
    assert weights_digest(_fake_model_folder(tmp_path / "rounded", b"\x00\x01" * 999 + b"\x00\x02")) != one


def test_reward_curves_are_read_where_the_comparison_keeps_its_runs_now(tmp_path):
    # The reports name the folder the runs were made in; the comparison's folder has moved since.
    options = CompareOptions(variants=["rft", "sft"], seeds=[0, 1], steps=2, out=tmp_path / "moved")
    runs = {name: {s: report(tmp_path / "gone", name, s, 0.5, 0.1) for s in (0, 1)} for name in ("rft", "sft")}
    for seed, rewards in ((0, [0.2, 0.4]), (1, [0.4, 0.6])):
        learner = options.out / "rft" / f"seed-{seed}" / "learner"
        learner.mkdir(parents=True)
        for step, reward in enumerate(rewards, start=1):
            metrics_file(learner).append(step_record(step, reward_on_policy=reward))
    for seed in (0, 1):  # SFT has no rollouts
        learner = options.out / "sft" / f"seed-{seed}" / "learner"
        learner.mkdir(parents=True)
        metrics_file(learner).append(step_record(1, sft=True))
    comparison = Comparison(options=options, base={"id": 0.4}, base_avg_at_k={}, summaries=[], runs=runs,
                            wall_time_s=1.0, machine="m")
    curves = reward_curves(comparison)
    assert list(curves) == ["rft"]
    xs, ys = curves["rft"]
    assert xs == [1, 2] and ys == pytest.approx([0.3, 0.5])
