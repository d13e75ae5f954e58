"""How a local deployment hands out GPUs: each process its own CUDA_VISIBLE_DEVICES, on machines
of 1 to 8 GPUs, and a clear refusal when the job asks for more than there are."""

import pytest

from launcher.gpus import GpuRequest, NotEnoughGpus, plan_gpus, visible_gpus

# (learner GPUs, rollout GPUs, tensor parallel) -> the smallest machine that holds it
REQUESTS = [
    ((1, 0, 1), 1),
    ((1, 1, 1), 2),
    ((1, 3, 1), 4),
    ((2, 2, 1), 4),
    ((2, 2, 2), 4),
    ((4, 4, 1), 8),
    ((4, 4, 2), 8),
    ((2, 6, 3), 8),
    ((1, 7, 1), 8),
    ((8, 0, 1), 8),
    ((4, 4, 4), 8),
]


@pytest.mark.parametrize("gpus", range(1, 9))
@pytest.mark.parametrize(("request_", "smallest"), REQUESTS)
def test_every_process_gets_its_own_devices_or_the_job_is_refused(gpus, request_, smallest):
    learner, rollout, tp = request_
    visible = [str(i) for i in range(gpus)]
    request = GpuRequest(learner_gpus=learner, rollout_gpus=rollout, tensor_parallel=tp)
    if gpus < smallest:
        with pytest.raises(NotEnoughGpus, match=rf"needs {learner + rollout} GPUs .* shows {gpus}"):
            plan_gpus(request, visible)
        return
    plan = plan_gpus(request, visible)
    assert plan.learner_ranks == learner
    assert plan.learner_env() == {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(learner))}
    assert len(plan.rollout) == rollout // tp
    assert all(len(worker) == tp for worker in plan.rollout)
    every = list(plan.learner) + [d for worker in plan.rollout for d in worker]
    assert len(every) == len(set(every)) == learner + rollout  # nothing shared, nothing lost
    for index, worker in enumerate(plan.rollout):
        assert plan.rollout_env(index) == {"CUDA_VISIBLE_DEVICES": ",".join(worker)}


def test_four_gpus_two_learner_ranks_and_two_single_gpu_workers():
    plan = plan_gpus(GpuRequest(learner_gpus=2, rollout_gpus=2), ["0", "1", "2", "3"])
    assert plan.learner_env() == {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert [plan.rollout_env(i) for i in range(2)] == [{"CUDA_VISIBLE_DEVICES": "2"}, {"CUDA_VISIBLE_DEVICES": "3"}]


def test_tensor_parallel_must_divide_the_rollout_gpus():
    with pytest.raises(NotEnoughGpus, match="not a multiple of tensor_parallel 2"):
        plan_gpus(GpuRequest(learner_gpus=1, rollout_gpus=3, tensor_parallel=2), [str(i) for i in range(8)])


def test_the_launchers_own_devices_are_handed_out_by_their_ids():
    # a launcher restricted to devices 2, 5, 7 (or UUIDs) gives its children subsets of those, not 0..2
    visible = visible_gpus({"CUDA_VISIBLE_DEVICES": "2,5, 7"})
    assert visible == ["2", "5", "7"]
    plan = plan_gpus(GpuRequest(learner_gpus=1, rollout_gpus=2), visible)
    assert plan.learner_env() == {"CUDA_VISIBLE_DEVICES": "2"}
    assert plan.rollout == [("5",), ("7",)]
    uuids = visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb"})
    assert plan_gpus(GpuRequest(learner_gpus=1, rollout_gpus=1), uuids).rollout_env(0) == {
        "CUDA_VISIBLE_DEVICES": "GPU-bb"}


def test_a_machine_without_gpus_is_refused_with_the_reason():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    with pytest.raises(NotEnoughGpus, match=r"needs 2 GPUs \(1 for the learner \+ 1 for rollout\) .* shows 0"):
        plan_gpus(GpuRequest(), [])
