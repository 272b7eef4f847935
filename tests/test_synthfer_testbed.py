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
