from services.learner.checkpoint import LearnerState
from services.learner.consumed import ConsumedState
from services.learner.metrics import StepMetrics, batch_stats
from shared.messages import RolloutKind, Trajectory, TrajectoryGroup
from shared.records import JsonlFile, StepRecord
from tests.helpers.records import step_record


def traj(kind, n_prefix, n_cont, reward, version):
    return Trajectory(
        kind=kind, response_token_ids=list(range(4, 4 + n_prefix + n_cont)), prefix_len=n_prefix,
        behaviour_logprobs=[-1.0] * n_cont if kind != RolloutKind.demonstration else [],
        policy_version=version if kind != RolloutKind.demonstration else None, reward=reward, correct=reward > 0,
    )


def group(gid, version, trajectories):
    return TrajectoryGroup(id=gid, prompt_id="p", issued_at_version=version, step=0, worker_id="w",
                           prompt_token_ids=[1, 2], trajectories=trajectories)


def test_batch_stats_separates_on_policy_and_hybrid_rewards():
    groups = [
        group("a", 5, [traj(RolloutKind.hybrid, 6, 2, 1.0, 5), traj(RolloutKind.on_policy, 0, 4, 0.0, 5),
                       traj(RolloutKind.on_policy, 0, 4, 1.0, 5)]),
        group("b", 4, [traj(RolloutKind.hybrid, 2, 6, 0.0, 4), traj(RolloutKind.on_policy, 0, 8, 0.0, 4)]),
    ]
    stats = batch_stats(groups, version=6)
    assert stats.reward_hybrid == 0.5 and abs(stats.reward_on_policy - 1 / 3) < 1e-9
    assert stats.reward_demonstration is None
    assert stats.prefix_token_share == 8 / 32
    assert (stats.prefix_len_min, stats.prefix_len_max) == (2, 6)
    assert stats.staleness_hist == {"1": 1, "2": 1} and stats.staleness_mean == 1.5
    assert stats.generated_tokens == 24


def test_jsonl_log_cuts_the_lines_of_lost_steps(tmp_path):
    log = JsonlFile(tmp_path / "m.jsonl", StepRecord)
    for step in range(1, 7):
        log.append(step_record(step, loss=1.0 / step))
    assert log.truncate_after(4, key=lambda r: r.step) == 2
    assert [r.step for r in log.read()] == [1, 2, 3, 4]
    metrics = StepMetrics(log)
    metrics.record(step_record(5, loss=0.2, staleness_hist={"0": 2, "1": 2}))
    text = metrics.exposition().decode()
    assert "learner_step 5.0" in text and "learner_staleness_hist_1 2.0" in text and "learner_sft" not in text


def test_learner_state_round_trips():
    state = LearnerState(run_id="abc", step=3, version=4, position=30, issued=28, commit=1,
                         consumed=ConsumedState(floor=2, above=[4], count=3), totals={"stale": 2.0})
    assert LearnerState.model_validate_json(state.model_dump_json()) == state
