#!/usr/bin/env python3
"""Time the default ``nlbench run`` (cct on synthfer, every setting at its default) end to end.

The guard for "the CPU path must not get slower": it runs ``python -m nlbench run --device cpu``
in a subprocess from the repository root (so the repository's benchmark.toml applies), in a fresh
runs folder and cache, and prints the wall-clock seconds, the run's own seconds and its training
and evaluation split, read back from result.json and metrics.jsonl.

    python benchmarks/cpu_default_run.py                      # one timed run (takes minutes)
    python benchmarks/cpu_default_run.py --baseline 240       # exit 1 if more than 10 % slower
    python benchmarks/cpu_default_run.py --json out.json      # also write the figures

Run it on an otherwise idle machine: the figure is only comparable between runs on the same
machine under the same load. Extra arguments after ``--`` go to ``nlbench run`` unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/cpu_default_run.py",
        description="Time the default `nlbench run` (cct on synthfer, defaults) end to end in a subprocess.",
        epilog="Arguments after -- are passed to `nlbench run` (e.g. -- --epochs 1 for a shorter check).",
    )
    parser.add_argument("--device", default="cpu", help="device given to nlbench run [cpu]")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS for the run [unset: torch's default, one per core]; on a machine "
                             "shared with other jobs 1 thread is often much faster than the default")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs; the median is reported [1]")
    parser.add_argument("--baseline", type=float, default=None,
                        help="seconds of an earlier run on this machine; exit 1 if this one is slower by more "
                             "than --tolerance")
    parser.add_argument("--tolerance", type=float, default=0.10, help="allowed slowdown over --baseline [0.10]")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    parser.add_argument("--keep", default=None, help="keep the run folder here instead of a temporary one")
    parser.add_argument("extra", nargs="*", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def one_run(args: argparse.Namespace, work: Path) -> dict:
    runs, cache = work / "runs", work / "cache"
    env = dict(os.environ)
    env.pop("NLBENCH_CONFIG", None)  # the repository's benchmark.toml, nothing else
    env["NLBENCH_CACHE"] = str(cache)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    command = [sys.executable, "-P", "-m", "nlbench", "run", "--device", args.device, "--runs-dir", str(runs),
               "--cache-dir", str(cache), *args.extra]
    began = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"nlbench run failed with exit code {done.returncode}")
    results = sorted(runs.rglob("result.json"))
    if not results:
        raise SystemExit(f"no result.json under {runs}")
    result = json.loads(results[0].read_text())
    records = [json.loads(line) for line in (results[0].parent / "metrics.jsonl").read_text().splitlines() if line]
    eval_s = sum(r.get("eval_seconds", 0.0) for r in records)
    epoch_s = sum(r.get("seconds", 0.0) for r in records)
    per_phase: dict[str, float] = {}
    for r in records:
        per_phase[r["phase"]] = per_phase.get(r["phase"], 0.0) + r.get("seconds", 0.0)
    return {
        "wall_s": wall,
        "run_s": result["cost"]["seconds"],
        "epochs_s": epoch_s,
        "train_s": epoch_s - eval_s,
        "eval_s": eval_s,
        "startup_s": wall - epoch_s,
        "per_phase_s": per_phase,
        "train_images_per_s": result["cost"]["train_images_per_s"],
        "epochs": len(records),
        "method": result["method"],
        "dataset": result["dataset"],
        "device": result["environment"]["device"],
        "accuracy_last": result["metrics"]["model"]["last"],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = []
    for i in range(args.repeat):
        if args.keep:
            work = Path(args.keep) / f"run{i}"
            work.mkdir(parents=True, exist_ok=True)
            runs.append(one_run(args, work))
        else:
            with tempfile.TemporaryDirectory(prefix="nlbench-cpu-run-") as tmp:
                runs.append(one_run(args, Path(tmp)))
        r = runs[-1]
        print(f"run {i + 1}/{args.repeat}: {r['wall_s']:.1f} s wall ({r['startup_s']:.1f} s start-up and data, "
              f"{r['train_s']:.1f} s training, {r['eval_s']:.1f} s evaluation over {r['epochs']} epochs; "
              f"{r['train_images_per_s']:.0f} training img/s; last accuracy {r['accuracy_last']:.2f} %)", flush=True)
    walls = sorted(r["wall_s"] for r in runs)
    median = walls[len(walls) // 2]
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"default nlbench run ({runs[0]['method']} on {runs[0]['dataset']}, device {runs[0]['device']}): "
          f"{median:.1f} s (median of {len(runs)}); {os.cpu_count()} CPUs, load average now "
          f"{'/'.join(f'{x:.1f}' for x in load) if load else 'n/a'}")
    code = 0
    if args.baseline:
        limit = args.baseline * (1 + args.tolerance)
        verdict = "ok" if median <= limit else "SLOWER"
        print(f"baseline {args.baseline:.1f} s, limit {limit:.1f} s: {verdict}")
        code = 0 if median <= limit else 1
    if args.json:
        Path(args.json).write_text(json.dumps({
            "median_wall_s": median, "runs": runs, "cpus": os.cpu_count(), "load_average": load,
            "python": platform.python_version(), "machine": platform.machine(), "extra_args": args.extra,
            "threads": args.threads,
        }, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
