"""The curves a run writes beside its report."""

import warnings

from launcher.report import RunReport, plot_curves


def test_an_sft_run_without_rollouts_plots_without_a_legend_warning(tmp_path):
    report = RunReport(
        algorithm="sft", seed=0, steps=2, model="m", data="d", wall_time_s=1.0, train_time_s=1.0,
        tokens_per_s=0.0, dropped_stale_groups=0, trained_groups=0, accuracy_before={"id": 0.3},
        accuracy_after={"id": 0.2}, evaluation_before={}, evaluation_after={}, run_dir=str(tmp_path),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warned "No artists with labels" on every SFT run
        plot_curves([], report, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
