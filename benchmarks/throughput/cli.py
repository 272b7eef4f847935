"""The command line: options, their defaults (full and ``--quick``), and the rows and columns of ``--help``.

Needs neither torch nor nlbench, so ``--help`` and ``--show`` answer without the heavy imports.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

SUMMARY = "Training throughput of nlbench's real training path, side by side with a reference-style loop."
AFFECTNET_TRAIN = 287_651
LEVERS = ("foreach-adam", "loop-adam", "fewer-syncs", "cudnn-benchmark", "host-cache", "host-prefetch",
          "compile", "compile-all", "cudagraphs", "cpu-bf16", "cpu-bf16-nchw")
QUICK_LEVERS = ("fewer-syncs", "host-prefetch")  # --quick is CI's smoke run: the patched paths only
GROUPS = ("probe", "reference", "methods", "levers", "eval", "affectnet")


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/throughput",
        description=SUMMARY + (
            " Measures training images per second of nlbench's real training path (gather from the uint8"
            " cache, augmentation on the device, forward, loss, backward, optimiser) for every registered"
            " method, and in the same process the reference-style loop of the official repositories, so"
            " the ratio is measured on the same device. Also prints peak GPU memory, the measured bf16"
            " matmul rate and the share of it the training reaches. Evaluation is timed separately."),
        epilog="""\
rows (in the order they run; a --time-budget skips the last ones first):
  probe matmul                 dense matmul rate of the device (bf16 8192^3 on CUDA): the ceiling
  reference                    official-repository style loop: JPEG + PIL per sample, DataLoader workers,
                               torchvision CCT transforms, fp32, 3x ResNet-18 + CCT loss
  reference loader-only        its data pipeline alone (CPU ceiling)
  reference compute-only       its fp32 step on one resident batch (device ceiling)
  nlbench M/P                  engine defaults, method M, phase P (every registered method)
  lever foreach-adam           Adam(foreach) instead of fused
  lever loop-adam              train.fused_adam=false: torch's per-parameter Adam loop (CPU default)
  lever fewer-syncs            proposed: no host syncs inside a step
  lever cudnn-benchmark        torch.backends.cudnn.benchmark = True
  lever host-cache             uint8 cache on the host, the engine's per-step gather
  lever host-prefetch          proposed: host cache gathered by a thread into pinned buffers
  lever cpu-bf16               CPU: train.cpu_amp (bf16 autocast + channels_last)
  lever cpu-bf16-nchw          CPU: bf16 autocast, contiguous (NCHW) layout
  eval M/P bs=B host|device    one evaluation epoch; test set on the host (engine) or the GPU
  eval M/P bs=B host cpu-bf16  CPU: the same under train.cpu_amp
  lever compile                torch.compile of every network (compile time, recompiles)
  lever compile-all            compile + fewer-syncs + cudnn-benchmark
  affectnet S=.. build|device|host|host-prefetch   --scale affectnet: 287,651-image memmap
  lever cudagraphs             compile(mode=reduce-overhead) + fewer-syncs + cudnn-benchmark
columns:
  img/s        training (or evaluation) images per second
  x ref        img/s over the reference row of the same run
  time         ms per training step, or s per evaluation epoch
  peak GiB     peak GPU memory allocated during the row (the resident image cache included)
  TFLOP/s      counted training FLOPs per image (torch FlopCounterMode, 2 per multiply-add) x img/s
  % peak       TFLOP/s over the probe
  syncs/step   host synchronisations in one training step (torch.cuda.set_sync_debug_mode)
