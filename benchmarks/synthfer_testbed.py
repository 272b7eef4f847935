#!/usr/bin/env python3
"""Run the synthfer test bed and print its learning curves, checking the three criteria it must meet.

synthfer is only a useful stand-in for a FER dataset if label noise hurts on it the way it hurts on
real data. This script trains, through ``nlbench run`` (the real engine, nothing re-implemented):

* Standard on clean labels        -> its test accuracy must end clearly below 100 % (aim 80-95 %);
* Standard at 40 % flip noise     -> it must visibly memorise: test accuracy falls several points
                                     from its peak while its training accuracy on the noisy samples
                                     (against their wrong labels) rises;
* CCT at 40 % flip noise          -> it must hold up better than Standard at the end of training.

and prints one line per epoch per run (test accuracy of the deployable model and of CCT's
train-phase ensemble, training accuracy on clean / noisy samples), the verdict of each check and a
memorisation summary (peak, last epoch, drop, training accuracy on the noisy samples at the end).
It takes about 35 minutes on a 2-core CPU (three processes, one thread each); on a GPU a few.
``--methods`` puts other methods in CCT's place (each one checked against Standard the same way):
the test bed is where a method that needs facial landmarks (LA-Net) runs with real ones.

    python benchmarks/synthfer_testbed.py                  # the test bed (stored in ./testbed-runs)
    python benchmarks/synthfer_testbed.py --show           # print the curves of stored runs again
    python benchmarks/synthfer_testbed.py --seeds 1 2 3    # more seeds (the curves are per seed)
    python benchmarks/synthfer_testbed.py --set train.batch_size=64   # any setting, for every run
    python benchmarks/synthfer_testbed.py --methods lanet nla resup dmue --no-clean   # other methods

Runs are ordinary nlbench runs: ``nlbench table --runs-dir testbed-runs`` tabulates them, and an
interrupted test bed resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLEAN, NOISY = ("standard", 0.0), ("standard", 0.4)  # the two Standard runs every check compares with
NOISE = 0.4
CLEAN_RANGE = (80.0, 95.0)
MIN_DROP = 3.0  # points below the peak that count as "visibly memorises"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/synthfer_testbed.py", description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default="testbed-runs", help="where the runs are stored [testbed-runs]")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="run seeds [1]")
    parser.add_argument("--epochs", type=int, default=15, help="training epochs of every run [15]")
    parser.add_argument("--augmentation", default="none",
                        help="training augmentation [none]: with synthfer's own `cct` pipeline Standard at 40%% "
                             "noise had not begun to memorise after 24 epochs, far beyond a CPU budget")
    parser.add_argument("--train-size", type=int, default=1000, help="synthfer training faces [1000]")
    parser.add_argument("--methods", nargs="+", default=["cct"], metavar="METHOD",
                        help="methods trained at 40%% noise beside Standard and checked against it [cct]")
    parser.add_argument("--no-clean", dest="clean", action="store_false",
                        help="skip Standard on clean labels (the dataset's own check)")
    parser.add_argument("--device", default="auto", help="device given to nlbench run [auto]")
    parser.add_argument("--jobs", type=int, default=3, help="runs trained at once, one thread each on a CPU [3]")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra `nlbench run --set` for every run (repeatable), e.g. train.batch_size=64")
    parser.add_argument("--show", action="store_true", help="only print the curves of the stored runs")
    parser.add_argument("--json", default=None, help="also write the curves and verdicts to this file")
    args = parser.parse_args(argv)
    args.runs_dir = str(Path(args.runs_dir).resolve())  # the runs start in the repository root
    args.methods = list(dict.fromkeys(m for m in args.methods if m != "standard"))
    return args


def runs_of(args: argparse.Namespace) -> list[tuple[str, float]]:
    """(method, noise rate) of every test-bed run, in the order they are trained and printed."""
    return [*([CLEAN] if args.clean else []), NOISY, *((method, NOISE) for method in args.methods)]


def run_command(args: argparse.Namespace, method: str, noise: float, seed: int) -> list[str]:
    """The ``nlbench run`` command line of one test-bed run."""
    return [
        sys.executable, "-P", "-m", "nlbench", "run", "--quiet", "--method", method, "--dataset", "synthfer",
        "--noise", str(noise), "--seed", str(seed), "--epochs", str(args.epochs), "--device", args.device,
        "--runs-dir", args.runs_dir, "--set", f"datasets.synthfer.options.train_size={args.train_size}",
        "--set", f"train.augmentation={args.augmentation}",
        *(part for item in args.overrides for part in ("--set", item)),
    ]


def train_all(args: argparse.Namespace) -> None:
    """Train every run, at most ``--jobs`` at once; an identical finished run is skipped by nlbench."""
    env = dict(os.environ)
    if args.device != "cuda":
        env.setdefault("OMP_NUM_THREADS", "1")  # on a CPU, parallel one-thread runs beat one many-thread run
    queue = [run_command(args, m, n, s) for s in args.seeds for m, n in runs_of(args)]
    running: list[subprocess.Popen] = []
    failed = 0
    while queue or running:
        while queue and len(running) < args.jobs:
            cmd = queue.pop(0)
            print("started:", " ".join(cmd[2:]), flush=True)
            running.append(subprocess.Popen(cmd, cwd=ROOT, env=env))
        time.sleep(2)
        for proc in [p for p in running if p.poll() is not None]:
            running.remove(proc)
            failed += proc.returncode != 0
    if failed:
        raise SystemExit(f"{failed} run(s) failed; see the messages above")


def load_runs(args: argparse.Namespace) -> list[dict]:
    """Metrics of each finished test-bed run, matched by method, noise, seed, epochs and train size."""
    found = []
    for result_path in sorted(Path(args.runs_dir).glob("synthfer/*/*/*/result.json")):
        result = json.loads(result_path.read_text())
        key = (result["method"], result["noise"]["rate"], result["seed"])
        if key[:2] not in runs_of(args) or key[2] not in args.seeds:
            continue
        train, options = result["train"], result.get("dataset_options", {})
        if (train["epochs"], train["augmentation"], options.get("train_size")) != (args.epochs, args.augmentation,
                                                                               args.train_size):
            continue
        history = [json.loads(line) for line in (result_path.parent / "metrics.jsonl").read_text().splitlines() if line]
        found.append({"method": key[0], "noise": key[1], "seed": key[2], "history": history, "path": str(result_path.parent)})
    return found


def curves(run: dict) -> list[dict]:
    """Per-epoch figures of one run: test accuracy (model and, for CCT, ensemble) and training accuracy."""
    rows = []
    for record in run["history"]:
        test, train = record["test"], record["train"]
        rows.append({
            "phase": record["phase"], "epoch": record["epoch"] + 1, "model": test.get("model"),
            "ensemble": test.get("ensemble"), "acc_clean": train.get("acc_clean"),
            "acc_noisy": train.get("acc_noisy"),
        })
    return rows


def _fmt(value: float | None) -> str:
    return "    -" if value is None else f"{value:5.1f}"


def report(runs: list[dict], order: list[tuple[str, float]]) -> dict:
    """Print the curves, the checks and the memorisation summary; return them as a dict."""
    out: dict = {"runs": [], "checks": [], "summary": []}
    by_key = {}
    for run in sorted(runs, key=lambda r: (r["seed"], order.index((r["method"], r["noise"])))):
        rows = curves(run)
        by_key[(run["method"], run["noise"], run["seed"])] = rows
        out["runs"].append({k: run[k] for k in ("method", "noise", "seed", "path")} | {"curve": rows})
        print(f"\n{run['method']} at {run['noise']:.0%} noise, seed {run['seed']}  ({run['path']})")
        print("phase    epoch  test:model  ensemble | train acc: clean  noisy (vs wrong label)")
        for r in rows:
            print(f"{r['phase']:<8} {r['epoch']:>5}  {_fmt(r['model']):>10}  {_fmt(r['ensemble']):>8} |"
                  f" {_fmt(r['acc_clean']):>16}  {_fmt(r['acc_noisy'])}")
    seeds = sorted({k[2] for k in by_key})
    print()
    for seed in seeds:
        clean, noisy = by_key.get((*CLEAN, seed)), by_key.get((*NOISY, seed))
        if clean:
            last = clean[-1]["model"]
            out["checks"].append(_check(f"seed {seed}: clean Standard ends at {last:.1f}% (aim 80-95)",
                                        CLEAN_RANGE[0] <= last <= CLEAN_RANGE[1]))
        if noisy:
            accs = [r["model"] for r in noisy]
            peak = max(accs)
            where = accs.index(peak) + 1
            out["checks"].append(_check(
                f"seed {seed}: Standard at 40% peaks at {peak:.1f}% (epoch {where}) and ends at {accs[-1]:.1f}% "
                f"(drop {peak - accs[-1]:.1f} points, need >= {MIN_DROP:.0f}); training accuracy on noisy "
                f"samples {_fmt(noisy[0]['acc_noisy']).strip()} -> {_fmt(noisy[-1]['acc_noisy']).strip()}%",
                peak - accs[-1] >= MIN_DROP))
        for method, noise in order:
            other = by_key.get((method, noise, seed))
            if (method, noise) in (CLEAN, NOISY) or not (noisy and other):
                continue
            ensembles = [r["ensemble"] for r in other if r["ensemble"] is not None]
            teachers = f"; its networks' ensemble ended training at {ensembles[-1]:.1f}%" if ensembles else ""
            out["checks"].append(_check(
                f"seed {seed}: at 40% {method} ends at {other[-1]['model']:.1f}% (deployable model){teachers}, "
                f"Standard at {noisy[-1]['model']:.1f}%",
                other[-1]["model"] > noisy[-1]["model"]))
    out["summary"] = summary(by_key, order)
    return out


def summary(by_key: dict, order: list[tuple[str, float]]) -> list[dict]:
    """Print and return one memorisation line per run: peak (epoch), last epoch, drop, noisy-sample fit."""
    print("\nmemorisation (test accuracy of the deployable model, %; fit = training accuracy on the noisy")
    print("samples against their wrong labels at the end)")
    print(f"{'run':<22} {'seed':>4}  {'peak (epoch)':>12}  {'last':>5}  {'drop':>5}  {'fit':>5}")
    lines = []
    for (method, noise, seed), rows in sorted(by_key.items(), key=lambda kv: (order.index(kv[0][:2]), kv[0][2])):
        accs = [r["model"] for r in rows]
        peak = max(accs)
        line = {"method": method, "noise": noise, "seed": seed, "peak": peak, "peak_epoch": accs.index(peak) + 1,
                "last": accs[-1], "drop": peak - accs[-1], "fit_noisy": rows[-1]["acc_noisy"]}
        lines.append(line)
        name = f"{method} at {noise:.0%}"
        print(f"{name:<22} {seed:>4}  {peak:>6.1f} ({line['peak_epoch']:>2})  {accs[-1]:>5.1f}  {line['drop']:>5.1f}"
              f"  {_fmt(line['fit_noisy'])}")
    return lines


def _check(text: str, ok: bool) -> dict:
    print(("PASS  " if ok else "FAIL  ") + text)
    return {"text": text, "ok": ok}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.show:
        train_all(args)
    runs = load_runs(args)
    if not runs:
        print(f"no finished test-bed runs in {args.runs_dir} for these settings")
        return 1
    print()
    outcome = report(runs, runs_of(args))
    if args.json:
        Path(args.json).write_text(json.dumps(outcome, indent=1))
    return 0 if all(c["ok"] for c in outcome["checks"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
