"""One measurement: the device, the data, every row in order of importance, the environment and the summary."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench import Bench
from cli import GROUPS
from data import host_memory_available, prepare_data
from lever_rows import compile_rows, cudagraph_row, lever_rows
from measure import run_row
from reference import reference_rows
from report import Report, print_summary

from nlbench.errors import UsageError
from nlbench.train.assemble import resolve_device

RESNET18_GMACS_224 = 1.82  # multiply-accumulates of one ResNet-18 forward at 224 px (= 3.64 GFLOP)


def environment(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    import timm
    import torchvision

    env: dict[str, Any] = {
        "argv": sys.argv[1:], "args": vars(args), "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "timm": timm.__version__, "numpy": np.__version__,
        "device": str(device), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "host": platform.node(), "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "host_memory_available_gib": (host_memory_available() or 0) / 2**30,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=props.total_memory / 2**30, sm_count=props.multi_processor_count,
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


def summarise(bench: Bench, report: Report) -> None:
    """Targets of issue 5, from the rows that ran (GPU figures only mean something on CUDA)."""
    cuda = bench.device.type == "cuda"
    method = bench.args.lever_method
    default = report.find(f"nlbench {method}/train")
    candidates = [r for r in report.rows if r.get("status") == "ok" and r.get("img_s") and r.get("method") == method
                  and r.get("phase") == "train" and not r["name"].startswith("affectnet")]
    best = max(candidates, key=lambda r: r["img_s"], default=None)
    evals = [r for r in report.rows if r["name"].startswith(f"eval {method}/train") and r.get("status") == "ok"]
    fastest_eval = min(evals, key=lambda r: r["eval_s"], default=None)
    s: dict[str, Any] = {
        "device_kind": "cuda" if cuda else "cpu",
        "probe_tflops": bench.probe_tflops,
        "reference_img_s": bench.ref_img_s,
        f"{method}_default_img_s": default and default.get("img_s"),
        f"{method}_best_row": best and best["name"],
        f"{method}_best_img_s": best and best.get("img_s"),
        f"{method}_best_x_ref": best and best.get("x_ref"),
        "fastest_eval_row": fastest_eval and fastest_eval["name"],
        "fastest_eval_s": fastest_eval and fastest_eval.get("eval_s"),
        "peak_gpu_gib": max((r["peak_gib"] for r in report.rows if r.get("peak_gib")), default=None),
        "flops_per_image_g": {k: v / 1e9 for k, v in bench.flops.items()},
        "brief_formula_gflops_per_image": {
            "note": "issue 5's estimate: 1.82 G (these are multiply-adds) x 3 (fwd+bwd) x networks",
            "cct/train": RESNET18_GMACS_224 * 3 * 3 * (bench.args.size / 224) ** 2,
        },
    }
    if cuda and best:
        s["target_6000_img_s"] = best["img_s"] >= 6000
        s["target_3.8x_ref"] = bool(best.get("x_ref") and best["x_ref"] >= 3.8)
    if cuda and fastest_eval:
        s["target_eval_under_1s"] = fastest_eval["eval_s"] < 1.0
    report.summary = s
    report.save()


def run(args: argparse.Namespace) -> int:
    """Measure every row the arguments ask for; the exit status."""
    try:
        device = resolve_device(args.device)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    groups = set(args.only or [g for g in GROUPS if g != "affectnet" or args.scale == "affectnet"])
    if args.scale == "affectnet":
        groups.add("affectnet")
    json_path = Path(args.json) if args.json else None
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)

    print(f"nlbench throughput: device {device}, batch {args.batch}, {args.size} px from {args.stored_px} px, "
          f"{args.images} training images, {args.steps} timed steps per row (+{args.warmup} warm-up)", flush=True)
    with tempfile.TemporaryDirectory(prefix="nlbench-bench-") as tmp:
        # Data first: the render pool forks, which must happen before CUDA is initialised.
        t0 = time.perf_counter()
        data = prepare_data(args, Path(tmp))
        report = Report(json_path, {}, args.time_budget)
        report.meta = environment(device, args)
        report.meta["data"] = data.notes
        print(f"data: {data.notes} ({time.perf_counter() - t0:.1f} s)", flush=True)
        bench = Bench(args, device, report, data)
        # Most wanted first, so a time budget drops the least important rows: the lever method's
        # rows, its levers and evaluation, compile, AffectNet scale, other methods, CUDA graphs.
        try:
            names = bench.method_names()
            if "probe" in groups:
                run_row(report, "probe matmul", bench.probe)
            if "reference" in groups:
                reference_rows(bench)
            if "methods" in groups:
                bench.method_rows(names[:1])
            if "levers" in groups:
                lever_rows(bench)
            if "eval" in groups:
                bench.eval_rows()
            if "levers" in groups:
                compile_rows(bench)
            if "affectnet" in groups:
                bench.affectnet_rows()
            if "methods" in groups:
                bench.method_rows(names[1:])
            if "levers" in groups and "cudagraphs" in args.levers:
                cudagraph_row(bench)
        except KeyboardInterrupt:
            report.add({"name": "interrupted", "status": "interrupted (time limit?): rows above are complete"})
        finally:
            summarise(bench, report)
            print_summary(report)
    return 0
