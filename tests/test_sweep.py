"""Sweeps: grid expansion, presets, states from the store, executors, status and export."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from pathlib import Path

import pytest

from conftest import TINY, run_dirs, totals
from nlbench.errors import ConfigError, UsageError
from nlbench.plugins import get_registry
from nlbench.spec.config import Config, load_config
from nlbench.store import RunDir
from nlbench.sweep.grid import SweepRequest, apply_preset, expand, set_axes, split_list

#: TINY as plain --set items (TINY is a flag list for `nlbench run`).
TINY_SETS = [item for item in TINY if item != "--set"]


def test_split_list_keeps_commas_inside_brackets_and_quotes():
    assert split_list("1,2,3") == ["1", "2", "3"]
    assert split_list("[1,2],[3]") == ["[1,2]", "[3]"]
    assert split_list('"a,b",c') == ['"a,b"', "c"]
    assert set_axes(["a=1,2", "b=x"]) == [["a=1", "b=x"], ["a=2", "b=x"]]


def test_the_grid_is_the_cross_product_with_each_run_once():
    request = SweepRequest(methods=["standard", "cct"], noise=[0.0, 0.4], seeds=[1, 2],
                           sets=[*TINY_SETS, "methods.cct.networks=2,3"])
    specs = expand(request, Config(), get_registry())
    # standard ignores methods.cct.*: its 4 runs are not repeated for each networks value.
    assert len(specs) == 4 + 8
    assert len({s.run_id for s in specs}) == 12
    cct = [s for s in specs if s.method == "cct"]
    assert sorted({s.hparams["networks"] for s in cct}) == [2, 3]
    assert {(s.noise.rate, s.seed) for s in specs} == {(r, s) for r in (0.0, 0.4) for s in (1, 2)}


def test_a_sweeps_run_is_the_run_nlbench_run_would_make(cli, tmp_path):
    specs = expand(SweepRequest(methods=["standard"], noise=[0.3], seeds=[4], sets=TINY_SETS, epochs=1),
                   Config(), get_registry())
    assert cli("run", "--method", "standard", "--noise", "0.3", "--seed", "4", "--epochs", "1",
               "--runs-dir", str(tmp_path), *TINY).code == 0
    [run] = run_dirs(tmp_path)
    assert run.name.endswith(specs[0].run_id)


def test_presets_fill_what_the_command_line_leaves_open(tmp_path):
    config_file = tmp_path / "benchmark.toml"
    config_file.write_text('[sweeps.small]\nmethods = ["standard", "cct"]\nnoise = [0.0, 0.4]\nseeds = [1, 2, 3]\n'
                           'set = ["train.epochs=2"]\n[sweeps.bad]\nmethod = ["x"]\n')
    config = load_config(config_file)
    merged = apply_preset(SweepRequest(seeds=[7], sets=["train.epochs=5"]), config, "small")
    assert merged.methods == ["standard", "cct"] and merged.seeds == [7]
    assert merged.sets == ["train.epochs=2", "train.epochs=5"]  # the command line's item comes last and wins
    with pytest.raises(ConfigError, match="unknown key sweeps.bad.method"):
        apply_preset(SweepRequest(), config, "bad")
    with pytest.raises(UsageError, match="no sweep preset 'nope'"):
        apply_preset(SweepRequest(), config, "nope")


def test_the_shipped_presets_expand(tmp_path):
    config = load_config(Path(__file__).resolve().parents[1] / "benchmark.toml")
    assert {"demo", "table1", "table3", "table8"} <= set(config.sweeps)
    demo = expand(apply_preset(SweepRequest(), config, "demo"), config, get_registry())
    assert len(demo) == 8 and {s.method for s in demo} == {"standard", "cct"}
    assert {s.noise.rate for s in demo} == {0.0, 0.4} and {s.seed for s in demo} == {1, 2}
    # The protocol the README's demo table was measured with, one for every run of the grid.
    assert len({(s.train, tuple(sorted(s.data.options.items()))) for s in demo}) == 1
    train, options = demo[0].train, demo[0].data.options
    assert (train.epochs, train.image_size, train.batch_size, train.lr_decay, train.augmentation) == (
        12, 32, 32, 1.0, "none")
    assert (options["train_size"], options["test_size"], options["size"], options["nuisance"]) == (
        500, 300, 32, 0.1)
    assert {s.hparams["distill_epochs"] for s in demo if s.method == "cct"} == {-1}
    table1 = apply_preset(SweepRequest(), config, "table1")
    assert len(table1.methods) == 7 and table1.noise == [0.1, 0.2, 0.3, 0.4]


def test_the_fer_cpu_preset_is_one_protocol_that_runs_unchanged_on_a_gpu():
    """fer-cpu: 42 runs on FERPlus with one training protocol and nothing CPU-only (the real files; skips without)."""
    from test_datasets_ferplus import _real

    config = load_config(Path(__file__).resolve().parents[1] / "benchmark.toml")
    fer_cpu = expand(apply_preset(SweepRequest(data_roots={"": str(_real())}, device="cuda"), config, "fer-cpu"),
                     config, get_registry())
    assert len(fer_cpu) == 42 and len({s.method for s in fer_cpu}) == 7 and {s.data.name for s in fer_cpu} == {"ferplus"}
    # One protocol for every cell, and nothing CPU-only in it: with --device cuda it is the same run
    # (cpu_amp asks the CPU for the bf16 autocast a GPU uses anyway).
    assert {(s.train.train_size, s.train.image_size, s.train.epochs, s.train.augmentation, s.train.lr_decay,
             s.train.cpu_amp, s.device) for s in fer_cpu} == {(3000, 32, 14, "none", 1.0, True, "cuda")}
    # The Adam kernel and the checkpoint interval are runtime settings: they leave the run ids.
    assert {(s.train.fused_adam, s.train.checkpoint_interval) for s in fer_cpu} == {(True, 30.0)}
    assert [s.run_id for s in fer_cpu] == [
        dataclasses.replace(s, train=dataclasses.replace(s.train, fused_adam=False, checkpoint_interval=0.0)).run_id
        for s in fer_cpu]


def test_dry_run_lists_every_run_and_trains_nothing(cli, tmp_path):
    result = cli("sweep", "--methods", "standard,cct", "--noise", "0,0.4", "--seeds", "1", "--dry-run",
                 "--runs-dir", str(tmp_path / "runs"), *TINY)
    assert result.code == 0, result.err
    assert "4 runs: 0 done, 0 interrupted, 0 running elsewhere, 0 failed, 4 to do" in result.err
    assert result.out.count("todo") == 4 and not (tmp_path / "runs").exists()


def _write_status(run: Path, state: str, **extra) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "status.json").write_text(json.dumps({"state": state, "updated": 0, **extra}))


def test_states_come_from_the_files_and_the_lock(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.state().state == "todo"
    _write_status(run.path, "running", epoch=2, epochs=5)
    assert run.state().state == "interrupted"  # "running" but nobody holds the lock: the process died
    other = RunDir(run.path)
    other.lock()  # another holder of the lock: a live trainer
    try:
        assert run.state().state == "running"
    finally:
        other.unlock()
    _write_status(run.path, "failed", error="RunFailed: the loss became nan\nmore")
    assert (run.state().state, run.state().detail) == ("failed", "RunFailed: the loss became nan")
    summary = {"last": 1.0, "lastk": 1.0, "k": 1, "best": 1.0, "best_epoch": 1, "curve": [1.0]}
    complete = {"run_id": "abc", "method": "standard", "dataset": "synthfer", "seed": 1, "noise": {"rate": 0.0},
                "metrics": {"model": summary}}
    (run.path / "result.json").write_text(json.dumps(complete))
    assert run.state().state == "done"
    (run.path / "result.json").write_text(json.dumps({**complete, "seed": "1"}))  # the wrong type: not done
    assert run.state().state == "failed"
    (run.path / "result.json").write_text('{"metrics": {}}')  # not a complete result: not done
    assert run.state().state == "failed"
    (run.path / "result.json").write_text('{"metr')  # torn or damaged: not done
    assert run.state().state == "failed"


def test_a_queued_run_is_to_do_until_it_starts_and_keeps_where_it_stopped(tmp_path):
    run = RunDir(tmp_path / "r")
    _write_status(run.path, "interrupted", phase="train", epoch=3, epochs=9, error="KeyboardInterrupt")
    run.mark_queued({"run_id": "abc"}, slurm_job="41_2")
    status = json.loads(run.file("status.json").read_text())
    assert (status["state"], status["epoch"], status["epochs"], status["slurm_job"]) == ("queued", 3, 9, "41_2")
    assert (run.state().state, run.state().detail) == ("todo", "queued as SLURM job 41_2, not started")
    other = RunDir(run.path)
    other.lock()  # its job started in the meantime: "queued" must not hide a live run
    try:
        assert run.state().state == "running"
        run.mark_queued({"run_id": "abc"})
        assert json.loads(run.file("status.json").read_text())["slurm_job"] == "41_2"  # left alone
    finally:
        other.unlock()


def test_status_counts_the_runs_a_sweep_has_queued_as_to_do(cli, tmp_path, monkeypatch):
    from nlbench.store import scan_store
    from nlbench.train.engine import Engine

    seen = []

    def first_run_stops_the_sweep(self, *args, **kwargs):
        seen.append(sorted(entry.state.state for entry in scan_store(tmp_path)[0]))
        raise KeyboardInterrupt

    monkeypatch.setattr(Engine, "execute", first_run_stops_the_sweep)
    result = cli("sweep", "--methods", "standard,coteaching", "--seeds", "1,2", "--jobs", "1", "--runs-dir",
                 str(tmp_path), *TINY)
    assert result.code == 130
    assert seen == [["todo"] * 4]  # while the first run starts, the other three wait, counted
    status = cli("status", "--runs-dir", str(tmp_path))
    assert totals(status.out) == [0, 0, 0, 0, 4, 4]


@pytest.mark.slow
def test_sweep_trains_the_grid_then_skips_it_and_status_and_export_agree(cli, tmp_path):
    runs = tmp_path / "runs"
    args = ["sweep", "--methods", "standard", "--noise", "0,0.4", "--seeds", "1,2", "--epochs", "1",
            "--jobs", "2", "--runs-dir", str(runs), *TINY]
    first = cli(*args)
    assert first.code == 0, first.err
    assert "trained 4" in first.err and "failed 0" in first.err
    # Not a terminal: one line per epoch of every run, named, from the two workers; one per outcome.
    for noise in ("0", "0.4"):
        for seed in (1, 2):
            assert f"standard synthfer {noise} s{seed} [train] epoch 1/1 loss=" in first.err
    assert "[4/4] done standard synthfer" in first.err
    assert "standard" in first.out and "±" in first.out  # the comparison table of the grid
    again = cli(*args)
    assert again.code == 0 and "4 done" in again.err and "trained 0, already done 4" in again.err
    status = cli("status", "--runs-dir", str(runs))
    assert status.code == 0 and "all" in status.out
    assert totals(status.out) == [4, 0, 0, 0, 0, 4]
    export = cli("export", "--runs-dir", str(runs))
    rows = list(csv.DictReader(io.StringIO(export.out)))
    assert len(rows) == 4 and {r["seed"] for r in rows} == {"1", "2"}
    assert all(float(r["model.last"]) >= 0 for r in rows) and "cost.seconds" in rows[0]
    jsonl = cli("export", "--format", "jsonl", "--runs-dir", str(runs))
    assert len(jsonl.out.splitlines()) == 4
    parquet = cli("export", "--format", "parquet", "--runs-dir", str(runs))
    assert parquet.code == 2


def test_status_reports_failed_runs_and_exits_1(cli, tmp_path):
    runs = tmp_path / "runs"
    specs = expand(SweepRequest(methods=["standard"], seeds=[1, 2], sets=TINY_SETS), Config(), get_registry())
    from nlbench.store import run_dir_name

    for spec, state in zip(specs, ("failed", "running")):
        folder = runs / run_dir_name(spec)
        _write_status(folder, state, error="RunFailed: the loss became nan in phase train, epoch 2, batch 3")
        (folder / "spec.json").write_text(json.dumps(spec.to_json()))
    result = cli("status", "--runs-dir", str(runs), "--failed")
    assert result.code == 1
    assert "the loss became nan" in result.out and "interrupted" in result.out


def test_a_run_trained_elsewhere_is_reported_and_the_sweep_goes_on(cli, tmp_path):
    runs = tmp_path / "runs"
    [spec] = expand(SweepRequest(methods=["standard"], seeds=[1], sets=TINY_SETS, epochs=1), Config(), get_registry())
    from nlbench.store import run_dir_name

    holder = RunDir(runs / run_dir_name(spec))
    holder.lock()
    try:
        result = cli("sweep", "--methods", "standard", "--seeds", "1,2", "--epochs", "1", "--runs-dir", str(runs),
                     "--no-table", *TINY)
    finally:
        holder.unlock()
    assert result.code == 0, result.err
    assert "locked" in result.err and "being trained elsewhere 1" in result.err and "trained 1" in result.err


def test_threads_are_split_between_workers():
    from nlbench.executors import threads_per_job

    assert threads_per_job(1, cores=16) == 16 and threads_per_job(4, cores=16) == 4
    assert threads_per_job(3, cores=2) == 1


@pytest.mark.slow
def test_submitit_local_runs_the_cluster_code_path(cli, tmp_path):
    pytest.importorskip("submitit")
    runs = tmp_path / "runs"
    result = cli("sweep", "--executor", "submitit-local", "--jobs", "2", "--methods", "standard", "--seeds", "1,2",
                 "--epochs", "1", "--runs-dir", str(runs), "--no-table", *TINY)
    assert result.code == 0, result.err
    assert "trained 2" in result.err
    assert len([p for p in run_dirs(runs) if (p / "result.json").is_file()]) == 2
    assert list((runs / ".submitit").rglob("*_log.out"))  # one log per job


def test_unknown_executor_is_a_usage_error(cli):
    result = cli("sweep", "--executor", "pbs", "--dry-run")
    assert result.code == 2 and "unknown executor 'pbs'" in result.err and "submitit-local" in result.err



def test_a_filesystem_without_locks_is_reported_as_such(tmp_path, monkeypatch):
    import errno

    from nlbench import store

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(store.fcntl, "flock", no_locks)
    with pytest.raises(UsageError, match="does not support file locks") as info:
        RunDir(tmp_path / "run").lock()
    assert not isinstance(info.value, store.RunLocked)  # not mistaken for "trained by another process"


@pytest.mark.slow
def test_sigterm_stops_the_workers_and_leaves_the_runs_resumable(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    runs = tmp_path / "runs"
    args = [sys.executable, "-P", "-m", "nlbench", "sweep", "--methods", "standard", "--seeds", "1,2", "--epochs", "40",
            "--jobs", "2", "--runs-dir", str(runs), "--no-table", "--device", "cpu", *TINY]
    env = {**os.environ, "NLBENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}
    sweep = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until both runs have stored an epoch
        epochs = [p for p in runs.rglob("metrics.jsonl") if p.read_text().strip()]
        if len(epochs) == 2:
            break
        time.sleep(0.5)
    sweep.send_signal(signal.SIGTERM)
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, err[-2000:]
    assert "resume" in err
    time.sleep(1)
    statuses = [json.loads(p.read_text()) for p in runs.rglob("status.json")]
    assert [s["state"] for s in statuses] == ["interrupted", "interrupted"], statuses
    for status in statuses:  # the workers that trained them are gone
        with pytest.raises(ProcessLookupError):
            os.kill(status["pid"], 0)


def test_method_groups_expand_in_table_order_each_method_once(cli, tmp_path):
    from nlbench.catalogue import MODERN_METHODS, PAPER_METHODS
    from nlbench.sweep.grid import expand_methods

    assert expand_methods(["all+modern"]) == [*PAPER_METHODS, *MODERN_METHODS]
    assert expand_methods(["modern"]) == ["eac", "rul"]
    assert expand_methods(["standard+fer2023"]) == ["standard", "lanet", "nla", "resup", "dmue"]
    registered = get_registry().methods
    assert all(name in registered for name in expand_methods(["all+modern+fer2023+lnl"]))
    assert expand_methods(["standard+modern", "eac", "cct"]) == ["standard", "eac", "rul", "cct"]
    with pytest.raises(UsageError, match="empty part"):
        expand_methods(["all+"])
    # The paper's grid with the modern methods added, from the command line: 9 methods x 1 cell.
    shipped = Path(__file__).resolve().parents[1] / "benchmark.toml"
    result = cli("sweep", "--preset", "table1", "--config", str(shipped), "--methods", "all+modern", "--datasets",
                 "synthfer", "--noise", "0.4", "--seeds", "1", "--dry-run", "--runs-dir", str(tmp_path / "runs"), *TINY)
    assert result.code == 0, result.err
    assert "9 runs" in result.err and " eac " in result.out and " rul " in result.out


def test_a_submitit_job_killed_for_time_resubmits_the_same_run():
    """submitit calls ``checkpoint`` before a timeout or preemption: it must requeue this run, unchanged."""
    submitit = pytest.importorskip("submitit")
    from nlbench.executors import ExecutorOptions, TrainTask

    options = ExecutorOptions(runs_dir="somewhere", keep_checkpoint=True)
    spec_json = {"run_id": "abc123", "method": "cct"}
    delayed = TrainTask(options).checkpoint(spec_json)
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    assert isinstance(delayed.function, TrainTask) and delayed.function.options == options
    assert delayed.args == (spec_json,) and not delayed.kwargs


@pytest.mark.parametrize("checkpoint", ["kept", "lost"])
def test_a_rerun_says_which_runs_resumed_at_which_epoch_and_which_restarted(cli, tmp_path, checkpoint):
    import nlbench
    from nlbench.plugins import get_registry

    class StopAfterTwoEpochs:
        @nlbench.hookimpl
        def on_epoch_end(self, run, record):
            if record["epoch"] == 1:
                raise KeyboardInterrupt

    sweep = ["sweep", "--methods", "standard", "--seeds", "1,2", "--epochs", "3", "--jobs", "1",
             "--runs-dir", str(tmp_path), *TINY]
    manager = get_registry().manager
    observer = StopAfterTwoEpochs()
    manager.register(observer)
    try:
        assert cli(*sweep).code == 130  # seed 1 stops after two epochs; seed 2 never starts
    finally:
        manager.unregister(observer)
    [first] = [run for run in run_dirs(tmp_path) if run.name.startswith("seed1")]
    if checkpoint == "lost":
        (first / "checkpoint.pt").unlink()
    again = cli(*sweep)
    assert again.code == 0, again.err
    if checkpoint == "kept":
        assert "(resumed at train epoch 3)" in again.err and "trained 2 (1 resumed from a checkpoint)" in again.err
    else:
        assert "(restarted (no checkpoint))" in again.err and "trained 2 (1 restarted without one)" in again.err
    # seed 2 was queued, never started: a first attempt, neither resumed nor restarted
    assert again.err.count("resumed at") + again.err.count("restarted (") == 1
