"""A finished run is never lost: a second process re-checks "done" under the lock, and ``--force``
retrains beside the finished run, replacing it only once the new result exists."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY, run_dirs
from nlbench.store import RunDir

ARGS = ["run", "--method", "standard", "--epochs", "2", "--noise", "0.3", "--device", "cpu", "-q", *TINY]


def digest(folder: Path) -> dict[str, str]:
    """Every file of a run folder (the lock left out) with the SHA-256 of its bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and p.name != ".lock"}


def finished(cli, root: Path, *extra: str) -> Path:
    out = cli(*ARGS, "--runs-dir", str(root), *extra)
    assert out.code == 0, out.err
    [run] = run_dirs(root)
    return run


def test_a_run_finished_by_another_process_meanwhile_is_not_trained_again(cli, tmp_path, monkeypatch):
    """Process B passes the "done" check, then A finishes the run before B holds the lock."""
    import nlbench.train.engine as engine_module

    root = tmp_path / "runs"
    real_assemble = engine_module.assemble
    finished_by_a: list[dict[str, str]] = []

    def assemble_while_a_finishes(*args, **kwargs):
        assembly = real_assemble(*args, **kwargs)
        if not finished_by_a:
            monkeypatch.setattr(engine_module, "assemble", real_assemble)
            finished_by_a.append(digest(finished(cli, root)))  # A: the whole run, start to finish
        return assembly

    monkeypatch.setattr(engine_module, "assemble", assemble_while_a_finishes)
    out = cli(*ARGS, "--runs-dir", str(root))  # B
    assert out.code == 0, out.err
    [run] = run_dirs(root)
    assert digest(run) == finished_by_a[0]  # metrics.jsonl not truncated, nothing trained again
    assert RunDir(run).state().state == "done"


def test_a_failed_force_leaves_the_finished_run_as_it_was(cli, tmp_path, monkeypatch):
    import nlbench.train.engine as engine_module

    root = tmp_path / "runs"
    run = finished(cli, root)
    before = digest(run)

    def broken(self, assembly, store):
        store.append_metrics({"phase": "train", "epoch": 0, "test": {"model": 1.0}})
        raise RuntimeError("the loss became nan")

    monkeypatch.setattr(engine_module.Engine, "_train", broken)
    out = cli(*ARGS, "--runs-dir", str(root), "--force")
    assert out.code == 1 and "the loss became nan" in out.err
    assert digest(run) == before and RunDir(run).state().state == "done"
    assert sorted(p.name for p in run.parent.iterdir()) == [run.name]  # the attempt's folder is gone


def test_a_successful_force_replaces_the_run_and_keeps_no_scratch(cli, tmp_path):
    root = tmp_path / "runs"
    run = finished(cli, root)
    (run / "marker").write_text("from the first attempt")
    assert cli(*ARGS, "--runs-dir", str(root), "--force").code == 0
    assert not (run / "marker").exists() and RunDir(run).state().state == "done"
    assert sorted(p.name for p in run.parent.iterdir()) == [run.name]


def test_a_swap_cut_between_its_renames_is_completed(tmp_path):
    parent = tmp_path / "synthfer" / "standard" / "noise0.30-flip"
    run = RunDir(parent / "seed1-abc")
    old, new = parent / ".seed1-abc.old", run.aside()
    old.mkdir(parents=True)
    (old / "spec.json").write_text("{}")
    new.path.mkdir()
    (new.path / "spec.json").write_text("{}")  # the new attempt never finished: the old folder comes back
    run.finish_interrupted_swap()
    assert run.path.is_dir() and not old.exists() and new.path.exists()


def test_scratch_folders_are_not_runs(cli, tmp_path):
    root = tmp_path / "runs"
    run = finished(cli, root)
    import shutil

    shutil.copytree(run, run.parent / f".{run.name}.force")  # a --force attempt killed at its end
    assert cli("status", "--runs-dir", str(root)).code == 0
    from nlbench.report.runs import read_runs
    from nlbench.store import scan_store

    assert len(read_runs(root).runs) == 1 and len(scan_store(root)[0]) == 1


@pytest.mark.slow
def test_force_killed_mid_retrain_leaves_the_finished_run_byte_identical(cli, tmp_path):
    root = tmp_path / "runs"
    run = finished(cli, root)
    before = digest(run)
    aside = run.parent / f".{run.name}.force"
    env = {**os.environ, "NLBENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}
    process = subprocess.Popen([sys.executable, "-P", "-m", "nlbench", *ARGS, "--runs-dir", str(root), "--force"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    began = time.monotonic()
    try:
        while process.poll() is None and time.monotonic() - began < 240:
            metrics = aside / "metrics.jsonl"
            if metrics.is_file() and metrics.read_text().count("\n") >= 1:  # one epoch into the retrain
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
                break
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL, "the retrain finished before it could be killed"
    assert digest(run) == before and RunDir(run).state().state == "done"
    table = cli("table", "--runs-dir", str(root), "--format", "csv")
    assert table.code == 0 and "standard" in table.out
    again = cli(*ARGS, "--runs-dir", str(root), "--force")  # a new --force starts afresh
    assert again.code == 0, again.err
    assert not aside.exists() and RunDir(run).state().state == "done"
    assert digest(run)["result.json"] != before["result.json"]  # retrained (another finish time)


def test_nan_predictions_fail_the_run_instead_of_becoming_a_result(cli, tmp_path, monkeypatch):
    import torch

    from nlbench.method import Method

    real = Method.predict_members

    def nan_scores(self, x, phase):
        members = real(self, x, phase)
        return {name: torch.full_like(value, float("nan")) for name, value in members.items()}

    monkeypatch.setattr(Method, "predict_members", nan_scores)
    root = tmp_path / "runs"
    out = cli(*ARGS, "--runs-dir", str(root))
    assert out.code == 1 and "non-finite scores (NaN or inf)" in out.err and "internal error" not in out.err
    [run] = run_dirs(root)
    assert not (run / "result.json").exists() and RunDir(run).state().state == "failed"


def test_a_result_copied_from_another_run_is_not_shown_as_this_runs(cli, tmp_path):
    import shutil

    root = tmp_path / "runs"
    first = finished(cli, root)
    assert cli(*ARGS, "--runs-dir", str(root), "--seed", "2").code == 0
    [second] = [r for r in run_dirs(root) if r != first]
    shutil.copy(first / "result.json", second / "result.json")
    shown = cli("show", str(second))
    assert shown.code == 0 and "is not this run's result" in " ".join(shown.out.split())
    assert RunDir(second).state().state != "done"
    table = cli("table", "--runs-dir", str(root), "--format", "csv")
    assert table.code == 0 and "skipped 1 damaged result file(s)" in table.err
    again = cli(*ARGS, "--runs-dir", str(root), "--seed", "2")
    assert again.code == 2 and "result.json is of run" in again.err
    assert cli(*ARGS, "--runs-dir", str(root), "--seed", "2", "--force").code == 0
    assert RunDir(second).state().state == "done"
