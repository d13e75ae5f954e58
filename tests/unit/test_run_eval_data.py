"""What a run evaluates on: benchmark files given with --eval-data, else rows of --data that the
learner is configured never to train on."""

import json

from rich.console import Console

from launcher.run import RunOptions, _eval_splits, build_job_config
from services.learner.coordinator import load_problems_for


def data_file(tmp_path, rows=40):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"problem": f"p{i}", "answer": str(i)}) + "\n" for i in range(rows)))
    return path


def test_a_run_on_data_alone_evaluates_on_rows_the_learner_never_trains_on(tmp_path):
    options = RunOptions(data=data_file(tmp_path), eval_problems=8)
    job = build_job_config(options, tmp_path / "run")
    console = Console(record=True, width=200)
    splits = _eval_splits(options, job, console)
    held = {p.id for p in splits["held-out"]}
    trained = {p.id for p in load_problems_for(job.learner)}  # what the learner process will load
    assert len(held) == 8 and len(trained) == 32 and not held & trained
    assert "held out of training" in console.export_text()


def test_eval_data_files_are_the_splits_and_nothing_is_held_out(tmp_path):
    bench = tmp_path / "gsm8k.jsonl"
    bench.write_text(json.dumps({"question": "q", "answer": "so #### 7"}) + "\n")
    options = RunOptions(data=data_file(tmp_path), eval_data=[bench], eval_problems=8)
    job = build_job_config(options, tmp_path / "run")
    splits = _eval_splits(options, job, Console(record=True))
    assert list(splits) == ["gsm8k"] and splits["gsm8k"][0].answer == "7"
    assert job.learner.data.holdout == 0 and len(load_problems_for(job.learner)) == 40


def test_a_data_file_from_the_job_file_is_held_out_from_too(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text(f"learner: {{data: {{path: {data_file(tmp_path)}}}}}\n")
    options = RunOptions(config=config, eval_problems=4)
    job = build_job_config(options, tmp_path / "run")
    held = {p.id for p in _eval_splits(options, job, Console(record=True))["held-out"]}
    assert len(held) == 4 and not held & {p.id for p in load_problems_for(job.learner)}


def test_the_built_in_ood_split_a_run_evaluates_on_is_the_jobs_dataset_setting(tmp_path):
    from shared.datasets.arithmetic import ArithmeticDataset

    options = RunOptions(out=tmp_path, eval_problems=5, sets={"learner": {"dataset": {"ood": "three-digit-start"}}})
    splits = _eval_splits(options, build_job_config(options, tmp_path), Console(record=True))
    assert splits["ood"] == ArithmeticDataset(ood="three-digit-start").problems("ood")[:5]
    default = RunOptions(out=tmp_path, eval_problems=5)
    assert _eval_splits(default, build_job_config(default, tmp_path), Console(record=True))["ood"] == (
        ArithmeticDataset().problems("ood")[:5]
    )
