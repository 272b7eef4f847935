"""The SLURM executor against a real scheduler: job arrays, --jobs, scancel, time-limit requeue, failures.

The cluster is the one ``SLURM_CONF`` names when it answers, else a private single-node cluster
that ``tests/slurm/cluster.sh`` starts for the session (root and Debian's SLURM packages needed:
``tests/slurm/cluster.sh install``). Without either the tests skip, saying why. Marked ``slurm``
(and ``slow``): ``pytest -m slurm`` runs just these.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY, run_dirs, totals

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

CLUSTER = Path(__file__).with_name("cluster.sh")
#: One CPU per job: the cluster of CI has two, and --jobs is checked against what runs at once.
ONE_CPU = ["--executor", "slurm", "--slurm-cpus", "1"]
#: A run of a few hundred steps (tens of seconds on one CPU): long enough to be caught mid-training.
LONG = [*TINY, "--set", "datasets.synthfer.options.train_size=960"]


def _answers() -> bool:
    try:
        return subprocess.run(["scontrol", "ping"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory):
    """A SLURM cluster that answers: SLURM_CONF's, or the local one started for this session."""
    pytest.importorskip("submitit")
    if os.environ.get("SLURM_CONF") and _answers():
        yield os.environ["SLURM_CONF"]
        return
    missing = [c for c in ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "sbatch") if shutil.which(c) is None]
    if missing:
        pytest.skip(f"SLURM is not installed here (no {', '.join(missing)}): `sudo {CLUSTER} install` adds it")
    if os.geteuid() != 0:
        pytest.skip(f"the local SLURM cluster ({CLUSTER}) runs its daemons as root")
    root = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "NLBENCH_SLURM_ROOT": str(root)}
    started = subprocess.run(["bash", str(CLUSTER), "up"], env=env, capture_output=True, text=True, timeout=300)
    if started.returncode != 0:  # e.g. its ports are taken: say why, without failing a laptop's test run
        subprocess.run(["bash", str(CLUSTER), "down"], env=env, capture_output=True, timeout=120)
        reason = f"the local SLURM cluster did not start: {started.stderr.strip()[-300:]}"
        if os.environ.get("NLBENCH_REQUIRE_SLURM"):
            pytest.fail(reason)
        pytest.skip(reason)
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(root / "etc" / "slurm.conf")
    try:
        yield os.environ["SLURM_CONF"]
    finally:
        subprocess.run(["bash", str(CLUSTER), "down"], env=env, capture_output=True, timeout=120)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous


def _slurm(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=True).stdout


def _array_of(err: str) -> str:
    """The job (array) id that `nlbench sweep` printed when it submitted."""
    line = next(line for line in err.splitlines() if "as SLURM job array" in line)
    return line.split("as SLURM job array ")[1].split(";")[0]


def _queued(job: str) -> list[tuple[str, str]]:
    """(job id, state) of the job's tasks still in the queue."""
    text = _slurm("squeue", "-h", "-r", "-j", job, "-o", "%i %T")
    return [tuple(line.split()) for line in text.splitlines() if line.strip()]


def _accounting(job: str) -> dict[str, str]:
    """Job id -> state, from sacct (allocations only, not steps)."""
    text = _slurm("sacct", "-n", "-X", "-P", "-j", job, "-o", "JobID,State")
    return dict(line.split("|")[:2] for line in text.splitlines() if line.strip())


def _completed(job: str) -> dict[str, str] | None:
    """The job's tasks and states once sacct records every one COMPLETED, else None."""
    states = _accounting(job)
    return states if states and set(states.values()) == {"COMPLETED"} else None


