#!/usr/bin/env python3
"""How fast `nlbench status` and `nlbench table` answer on a large store (synthetic finished runs).

Writes N finished runs (spec.json, status.json, result.json in the layout the engine writes,
7 methods x 4 noise rates x datasets x seeds) into a temporary store, then times each command
in a fresh process, as a user would call it. Nothing is trained; the figures are printed, not
asserted.

    python benchmarks/store_scale.py               # 500 runs
    python benchmarks/store_scale.py --runs 2000
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nlbench.plugins import get_registry
from nlbench.spec import RunRequest, resolve_spec
from nlbench.spec.config import Config
from nlbench.store import RunDir, run_dir_name

METHODS = ("standard", "coteaching", "coteaching_plus", "jocor", "nct", "scn", "cct")


def write_store(root: Path, count: int) -> None:
    """``count`` finished runs of synthfer variants with plausible results."""
    registry = get_registry()
    cells = itertools.product(METHODS, (0.1, 0.2, 0.3, 0.4), range(1, 10_000))
    for index, (method, rate, seed) in zip(range(count), cells):
        spec = resolve_spec(RunRequest(method=method, noise=rate, seed=seed % 97 + 1,
                                       sets=[f"datasets.synthfer.options.seed={seed // 97}"]), Config(), registry)
        run = RunDir(root / run_dir_name(spec))
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_spec(spec.to_json())
        curve = [50 + (index % 7) + e for e in range(10)]
        summary = {"last": curve[-1], "lastk": sum(curve[-3:]) / 3, "k": 3, "best": max(curve), "best_epoch": 10,
                   "curve": curve}
        run.write_result({
            "run_id": spec.run_id, "method": method, "dataset": "synthfer", "dataset_version": "2",
            "dataset_options": dict(spec.data.options), "noise": {"rate": rate, "mode": "flip", "source": "injected",
                                                                  "realised_rate": rate},
            "seed": spec.seed, "hparams": dict(spec.hparams), "train": spec.identity()["train"],
            "metrics": {"model": summary, "members": {"train/model": summary}}, "cost": {"seconds": 1.0},
        })
        run.set_status("done", finished=time.time())


def timed(args: list[str]) -> float:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-P", "-m", "nlbench", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if done.returncode not in (0, 1):
        raise SystemExit(f"nlbench {' '.join(args)} failed: {done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500, help="finished runs in the store [500]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nlbench-store-") as folder:
        root = Path(folder) / "runs"
        began = time.perf_counter()
        write_store(root, args.runs)
        print(f"wrote {args.runs} finished runs in {time.perf_counter() - began:.1f} s")
        for command in (["status"], ["table"], ["table", "--format", "csv"], ["export"]):
            best = min(timed([*command, "--runs-dir", str(root)]) for _ in range(3))
            print(f"nlbench {' '.join(command):<20} {best:6.2f} s (best of 3, a fresh process each)")


if __name__ == "__main__":
    main()
