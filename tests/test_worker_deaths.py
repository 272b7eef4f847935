"""A sweep survives the death of one worker (the OOM killer's SIGKILL), and workers never outlive
a sweep killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY
from nlbench.store import RunDir

SWEEP = ["sweep", "--methods", "standard", "--noise", "0.3", "--seeds", "1,2,3", "--epochs", "8", "--jobs", "2",
         "--device", "cpu", *TINY]


def _statuses(root: Path) -> dict[Path, dict]:
    out = {}
    for path in root.rglob("status.json"):
        try:
            out[path.parent] = json.loads(path.read_text())
        except ValueError:
            continue
    return out


def _start(root: Path) -> subprocess.Popen:
    env = {**os.environ, "NLBENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.Popen([sys.executable, "-P", "-m", "nlbench", *SWEEP, "--runs-dir", str(root)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_training(root: Path, process: subprocess.Popen, timeout: float = 240) -> tuple[Path, dict]:
    began = time.monotonic()
    while time.monotonic() - began < timeout and process.poll() is None:
        for folder, status in _statuses(root).items():
            if status.get("state") == "running" and int(status.get("epoch") or 0) >= 1:
                return folder, status
        time.sleep(0.05)
    raise AssertionError("no run reached its first epoch")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower() and \
            " Z " not in Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False


@pytest.mark.slow
def test_one_killed_worker_costs_its_own_run_only(cli, tmp_path):
    root = tmp_path / "runs"
    process = _start(root)
    try:
        folder, status = _wait_for_training(root, process)
        os.kill(int(status["pid"]), signal.SIGKILL)
        out, err = process.communicate(timeout=400)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, err
    assert "internal error" not in err and "BrokenProcessPool" not in err
    assert "its worker process was killed (signal 9: perhaps out of memory)" in err
    states = {f: RunDir(f).state().state for f in _statuses(root)}
    assert states[folder] == "interrupted" and sorted(states.values()) == ["done", "done", "interrupted"]
    again = cli(*SWEEP, "--runs-dir", str(root))
    assert again.code == 0, again.err
    assert sorted(RunDir(f).state().state for f in _statuses(root)) == ["done"] * 3


@pytest.mark.slow
def test_workers_exit_when_the_sweep_is_killed(cli, tmp_path):
    root = tmp_path / "runs"
    process = _start(root)
    try:
        _wait_for_training(root, process)
        workers = {int(s["pid"]) for s in _statuses(root).values() if s.get("state") == "running"}
        process.kill()
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers), "workers outlived their sweep"
    assert all(RunDir(f).state().state in ("interrupted", "done", "todo") for f in _statuses(root))  # todo: queued
    again = cli(*SWEEP, "--runs-dir", str(root))
    assert again.code == 0, again.err


def _start_in_group(root: Path, seeds: str, sigint=signal.SIG_DFL) -> subprocess.Popen:
    """A sweep in a process group of its own, SIGINT at ``sigint`` (a shell's background job ignores it)."""
    env = {**os.environ, "NLBENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}
    command = [sys.executable, "-P", "-m", "nlbench", *SWEEP, "--seeds", seeds, "--runs-dir", str(root)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "sigint", "sigterm", "ctrl-c-ignored"])
def test_a_stopped_sweep_starts_no_new_run_and_exits_130_at_once(cli, tmp_path, how):
    # Ctrl-C in a terminal sends SIGINT to the whole process group (the sweep itself may ignore it:
    # a shell's background job does); `kill` sends SIGINT or SIGTERM to the sweep only.
    root = tmp_path / "runs"
    process = _start_in_group(root, "1,2,3,4,5", signal.SIG_IGN if how == "ctrl-c-ignored" else signal.SIG_DFL)
    try:
        _wait_for_training(root, process)
        if how.startswith("ctrl-c"):
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGINT if how == "sigint" else signal.SIGTERM)
        stopped = time.monotonic()
        out, err = process.communicate(timeout=120)
        took = time.monotonic() - stopped
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, err
    assert took < 20, f"the sweep took {took:.0f} s to stop"
    assert "run the same command again to resume" in err
    states = sorted(RunDir(f).state().state for f in _statuses(root))
    started = [state for state in states if state != "todo"]  # todo: queued, never started
    assert len(started) <= 2, f"a run started after the stop: {states}"  # only the two in flight
    assert "interrupted" in started and set(started) <= {"interrupted", "done"} and len(states) == 5