def _wait(condition, what: str, timeout: float, every: float = 0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _status(runs: Path) -> dict:
    """The one run's status.json ({} before its job has started it)."""
    try:
        [run] = run_dirs(runs)
        return json.loads((run / "status.json").read_text())
    except (OSError, ValueError):  # no folder yet, or (ValueError) none or a file being replaced
        return {}


def _outcome(runs: Path) -> dict:
    """What a run learnt, without its timings: the result's metrics and every epoch's record."""
    [run] = run_dirs(runs)
    result = json.loads((run / "result.json").read_text())
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    timing = ("seconds", "eval_seconds", "train_images_per_s")
    return {"result": {k: result[k] for k in ("metrics", "final", "diagnostics", "noise", "validation")},
            "epochs": [{k: v for k, v in epoch.items() if k not in timing} for epoch in epochs],
            "attempts": result["cost"]["attempts"]}


def test_a_sweep_is_one_job_array_capped_by_jobs_and_status_follows_it(cli, slurm, tmp_path):
    runs = tmp_path / "runs"
    sent = cli("sweep", *ONE_CPU, "--jobs", "1", "--methods", "standard", "--seeds", "1,2,3", "--epochs", "2",
               "--runs-dir", str(runs), *TINY)
    assert sent.code == 0, sent.err
    assert "submitted 3" in sent.err and "nlbench status" in sent.err
    array = _array_of(sent.err)
    assert len(_queued(array)) >= 2  # the client submits and returns; it does not wait for the jobs
    listed = cli("status", "--runs-dir", str(runs))
    assert totals(listed.out)[4] >= 2  # and `status` counts the runs still queued as to do
    most = 0
    while True:
        tasks = _queued(array)
        most = max(most, sum(state == "RUNNING" for _, state in tasks))
        if not tasks:
            break
        time.sleep(0.2)
    assert most == 1, "--jobs 1 let several tasks of the array run at once"
    # Accounting (slurmdbd) may lag a second behind the queue.
    states = _wait(lambda: _completed(array), "sacct to record the tasks completed", 60)
    assert sorted(states) == [f"{array}_{i}" for i in range(3)]
    status = cli("status", "--runs-dir", str(runs))
    assert status.code == 0
    assert "│    3 │" in status.out  # three done runs of one cell
    for run in run_dirs(runs):
        recorded = json.loads((run / "status.json").read_text())
        assert recorded["state"] == "done" and recorded["slurm_job"].startswith(f"{array}_")
        assert Path(recorded["log"]).is_file()  # the job's log, where the README says


def test_wait_trains_the_array_and_prints_the_table(cli, slurm, tmp_path):
    runs = tmp_path / "runs"
    done = cli("sweep", *ONE_CPU, "--wait", "--jobs", "2", "--methods", "standard", "--seeds", "1,2", "--epochs", "1",
               "--runs-dir", str(runs), *TINY)
    assert done.code == 0, done.err
    assert "trained 2" in done.err and "standard" in done.out  # the comparison table
    assert all((run / "result.json").is_file() for run in run_dirs(runs))


def test_more_cpus_than_a_node_has_is_refused_before_submitting(cli, slurm, tmp_path):
    before = _slurm("squeue", "-h", "-o", "%i")
    refused = cli("sweep", "--executor", "slurm", "--slurm-cpus", "512", "--methods", "standard", "--seeds", "1",
                  "--runs-dir", str(tmp_path / "runs"), *TINY)
    assert refused.code == 2
    assert "512 CPUs (--slurm-cpus)" in refused.err and "pending forever" in refused.err
    assert _slurm("squeue", "-h", "-o", "%i") == before  # nothing was submitted
    wrong = cli("sweep", "--executor", "slurm", "--slurm-partition", "nosuch", "--methods", "standard",
                "--runs-dir", str(tmp_path / "runs"), *TINY)
    assert wrong.code == 2 and "no such partition" in wrong.err


def test_a_cancelled_job_is_interrupted_and_resumes_when_the_sweep_runs_again(cli, slurm, tmp_path):
    runs = tmp_path / "runs"
    flags = [*ONE_CPU, "--methods", "standard", "--seeds", "1", "--epochs", "8", "--runs-dir", str(runs), *LONG]
    sent = cli("sweep", *flags)
    assert sent.code == 0, sent.err
    job = _array_of(sent.err)
    _wait(lambda: _status(runs).get("epoch", 0) >= 2, "two epochs (a checkpoint)", 240)
    _slurm("scancel", job)
    _wait(lambda: _accounting(job).get(job, "").startswith("CANCELLED") and _status(runs).get("state") != "running",
          "the cancelled job", 60)
    recorded = _status(runs)
    assert recorded["state"] == "interrupted" and "SIGTERM" in recorded["error"]
    status = cli("status", "--runs-dir", str(runs), "--failed")
    assert status.code == 0 and "interrupted" in status.out and "│    1 │" not in status.out.split("failed")[0]
    again = cli("sweep", *flags, "--wait", "--no-table")
    assert again.code == 0, again.err
    assert "1 interrupted" in again.err and "trained 1" in again.err
    [run] = run_dirs(runs)
    assert json.loads((run / "result.json").read_text())["cost"]["attempts"] == 2
    log = Path(_status(runs)["log"]).read_text()
    assert "resuming" in log and "epoch 3" in log  # from its checkpoint, not from scratch


def test_a_job_past_its_time_limit_is_requeued_and_ends_as_if_never_stopped(cli, slurm, tmp_path):
    # SLURM may send its warning up to a minute early (its documentation says so): a 1-minute job
    # then trains for 5 to 45 s after its start-up. 20 short epochs (about 50 s) are more than one
    # job can train, and each attempt gets a few of them: a handful of requeues, well within
    # MAX_TIMEOUTS.
    flags = [*ONE_CPU, "--methods", "standard", "--seeds", "1", "--epochs", "20", *TINY,
             "--set", "datasets.synthfer.options.train_size=400"]
    limited, whole = tmp_path / "limited", tmp_path / "whole"
    # The same run twice at once: with a 1-minute limit (SLURM warns it, it requeues itself) and without.
    first = cli("sweep", *flags, "--slurm-time", "1", "--runs-dir", str(limited))
    second = cli("sweep", *flags, "--slurm-time", "30", "--runs-dir", str(whole))
    assert first.code == 0 and second.code == 0, first.err + second.err
    job = _array_of(first.err)
    seen: list[dict] = []
    shown_requeued = False

    def finished() -> bool:
        nonlocal shown_requeued
        status = _status(limited)
        if status:
            seen.append(status)
        if status.get("state") == "interrupted" and not shown_requeued:
            listing = cli("status", "--runs-dir", str(limited))
            assert listing.code == 0, "a requeued run is not a failure"
            shown_requeued = "requeued" in listing.out
        done = [(runs / "result.json").is_file() for runs in run_dirs(limited) + run_dirs(whole)]
        return len(done) == 2 and all(done) and not _queued(job)

    _wait(finished, "both runs", 600, every=1.0)
    states = {s.get("state") for s in seen}
    assert "failed" not in states
    requeues = [s for s in seen if s.get("state") == "interrupted"]
    assert requeues and "Requeued" in requeues[0]["error"], "the 1-minute job was never requeued"
    assert shown_requeued, "`nlbench status` did not say the run was requeued"
    limited_outcome, whole_outcome = _outcome(limited), _outcome(whole)
    assert limited_outcome.pop("attempts") > whole_outcome.pop("attempts") == 1
    assert limited_outcome == whole_outcome


FAILING = '''
import nlbench
import torch.nn.functional as F

class Explodes(nlbench.Method):
    """Fails in its first training step."""
    name = "explodes"

    def build(self, ctx):
        super().build(ctx)
        self.net = ctx.backbone()

    def train_step(self, batch, phase, epoch):
        raise RuntimeError("the loss exploded on purpose")

    def predict(self, x):
        return self.net(x)

@nlbench.hookimpl
def register_methods(register):
    register(Explodes)
'''


def test_a_run_that_raises_is_failed_with_its_error_and_its_log(cli, slurm, tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "explodes.py").write_text(FAILING)
    config = tmp_path / "benchmark.toml"
    config.write_text(f'[plugins]\npaths = ["{folder}"]\n')
    runs = tmp_path / "runs"
    ran = cli("sweep", "--config", str(config), *ONE_CPU, "--wait", "--methods", "explodes", "--seeds", "1",
              "--epochs", "1", "--runs-dir", str(runs), *TINY)
    assert ran.code == 1
    assert "the loss exploded on purpose" in ran.err
    status = cli("status", "--runs-dir", str(runs))
    assert status.code == 1 and "`nlbench status --failed`" in status.out
    listed = cli("status", "--runs-dir", str(runs), "--failed")
    assert "failed" in listed.out and "the loss exploded on purpose" in listed.out
    log = Path(listed.out.split("log: ")[1].split()[0])
    assert log.is_file() and "exploded" in log.read_text()


def test_a_client_that_stops_waiting_says_the_jobs_keep_running(slurm, tmp_path):
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "nlbench", "sweep", *ONE_CPU, "--wait", "--methods", "standard", "--seeds", "1",
               "--epochs", "30", "--runs-dir", str(runs), "--no-table", *LONG]
    client = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in client.stderr:  # until the array is submitted
        lines.append(line)
        if "as SLURM job array" in line:
            break
    job = _array_of("".join(lines))
    client.send_signal(signal.SIGTERM)  # what `kill` sends; Ctrl-C takes the same path
    rest = client.stderr.read()
    assert client.wait(timeout=60) == 130
    assert "keep running" in rest and f"scancel {job}" in rest and "nlbench status" in rest
    try:
        assert _queued(job), "the job stopped with its client"
    finally:
        _slurm("scancel", job)


