"""The figures `prefix-rft eval` reports: unbiased pass@k, avg@k and greedy pass@1 from the samples,
and the eval settings a job file or --set gives."""

from itertools import combinations

import pytest
from pydantic import ValidationError

from launcher.config import JobConfig
from launcher.eval_report import EvalSummary, markdown, write_outputs
from launcher.evaluate import EvalSample, EvalSettings, pass_at, summarise
from shared.problems import Problem
from shared.settings import SettingsError, parse_sets


@pytest.mark.parametrize(("n", "c", "k"), [(4, 1, 2), (8, 3, 4), (32, 5, 8), (5, 0, 3), (5, 5, 1)])
def test_pass_at_k_is_the_chance_that_k_drawn_samples_hold_a_correct_one(n, c, k):
    outcomes = [True] * c + [False] * (n - c)
    draws = list(combinations(outcomes, k))
    assert pass_at(n, c, k) == pytest.approx(sum(any(d) for d in draws) / len(draws))


def test_pass_at_1_is_the_mean_and_pass_at_n_is_any():
    assert pass_at(32, 8, 1) == pytest.approx(0.25)
    assert pass_at(32, 1, 32) == 1.0 and pass_at(32, 0, 32) == 0.0
    with pytest.raises(ValueError):
        pass_at(4, 1, 5)


def sample(problem: str, j: int, correct: bool) -> EvalSample:
    return EvalSample(
        benchmark="b", problem_id=problem, sample=j, temperature=0.0 if j == 0 else 0.6, prompt="q", response="r",
        extracted="1" if correct else "2", reference="1", reward=float(correct), correct=correct, status="ok",
        response_tokens=10 * (j + 1), model_version=3,
    )


def test_summary_of_greedy_and_sampled_answers(tmp_path):
    problems = [Problem(id="a", prompt="q", answer="1"), Problem(id="b", prompt="q", answer="1")]
    hits = {"a": [True, True, False, False, False], "b": [False, True, True, True, True]}  # greedy first
    samples = [sample(p, j, c) for p, row in hits.items() for j, c in enumerate(row)]
    result = summarise("b", problems, samples, EvalSettings(k=4, pass_at=[1, 2, 4]))
    assert result.greedy_accuracy == 0.5
    assert result.avg_at_k == pytest.approx((1 / 4 + 4 / 4) / 2)
    assert result.pass_at[1] == pytest.approx(result.avg_at_k)
    assert result.pass_at[2] == pytest.approx((pass_at(4, 1, 2) + 1.0) / 2)
    assert result.pass_at[4] == result.pass_at_k == 1.0
    assert result.mean_response_tokens == 10 and result.model_versions == [3]
    paths = write_outputs(EvalSummary(model="m", benchmarks=[result]), samples, tmp_path)
    assert [EvalSample.model_validate_json(line) for line in paths[0].read_text().splitlines()] == samples
    assert "| b | 2 | 0.500 | 0.625 | 0.625 | 0.750 | 1.000 | 10 |" in markdown([result])
    assert paths[3].stat().st_size > 0


def test_eval_settings_come_from_the_job_file_and_set(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("eval: {k: 32, temperature: 0.6}\n")
    job = JobConfig.load(config, sets=parse_sets(["eval.pass_at=[1, 8]"]))
    assert (job.eval.k, job.eval.temperature, job.eval.pass_ks) == (32, 0.6, [1, 8])
    assert job.document()["eval"]["k"] == 32
    with pytest.raises(SettingsError, match=r"eval.nope: unknown setting"):
        JobConfig.load(config, sets=parse_sets(["eval.nope=1"]))
    with pytest.raises(ValidationError, match="between 1 and k"):
        EvalSettings(k=4, pass_at=[8])