--json FILE keeps every row (rewritten after each row); --show FILE prints its table again.
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cuda or cpu [auto]")
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke run: 64 images at 16 px, batch 16, 2 steps per row (1 warm-up, 1 timed), "
                             "1 worker, 48 test images, 1 CPU thread, only the lever method and fewer rows (see "
                             "--methods, --levers, --affectnet-placements); --scale affectnet then uses 512 images "
                             "at 16 px")
    parser.add_argument("--images", type=int, default=None, help="training JPEGs to write [4096]")
    parser.add_argument("--stored-px", type=int, default=None, help="side of the JPEGs and of the uint8 cache [100]")
    parser.add_argument("--size", type=int, default=None, help="training image size (network input) [224]")
    parser.add_argument("--augmentation", choices=("cct", "none"), default="cct",
                        help="training augmentation of every row, the reference's torchvision transforms "
                             "included (none: resize + normalise, the fer-cpu protocol) [cct]")
    parser.add_argument("--reference-methods", type=_names, default=["cct"],
                        help="reference loops to run: cct (3 networks, CE + KL) and/or standard (1 network, "
                             "CE); a method's x ref is over its own reference, else over cct's [cct]")
    parser.add_argument("--batch", type=int, default=None, help="training batch size [256]")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per row [32]")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps before timing each row [6]")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader worker processes of the reference loop [min(8, CPUs)]")
    parser.add_argument("--methods", type=_names, default=None,
                        help="comma list of methods for the 'nlbench' rows [every registered method; with --quick: "
                             "the lever method]")
    parser.add_argument("--lever-method", default="cct", help="method the lever, eval and affectnet rows use [cct]")
    parser.add_argument("--levers", type=_names, default=None,
                        help=f"comma list of lever rows [{','.join(LEVERS)}; with --quick: {','.join(QUICK_LEVERS)}]")
    parser.add_argument("--only", type=_names, default=None,
                        help=f"comma list of row groups to run, of {','.join(GROUPS)} [all; affectnet only with "
                             "--scale affectnet]")
    parser.add_argument("--eval-images", type=int, default=None, help="test images of the eval rows [3000]")
    parser.add_argument("--eval-batches", type=_ints, default=None, help="eval batch sizes [512,1000,3000]")
    parser.add_argument("--eval-repeats", type=int, default=None, help="timed evaluation epochs per eval row [3]")
    parser.add_argument("--scale", choices=("none", "affectnet"), default="none",
                        help="affectnet: also train from an AffectNet-8-size synthetic memmap (287,651 images) "
                             "with the cache on the device and on the host [none]")
    parser.add_argument("--affectnet-sizes", type=_ints, default=None,
                        help="storage sizes S of the AffectNet memmap (287,651 x 3 x S x S bytes) [112,224]")
    parser.add_argument("--affectnet-images", type=int, default=None, help=f"images of that memmap [{AFFECTNET_TRAIN}]")
    parser.add_argument("--affectnet-placements", type=_names, default=None,
                        help="cache placements of the AffectNet rows [device,host,host-prefetch; with --quick: "
                             "device,host]")
    parser.add_argument("--affectnet-reserve-gib", type=float, default=24.0,
                        help="GPU memory kept free for training when the AffectNet cache goes on the GPU [24]")
    parser.add_argument("--scratch", default=None,
                        help="folder for the AffectNet memmap [/dev/shm if it has room, else the temp folder]")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend of the compile rows [inductor on CUDA, eager on the CPU]")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads [torch's default; 1 with --quick, which is faster on shared cores]")
    parser.add_argument("--time-budget", type=float, default=0.0,
                        help="seconds; rows that would start past the budget are reported as skipped [0 = none]")
    parser.add_argument("--json", default=None, help="write every row and the environment to this JSON file")
    parser.add_argument("--show", default=None, metavar="JSON", help="print the table of a saved JSON and exit")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults: dict[str, tuple[Any, Any]] = {
        "images": (64, 4096), "stored_px": (16, 100), "size": (16, 224), "batch": (16, 256), "steps": (1, 32),
        "warmup": (1, 6), "workers": (1, max(1, min(8, os.cpu_count() or 1))), "eval_images": (48, 3000),
        "eval_batches": ([48], [512, 1000, 3000]), "affectnet_sizes": ([16], [112, 224]),
        "affectnet_images": (512, AFFECTNET_TRAIN), "threads": (1, None),
        "eval_repeats": (1, 3), "levers": (list(QUICK_LEVERS), list(LEVERS)),
        "affectnet_placements": (["device", "host"], ["device", "host", "host-prefetch"])}
    for key, (small, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, small if quick else full)
    unknown = sorted(set(args.levers) - set(LEVERS))
    if unknown:
        parser.error(f"unknown lever {unknown[0]!r}; known: {', '.join(LEVERS)}")
    if sorted(set(args.affectnet_placements) - {"device", "host", "host-prefetch"}):
        parser.error("--affectnet-placements takes device, host and host-prefetch")
    if args.only is not None and sorted(set(args.only) - set(GROUPS)):
        parser.error(f"unknown group in --only; known: {', '.join(GROUPS)}")
    if sorted(set(args.reference_methods) - {"cct", "standard"}):
        parser.error("--reference-methods takes cct and standard")
    if args.quick and args.methods is None:
        args.methods = [args.lever_method]
    if args.images < args.batch:
        parser.error("--images must be at least --batch")
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    return args
