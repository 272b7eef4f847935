"""The SLURM executor's checks without a cluster: what sinfo says, impossible requests, warning times, status."""

from __future__ import annotations

import json

import pytest

from nlbench.errors import UsageError
from nlbench.executors import ExecutorOptions
from nlbench.sweep.slurm import Partition, check_request, parse_sinfo, signal_delay_s

SINFO = """debug*|2|23081|(null)|infinite
gpu|32|515000|gpu:a100:4(S:0-1)|2-00:00:00
gpu|64|1031000|gpu:a100:8(S:0-1),gpu:t4:2|2-00:00:00
short|8+|16000|(null)|30
"""


def test_sinfo_lines_become_partitions_with_their_largest_node():
    found = {p.name: p for p in parse_sinfo(SINFO)}
    assert found["debug"] == Partition("debug", True, 2, 23081, 0, None)
    assert found["gpu"] == Partition("gpu", False, 64, 1031000, 10, 48 * 60)  # the larger of two node kinds
    assert found["short"].cpus == 8 and found["short"].time_limit_min == 30


@pytest.mark.parametrize("options,expected", [
    (ExecutorOptions(), "4 CPUs (--slurm-cpus) but its largest node has 2"),  # the default on a 2-CPU node
    (ExecutorOptions(slurm_cpus=2, slurm_gpus=1), "1 GPUs (--slurm-gpus) but its nodes have none"),
    (ExecutorOptions(slurm_cpus=2, slurm_mem_gb=64), "64 GB (--slurm-mem) but its largest node has 22 GB"),
    (ExecutorOptions(slurm_partition="short", slurm_cpus=2, slurm_time_min=240),
     "240 min (--slurm-time) but its time limit is 30 min"),
    (ExecutorOptions(slurm_partition="gpu", slurm_cpus=8, slurm_gpus=12), "12 GPUs (--slurm-gpus) but its nodes have 10"),
])
def test_a_request_no_node_can_satisfy_is_refused_naming_the_flag(options, expected):
    with pytest.raises(UsageError) as refused:
        check_request(parse_sinfo(SINFO), options)
    assert expected in str(refused.value) and "pending forever" in str(refused.value)


def test_a_request_that_fits_passes_and_unknown_partitions_are_named():
    check_request(parse_sinfo(SINFO), ExecutorOptions(slurm_cpus=2))
    check_request(parse_sinfo(SINFO), ExecutorOptions(slurm_partition="gpu", slurm_cpus=16, slurm_gpus=4,
                                                      slurm_mem_gb=500, slurm_time_min=2880))
    with pytest.raises(UsageError, match="no such partition; sinfo lists debug, gpu, short"):
        check_request(parse_sinfo(SINFO), ExecutorOptions(slurm_partition="long"))
    with pytest.raises(UsageError, match="no default partition"):
        check_request(parse_sinfo("a|4|1000|(null)|infinite\n"), ExecutorOptions(slurm_cpus=1))


def test_short_jobs_are_warned_early_enough_to_train_first():
    assert signal_delay_s(240) == 90  # submitit's default for ordinary jobs
    assert signal_delay_s(1) == 15  # not at once: a 90 s warning in a 1-minute job would requeue forever
    assert signal_delay_s(2) == 30


def test_status_records_the_slurm_job_and_its_log(tmp_path, monkeypatch):
    from nlbench.store import RunDir

    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_JOB_ID", "44")
    monkeypatch.setenv("NLBENCH_JOB_LOG", "/logs/41_3_log.err")
    run = RunDir(tmp_path)
    run.set_status("running")
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["slurm_job"] == "41_3" and status["log"] == "/logs/41_3_log.err"


def test_status_names_a_requeued_run_and_links_failed_runs_to_their_logs(cli, tmp_path):
    from nlbench.plugins import get_registry
    from nlbench.spec.config import Config
    from nlbench.store import RunDir, run_dir_name
    from nlbench.sweep.grid import SweepRequest, expand

    base = {"host": "node7", "pid": 1, "updated": 0.0}
    runs = tmp_path / "runs"
    specs = expand(SweepRequest(methods=["standard"], seeds=[1, 2]), Config(), get_registry())
    for spec, (_name, status) in zip(specs, {
        "requeued": {"state": "interrupted", "slurm_job": "41_0", "epoch": 3, "epochs": 9,
                     "error": "Requeued: SLURM job 41_0 is being requeued (time limit or preemption)"},
        "failed": {"state": "failed", "slurm_job": "41_1", "log": "/logs/41_1_log.err",
                   "error": "RuntimeError: boom\nmore lines"},
    }.items()):
        run = RunDir(runs / run_dir_name(spec))
        run.path.mkdir(parents=True)
        run.write_spec(spec.to_json())
        (run.path / "status.json").write_text(json.dumps({**base, **status}))
    shown = cli("status", "--runs-dir", str(runs))
    assert shown.code == 1  # a failed run
    text = " ".join(shown.out.split())
    assert "requeued" in text and "SLURM job 41_0, stopped after epoch 3" in text
    assert "`nlbench status --failed` lists them" in text
    listed = cli("status", "--runs-dir", str(runs), "--failed")
    assert "RuntimeError: boom" in listed.out and "log: /logs/41_1_log.err" in listed.out


@pytest.mark.parametrize("flag,value", [("--slurm-time", "0"), ("--slurm-cpus", "0"), ("--slurm-gpus", "-1"),
                                        ("--slurm-mem", "0")])
def test_impossible_slurm_values_are_usage_errors(cli, flag, value):
    result = cli("sweep", "--executor", "slurm", flag, value, "--dry-run")
    assert result.code == 2 and flag in result.err


def test_a_job_submitit_stops_requeueing_is_not_shown_as_requeued(cli, tmp_path, monkeypatch):
    # After MAX_TIMEOUTS time-outs submitit refuses to requeue: "resumes when SLURM restarts the
    # job" would be false, so the status says it stopped for good and how to go on.
    submitit = pytest.importorskip("submitit")
    from nlbench.plugins import get_registry
    from nlbench.spec.config import Config
    from nlbench.store import RunDir, run_dir_name
    from nlbench.sweep import slurm
    from nlbench.sweep.grid import SweepRequest, expand

    [spec] = expand(SweepRequest(methods=["standard"], seeds=[1]), Config(), get_registry())
    options = ExecutorOptions(runs_dir=str(tmp_path), slurm_time_min=1)
    run = RunDir(tmp_path / run_dir_name(spec))

    def trains_until_the_time_limit(spec_json, *args, **kwargs):
        run.path.mkdir(parents=True)
        run.write_spec(spec_json)
        run.set_status("interrupted", phase="train", epoch=20, epochs=24,
                       error="Requeued: SLURM job 5 is being requeued (time limit or preemption)")
        raise slurm.Requeued("time limit")

    def submitit_gives_up(signum, frame):
        raise submitit.core.utils.UncompletedJobError("Job not requeued because: timed-out too many times.")

    monkeypatch.setattr(slurm, "train_one", trains_until_the_time_limit)
    monkeypatch.setattr(slurm, "_take_requeue_signal", lambda: (submitit_gives_up, 12))
    with pytest.raises(submitit.core.utils.UncompletedJobError):
        slurm.TrainTask(options)(spec.to_json())
    status = json.loads(run.file("status.json").read_text())
    assert status["state"] == "interrupted" and status["epoch"] == 20 and "Requeued" not in status["error"]
    assert "timed-out too many times" in status["error"] and "longer --slurm-time (now 1 min)" in status["error"]
    shown = cli("status", "--runs-dir", str(tmp_path))
    assert shown.code == 0 and "requeued" not in shown.out
