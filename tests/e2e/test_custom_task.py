"""docs/custom-task.md followed as written, from an empty directory to a training run (the shared run
of tests/e2e/conftest.py): the verifier package it shows is installed editable with pip, the data
file's columns are mapped and its rows name that verifier, a system prompt and an instruction are set.
What the run did is read back from its files: the job it resolved (job.yaml), and the sampled
completions its tracker logged (tensorboard's reader), each with the prompt the rollout worker was
given and the reward the reward service returned."""

from __future__ import annotations

import importlib.util
import json
from importlib.metadata import Distribution

import pytest

from launcher.config import JobConfig
from services.reward.verifiers import VerifierOptions
from tests.helpers import trackers as read

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def within_one(guide_run):
    """The plug-in's own function, from the folder the guide installed it from."""
    path = guide_run.folder / "within_one" / "prefix_rft_within_one.py"
    spec = importlib.util.spec_from_file_location("guide_within_one", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return lambda response, reference: module.within_one(response, reference, VerifierOptions())


@pytest.fixture(scope="module")
def samples(guide_run) -> list[dict[str, str]]:
    run = read.tensorboard_run(guide_run.out / "tracking" / "tensorboard" / "my-task")
    return [row for rows in read.tensorboard_table(run, "samples/text_summary").values() for row in rows]


@pytest.fixture(scope="module")
def rows(guide_run) -> list[dict[str, str]]:
    return [json.loads(line) for line in (guide_run.folder / "problems.jsonl").read_text().splitlines()]


def row_of(prompt: str, rows: list[dict[str, str]]) -> dict[str, str]:
    (row,) = [row for row in rows if row["question"] in prompt]
    return row


def test_the_guide_installs_the_plugin_editable_from_its_own_folder(guide_run):
    (site,) = (guide_run.folder / ".venv" / "lib").glob("python*/site-packages")
    (dist_info,) = site.glob("prefix_rft_within_one-*.dist-info")
    origin = json.loads(Distribution.at(dist_info).read_text("direct_url.json"))
    assert origin["dir_info"] == {"editable": True}
    assert origin["url"] == (guide_run.folder / "within_one").as_uri()


def test_the_run_resolved_the_guides_mapping_prompt_and_verifier(guide_run):
    learner = JobConfig.load(guide_run.out / "job.yaml").learner
    assert learner.data.columns.named() == {
        "problem": "question", "answer": "target", "demonstrations": "worked", "verifier": "checker"
    }
    assert learner.prompt.system_prompt == "You are a careful calculator."
    assert guide_run.report.steps == 3 and [s.step for s in guide_run.steps] == [1, 2, 3]


def test_the_trajectories_carry_the_plugins_scores(samples, rows, within_one):
    assert {row["checker"] for row in rows} == {"within_one"}
    assert len(samples) == 16  # 8 at step 1, 8 at step 3
    # The reward service scored them with the plug-in the rows name (the tiny model's answers are
    # rarely one off, so its rewards alone could be math's 0/1 as well).
    assert {s["verifier"] for s in samples} == {"within_one"}
    for sample in samples:
        reference = row_of(sample["prompt"], rows)["target"]
        assert float(sample["reward"]) == within_one(sample["response"], reference), sample
    assert {float(s["reward"]) for s in samples} <= {0.0, 0.5, 1.0}


def test_the_worker_was_given_the_system_prompt_and_the_instruction(guide_run, samples, rows):
    for sample in samples:
        prompt = sample["prompt"]  # decoded from the token ids of the task the rollout worker took
        question = row_of(prompt, rows)["question"]
        assert prompt.index("You are a careful calculator.") < prompt.index(question), prompt
        assert question + "\nAnswer with the number alone on the last line." in prompt, prompt
