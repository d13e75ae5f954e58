"""How a local deployment splits the machine's cores between the learner and the rollout workers."""

from launcher.cpus import plan_cores, thread_env


def test_two_cores_give_the_learner_one_and_the_worker_the_other():
    plan = plan_cores([0, 1], rollout_workers=1)
    assert plan.learner == (0,)
    assert plan.workers == [(1,)]


def test_workers_split_the_cores_the_learner_leaves():
    plan = plan_cores(list(range(16)), rollout_workers=3)
    assert plan.learner == tuple(range(8))
    assert plan.workers == [(8, 9, 10), (11, 12, 13), (14, 15)]
    assert not set(plan.learner) & {core for worker in plan.workers for core in worker}


def test_more_workers_than_cores_share_them_round_robin():
    plan = plan_cores([0, 1, 2, 3], rollout_workers=3)
    assert plan.learner == (0, 1)
    assert plan.workers == [(2,), (3,), (2,)]


def test_a_single_core_is_not_split():
    assert plan_cores([0], rollout_workers=1) is None


def test_thread_pools_match_the_pinned_cores():
    assert thread_env((4, 5, 6)) == {"OMP_NUM_THREADS": "3"}