def test_tune_trains_its_trials_as_slurm_arrays_sharing_one_journal(cli, slurm, tmp_path):
    """`nlbench tune --executor slurm`: every trial is a task of an array, each job reports its epochs
    to the study through the journal file in the store (no database server), and the chosen and
    default configurations are trained and compared at the end."""
    optuna = pytest.importorskip("optuna")
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    runs = tmp_path / "runs"
    done = cli("tune", *ONE_CPU, "--jobs", "2", "--methods", "standard", "--budget", "2", "--seeds", "1",
               "--epochs", "2", "--sampler", "random", "--runs-dir", str(runs), *TINY)
    assert done.code == 0, done.err
    assert done.err.count("as SLURM job array") == 2  # the trials' array, then the evaluation runs'
    assert "standard trial 0: val" in done.err and "standard trial 1: val" in done.err
    assert "Tuned vs default" in done.out
    storage = JournalStorage(JournalFileBackend(str(runs / "tune" / "journal.log")))
    [summary] = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
    assert len(trials) == 2
    for trial in trials:  # written by the SLURM jobs themselves, epoch by epoch
        assert sorted(trial.intermediate_values) == [1, 2], trial.intermediate_values
        assert trial.value == trial.intermediate_values[2]  # the score is the last epoch's noisy validation
    jobs = [json.loads((run / "status.json").read_text()) for run in run_dirs(runs)]
    # Two trials (the first is the default) and the default on seed 1, plus the chosen one unless it is the default.
    assert len(jobs) == (3 if "the default (" in done.out else 4), done.out
    assert all(job["state"] == "done" and job.get("slurm_job") for job in jobs)
