"""Smoke test of benchmarks/synthfer_testbed.py: it trains its three runs, prints curves and verdicts.

At this tiny size the criteria are not expected to hold; what is checked is that the script runs
the real engine, finds its runs again, prints one curve line per epoch and one verdict per check,
and that its exit status says whether every check passed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "synthfer_testbed.py"
TINY = ["--set", "datasets.synthfer.options.test_size=48", "--set", "datasets.synthfer.options.size=16",
        "--set", "train.image_size=16", "--set", "train.batch_size=32", "--set", "train.eval_batch_size=64"]


def test_testbed_runs_the_three_runs_and_reports(tmp_path):
    runs, out_json = tmp_path / "runs", tmp_path / "testbed.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, str(SCRIPT), "--runs-dir", str(runs), "--epochs", "2", "--train-size", "64",
            "--device", "cpu", "--jobs", "3", "--json", str(out_json), *TINY]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    outcome = json.loads(out_json.read_text())
    assert [(r["method"], r["noise"]) for r in outcome["runs"]] == [("standard", 0.0), ("standard", 0.4), ("cct", 0.4)]
    cct = outcome["runs"][2]["curve"]
    assert [(r["phase"], r["epoch"]) for r in cct] == [("train", 1), ("train", 2), ("distill", 1), ("distill", 2)]
    assert cct[0]["ensemble"] is not None and outcome["runs"][1]["curve"][0]["acc_noisy"] is not None
    assert len(outcome["checks"]) == 3
    verdicts = [line for line in done.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert len(verdicts) == 3
    assert done.returncode == (0 if all(c["ok"] for c in outcome["checks"]) else 1), done.stderr
    # --show reads the stored runs again without training.
    shown = subprocess.run([*args[:2], "--show", *args[2:]], capture_output=True, text=True, env=env, timeout=120)
    assert [line for line in shown.stdout.splitlines() if line.startswith(("PASS", "FAIL"))] == verdicts


def _load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("synthfer_testbed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(method, noise, seed, accs, fit):
    history = [{"phase": "train", "epoch": e, "test": {"model": a}, "train": {"acc_clean": 50.0, "acc_noisy": fit}}
               for e, a in enumerate(accs)]
    return {"method": method, "noise": noise, "seed": seed, "history": history, "path": f"/{method}{noise}"}


def test_methods_replace_cct_and_each_is_checked_against_standard(capsys):
    testbed = _load_script()
    args = testbed.parse_args(["--methods", "nla", "standard", "lanet", "nla", "--no-clean"])
    order = testbed.runs_of(args)
    # Standard at 40% always trains (it is what the others are checked against); duplicates are dropped.
    assert order == [("standard", 0.4), ("nla", 0.4), ("lanet", 0.4)]
    assert testbed.runs_of(testbed.parse_args([])) == [("standard", 0.0), ("standard", 0.4), ("cct", 0.4)]
    runs = [_run("lanet", 0.4, 1, [50.0, 60.0, 58.0], 30.0), _run("standard", 0.4, 1, [55.0, 62.0, 52.0], 90.0),
            _run("nla", 0.4, 1, [40.0, 45.0, 51.0], 20.0)]
    outcome = testbed.report(runs, order)
    assert [r["method"] for r in outcome["runs"]] == ["standard", "nla", "lanet"]
    assert [c["ok"] for c in outcome["checks"]] == [True, False, True]  # drop 10; nla 51 < 52; lanet 58 > 52
    assert "nla ends at 51.0%" in outcome["checks"][1]["text"]
    standard, nla, lanet = outcome["summary"]
    assert (standard["peak"], standard["peak_epoch"], standard["last"], standard["drop"]) == (62.0, 2, 52.0, 10.0)
    assert (lanet["peak_epoch"], lanet["drop"], lanet["fit_noisy"]) == (2, 2.0, 30.0)
    assert nla["drop"] == 0.0
    assert "lanet at 40%" in capsys.readouterr().out
