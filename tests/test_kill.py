"""kill -9 at different moments of a run: the next run of the same command finishes it exactly.

A real ``nlbench run`` process is killed with SIGKILL (no handler runs, nothing is flushed)
while it loads data, after its first epoch, inside the distillation phase and at the end; the
same command is then run again and must give the result of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY, read_result, run_dirs
from nlbench.store import RunDir

ARGS = ["run", "--method", "cct", "--epochs", "2", "--noise", "0.3", "--device", "cpu", *TINY,
        "--set", "methods.cct.networks=2", "--set", "methods.cct.distill_epochs=1"]


def _lines(root: Path) -> int:
    files = list(root.rglob("metrics.jsonl"))
    return len(files[0].read_text().splitlines()) if files else -1


def _kill_when(root: Path, ready, timeout: float = 240.0) -> bool:
    """Start the run in a process and SIGKILL it once ``ready(root)``; False if it finished first."""
    env = {**os.environ, "NLBENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}
    process = subprocess.Popen([sys.executable, "-P", "-m", "nlbench", *ARGS, "--runs-dir", str(root)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    began = time.monotonic()
    try:
        while process.poll() is None and time.monotonic() - began < timeout:
            if ready(root, time.monotonic() - began):
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
                return True
            time.sleep(0.02)
        return False
    finally:
        if process.poll() is None:
            process.kill()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The result of the same run, uninterrupted."""
    from nlbench.cli import main

    root = tmp_path_factory.mktemp("whole")
    try:
        main([*ARGS, "--runs-dir", str(root), "--quiet"])
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    return read_result(run_dirs(root)[0])


@pytest.mark.slow
@pytest.mark.parametrize("moment,ready", [
    ("while starting", lambda root, seconds: seconds > 1.0),
    ("after the first epoch", lambda root, seconds: _lines(root) >= 1),
    ("inside distillation", lambda root, seconds: _lines(root) >= 2),
    ("after the last epoch", lambda root, seconds: _lines(root) >= 3),
])
def test_a_run_killed_at_any_moment_finishes_exactly_when_run_again(cli, tmp_path, reference, moment, ready):
    root = tmp_path / "killed"
    killed = _kill_when(root, ready)
    assert killed, f"the run finished before it could be killed {moment}"
    for run in run_dirs(root):
        state = RunDir(run).state()
        assert state.state in ("interrupted", "done"), state  # never "running", never a torn result
        if state.state == "interrupted":
            assert not (run / "result.json").exists()
    again = cli(*ARGS, "--runs-dir", str(root))
    assert again.code == 0, again.err
    a, b = reference, read_result(run_dirs(root)[0])
    assert a["metrics"] == b["metrics"] and a["final"] == b["final"]
    lines = [json.loads(x) for x in (run_dirs(root)[0] / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["epoch"]) for r in lines] == [("train", 0), ("train", 1), ("distill", 0)]


def test_status_knows_the_epoch_total_before_the_first_epoch_ends(cli, tmp_path, monkeypatch):
    # `nlbench status` showed "epoch 0/?" until a run's first epoch ended: the phase's start says it.
    from nlbench.train import engine

    def stopped(self, epoch):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.EpochRunner, "start", stopped)
    result = cli("run", "--method", "standard", "--epochs", "7", "--runs-dir", str(tmp_path), *TINY)
    assert result.code == 130
    [run] = run_dirs(tmp_path)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "interrupted" and (status["phase"], status["epoch"], status["epochs"]) == ("train", 0, 7)
