"""How a local deployment hands out GPUs: each process its own CUDA_VISIBLE_DEVICES, on machines
of 1 to 8 GPUs, and a clear refusal when the job asks for more than there are."""

import pytest
from typer.testing import CliRunner

from launcher.cli import app
from launcher.config import JobConfig
from launcher.gpus import GpuRequest, NotEnoughGpus, place_job, place_processes, plan_gpus, visible_gpus
from shared.settings import parse_sets

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


# ---- a local job's processes: `prefix-rft run --learner-ranks/--learner-gpus/--rollout-gpus`


def _place(visible, ranks=None, learner_gpus=None, rollout_gpus=None, workers=1, tp=1):
    return place_processes(ranks, learner_gpus, rollout_gpus, workers, tp, [str(i) for i in range(visible)])


def test_on_cpus_the_learner_runs_the_ranks_asked_for_with_no_devices():
    placement = _place(0, ranks=2, workers=2)
    assert (placement.learner_ranks, placement.rollout_workers, placement.gpus) == (2, 2, None)
    assert placement.learner_env() == {} and placement.rollout_env(1) == {}
    assert _place(0).learner_ranks == 1


@pytest.mark.parametrize(("asked", "named"), [({"learner_gpus": 1}, "--learner-gpus 1"),
                                                 ({"rollout_gpus": 2}, "--rollout-gpus 2")])
def test_asking_for_gpus_on_a_machine_without_any_is_refused_naming_the_option(asked, named):
    with pytest.raises(NotEnoughGpus, match=f"{named} .*shows no GPU.*--learner-ranks"):
        _place(0, **asked)


@pytest.mark.parametrize("gpus", range(2, 9))
def test_by_default_the_learner_and_each_worker_get_devices_of_their_own(gpus):
    workers = gpus - 1
    placement = _place(gpus, workers=workers)
    assert placement.learner_ranks == 1 and placement.rollout_workers == workers
    assert placement.learner_env() == {"CUDA_VISIBLE_DEVICES": "0"}
    assert [placement.rollout_env(i) for i in range(workers)] == [
        {"CUDA_VISIBLE_DEVICES": str(i + 1)} for i in range(workers)]


def test_one_gpu_for_a_default_job_is_shared_as_before_and_said_so():
    placement = _place(1)
    assert placement.gpus is None and placement.learner_env() == {}
    assert "shows 1 GPU" in placement.note
    with pytest.raises(NotEnoughGpus, match="needs 3 GPUs"):
        _place(1, ranks=2)  # asked for: refused, not shared


def test_learner_ranks_take_one_gpu_each_and_rollout_gpus_decide_the_workers():
    placement = _place(8, ranks=2, rollout_gpus=6, tp=2)
    assert placement.learner_ranks == 2 and placement.learner_env() == {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert placement.rollout_workers == 3
    assert [placement.rollout_env(i)["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["2,3", "4,5", "6,7"]
    assert _place(4, learner_gpus=2, rollout_gpus=2).learner_ranks == 2


def test_options_that_disagree_are_refused():
    with pytest.raises(NotEnoughGpus, match="--learner-ranks 2 and --learner-gpus 3 disagree"):
        _place(8, ranks=2, learner_gpus=3)
    with pytest.raises(NotEnoughGpus, match="--rollout-workers 3 and --rollout-gpus 4 disagree"):
        _place(8, rollout_gpus=4, workers=3)


def test_the_job_files_placement_section_and_tensor_parallel_size_are_read():
    job = JobConfig.load(sets=parse_sets(["placement.learner_gpus=2", "placement.rollout_gpus=4",
                                          "rollout.engine_args.tensor_parallel_size=2"]))
    placement = place_job(job, rollout_workers=1, visible=[str(i) for i in range(6)])
    assert placement.learner_env() == {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert [placement.rollout_env(i) for i in range(2)] == [
        {"CUDA_VISIBLE_DEVICES": "2,3"}, {"CUDA_VISIBLE_DEVICES": "4,5"}]


@pytest.mark.parametrize(
    ("command", "named"),
    [
        (["run", "--learner-gpus", "2"], "--learner-gpus 2"),
        (["run", "--rollout-gpus", "1"], "--rollout-gpus 1"),
        (["run", "--set", "placement.learner_gpus=1"], "placement.learner_gpus"),
        (["compare", "--learner-gpus", "1"], "--learner-gpus 1"),
    ],
)
def test_the_cli_refuses_gpus_a_machine_lacks_with_a_message(command, named, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [*command, "--out", str(out)], env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())  # rich wraps lines
    assert "shows no GPU" in message and named in message, message
    assert isinstance(result.exception, SystemExit)  # a message, not an exception's trace
    assert not out.exists()
