#!/usr/bin/env python3
"""Training throughput of nlbench's real training path, side by side with a reference-style loop.

Every row is measured in one process on one device, so ratios compare like with like:

* ``probe matmul``: the dense matrix rate of the device (bf16 8192^3 on CUDA, fp32 on the CPU),
  the ceiling the training FLOP rate is compared with;
* ``reference ...``: the loop the official repositories write (PIL decode of JPEG files per sample
  in a torch DataLoader with worker processes, torchvision transforms of the CCT pipeline, fp32,
  three ResNet-18s and the CCT loss), plus its data-loader-only and compute-only ceilings;
* ``nlbench <method>/<phase>``: nlbench's training path, the engine's own ``EpochRunner`` (cache
  placement and gather, ``Augmenter.train``, ``method.train_step`` under ``ctx.autocast()``,
  ``StepMeter``) with the engine's defaults, for every registered method;
* ``lever ...``: one change at a time on the lever method (default cct): Adam implementation,
  host synchronisations, cuDNN autotuning, host vs device image cache, torch.compile, CUDA graphs;
* ``eval ...``: one evaluation epoch (``nlbench.evaluate.predict_split``) per batch size and placement;
* ``affectnet ...`` (``--scale affectnet``): AffectNet-8 size (287,651 images) as a synthetic uint8
  memmap at the given storage sizes, with the cache on the GPU and on the host.

Examples (from the repository root)::

    python benchmarks/throughput.py                          # the GPU measurement, full sizes
    python benchmarks/throughput.py --scale affectnet        # ... plus the AffectNet-scale rows
    python benchmarks/throughput.py --device cpu --quick     # seconds-long CPU smoke run (CI)
    python benchmarks/throughput.py --show out.json          # print the table of a saved run

See benchmarks/README.md for what each row and column means.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import logging
import math
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
import types
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if (ROOT / "nlbench").is_dir() and str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # measure this checkout's nlbench, installed or not

AFFECTNET_TRAIN = 287_651
AFFECTNET_CLASSES = 8
RESNET18_GMACS_224 = 1.82  # multiply-accumulates of one ResNet-18 forward at 224 px (= 3.64 GFLOP)
LEVERS = ("foreach-adam", "fewer-syncs", "cudnn-benchmark", "host-cache", "host-prefetch",
          "compile", "compile-all", "cudagraphs")
QUICK_LEVERS = ("fewer-syncs", "host-prefetch")  # --quick is CI's smoke run: the patched paths only
GROUPS = ("probe", "reference", "methods", "levers", "eval", "affectnet")
SEED = 1


# ------------------------------------------------------------------------------------------------
# Rows, the table and the JSON
# ------------------------------------------------------------------------------------------------
def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, (int, float)) and abs(value) < 10 and spec in (",.0f", ".1f"):
        spec = ".2f" if abs(value) >= 0.01 or value == 0 else ".2g"  # small CPU figures stay readable
    return format(value, spec)


def _time_cell(row: dict[str, Any]) -> str:
    if row.get("eval_s") is not None:
        return f"{row['eval_s']:.3f} s"
    if row.get("step_ms") is not None:
        return f"{row['step_ms']:.1f} ms"
    return "-"


def format_table(rows: list[dict[str, Any]]) -> str:
    """The results as a fixed-width text table (also what ``--show`` prints)."""
    header = ("row", "img/s", "x ref", "time", "peak GiB", "TFLOP/s", "% peak", "syncs/step", "notes")
    lines = []
    for row in rows:
        status = row.get("status", "ok")
        notes = row.get("notes", "")
        if status != "ok":
            notes = f"{status}" + (f"; {notes}" if notes else "")
        lines.append((
            row["name"], _fmt(row.get("img_s"), ",.0f"), _fmt(row.get("x_ref"), ".2f"), _time_cell(row),
            _fmt(row.get("peak_gib"), ".2f"), _fmt(row.get("tflops"), ".1f"), _fmt(row.get("pct_peak"), ".1f"),
            _fmt(row.get("syncs_per_step"), "d") if isinstance(row.get("syncs_per_step"), int) else "-",
            notes,
        ))
    widths = [max(len(header[i]), *(len(r[i]) for r in lines)) if lines else len(header[i]) for i in range(8)]

    def line(cells: tuple[str, ...]) -> str:
        pairs = zip(cells[:8], widths, strict=True)
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(pairs))

    out = [line(header) + "  notes", "-" * (sum(widths) + 2 * 8 + 5)]
    out.extend(line(r) + "  " + r[8] for r in lines)
    return "\n".join(out)


class Report:
    """Collects rows, prints each as it lands, and rewrites the JSON after every row."""

    def __init__(self, path: Path | None, meta: dict[str, Any], budget_s: float) -> None:
        self.path = path
        self.meta = meta
        self.rows: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        self.budget_s = budget_s
        self.summary: dict[str, Any] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return math.inf if self.budget_s <= 0 else self.budget_s - self.elapsed()

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        row.setdefault("status", "ok")
        row["at_s"] = round(self.elapsed(), 1)
        self.rows.append(row)
        print(f"[{row['at_s']:7.1f}s] " + format_table([row]).splitlines()[-1], flush=True)
        self.save()
        return row

    def find(self, name: str) -> dict[str, Any] | None:
        for row in self.rows:
            if row["name"] == name and row.get("status") == "ok":
                return row
        return None

    def save(self) -> None:
        if self.path is None:
            return
        data = {"meta": self.meta, "rows": self.rows, "summary": self.summary,
                "elapsed_s": round(self.elapsed(), 1)}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, default=str))
        os.replace(tmp, self.path)


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/throughput.py",
        description=__doc__.split("\n\n")[0] + (
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
  lever fewer-syncs            proposed: no host syncs inside a step
  lever cudnn-benchmark        torch.backends.cudnn.benchmark = True
  lever host-cache             uint8 cache on the host, the engine's per-step gather
  lever host-prefetch          proposed: host cache gathered by a thread into pinned buffers
  eval M/P bs=B host|device    one evaluation epoch; test set on the host (engine) or the GPU
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
    if args.quick and args.methods is None:
        args.methods = [args.lever_method]
    if args.images < args.batch:
        parser.error("--images must be at least --batch")
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    return args



def _light_main() -> None:
    """--help and --show need neither torch nor nlbench: answer them before the heavy imports."""
    argv = sys.argv[1:]
    if any(a in ("-h", "--help") for a in argv):
        parse_args(argv)  # prints the help and exits
    if "--show" in argv or any(a.startswith("--show=") for a in argv):
        sys.exit(show(parse_args(argv).show))


def show(path: str) -> int:
    """Print the table of a JSON written by --json."""
    data = json.loads(Path(path).read_text())
    meta = data.get("meta", {})
    report = Report(None, meta, 0)
    report.rows, report.summary = data.get("rows", []), data.get("summary", {})
    print(f"{path}: {meta.get('gpu') or meta.get('device')}, torch {meta.get('torch')}, {data.get('elapsed_s')} s")
    print_summary(report)
    return 0


def print_summary(report: Report) -> None:
    print()
    print(format_table(report.rows))
    s = report.summary
    if s:
        print()
        for key, value in s.items():
            if isinstance(value, float):
                value = f"{value:,.2f}"
            print(f"{key}: {value}")


if __name__ == "__main__":
    _light_main()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from nlbench.augment import Augmenter  # noqa: E402
from nlbench.backbone import BackboneFactory, create_backbone  # noqa: E402
from nlbench.cache import load_split  # noqa: E402
from nlbench.config import TrainSettings  # noqa: E402
from nlbench.context import Context, LabelStore  # noqa: E402
from nlbench.dataset import IMAGENET_MEAN, IMAGENET_STD, Dataset, SampleTable  # noqa: E402
from nlbench.evaluate import accuracies, predict_split  # noqa: E402
from nlbench.method import Method, Phase  # noqa: E402
from nlbench.noise import inject_noise  # noqa: E402
from nlbench.plugins import get_registry  # noqa: E402
from nlbench.synthface import CLASS_NAMES, render_faces, sample_labels  # noqa: E402
from nlbench.trainer import DEVICE_CACHE_SHARE, EpochRunner, ImageCache, StepMeter  # noqa: E402


def run_row(report: Report, name: str, fn: Callable[[], dict[str, Any]], need_s: float = 0.0) -> dict[str, Any]:
    """Run one row: skipped when the time budget cannot hold it, failed rows never stop the others."""
    if report.left() < need_s:
        return report.add({"name": name, "status": f"skipped: time budget ({report.left():.0f} s left, "
                                                   f"needs ~{need_s:.0f} s)"})
    began = time.perf_counter()
    try:
        row = fn()
    except KeyboardInterrupt:
        raise
    except Exception as err:  # one failing row must not cost the rest of a one-shot GPU run
        traceback.print_exc()
        row = {"status": f"failed: {type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"}
    finally:
        release_memory()
    row = {"name": name, **row}
    row["row_s"] = round(time.perf_counter() - began, 1)
    return report.add(row)


# ------------------------------------------------------------------------------------------------
# Device helpers
# ------------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None


def matmul_probe(device: torch.device, quick: bool) -> dict[str, Any]:
    """Dense matmul rate on random data: bf16 8192^3 on CUDA, fp32 on the CPU."""
    if device.type == "cuda":
        n, dtype, reps = 8192, torch.bfloat16, 20
    else:
        n, dtype, reps = (256 if quick else 1024), torch.float32, (3 if quick else 5)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    for _ in range(3):
        c = a @ b
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        c = a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":  # events: one long timed run of back-to-back products
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            c = a @ b
        stop.record()
        stop.synchronize()
        per = start.elapsed_time(stop) / 1e3 / reps
    else:
        per = float(np.median(times))
    del c
    tflops = 2 * n**3 / per / 1e12
    kind = f"{'bf16' if dtype == torch.bfloat16 else 'fp32'} {n}^3"
    return {"tflops": tflops, "notes": f"{kind} matmul on random data: the ceiling of the '% peak' column",
            "probe_dtype": str(dtype), "probe_n": n}


# ------------------------------------------------------------------------------------------------
# Data: synthetic JPEGs, the decode-once cache, the AffectNet-scale memmap
# ------------------------------------------------------------------------------------------------
def _render_chunk(args: tuple[np.ndarray, int, int, str | None, int]) -> np.ndarray | None:
    labels, size, seed, folder, first = args
    pixels = render_faces(labels, size, seed)
    if folder is None:
        return pixels
    for j, img in enumerate(pixels):
        Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))).save(
            os.path.join(folder, f"{first + j:06d}.jpg"), quality=90)
    return None


def render_many(labels: np.ndarray, size: int, seed: int, folder: Path | None, workers: int) -> np.ndarray | None:
    """Render faces (and write them as JPEGs when ``folder`` is given) in parallel processes."""
    chunk = 128
    jobs = [(labels[i:i + chunk], size, seed * 100_000 + i, str(folder) if folder else None, i)
            for i in range(0, len(labels), chunk)]
    if workers > 1 and len(jobs) > 1:
        ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            parts = list(pool.map(_render_chunk, jobs))
    else:
        parts = [_render_chunk(job) for job in jobs]
    return None if folder is not None else np.concatenate(parts)


class JpegFolder(Dataset):
    """The benchmark's JPEG files as a dataset plugin, so nlbench's own decode-once cache reads them."""

    name = "bench_jpeg"
    class_names = CLASS_NAMES
    needs_root = True

    def __init__(self, root: Path, labels: np.ndarray, storage_size: int) -> None:
        super().__init__(root, {})
        self.labels = labels
        self.storage_size = storage_size

    def table(self, split: str) -> SampleTable:
        refs = [str(self.root / f"{i:06d}.jpg") for i in range(len(self.labels))]
        return SampleTable(refs=refs, labels=self.labels)

    def read_image(self, ref: Any) -> np.ndarray:
        with Image.open(ref) as im:
            return np.asarray(im.convert("RGB"))

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "n": len(self.labels)}


@dataclasses.dataclass
class BenchData:
    jpeg_dir: Path
    paths: list[str]
    clean: np.ndarray
    noisy: np.ndarray
    train_u8: torch.Tensor  # N x 3 x S x S uint8, CPU (nlbench's cache, decoded from the JPEGs)
    test_u8: torch.Tensor
    test_labels: np.ndarray
    notes: str


def prepare_data(args: argparse.Namespace, scratch: Path) -> BenchData:
    workers = max(1, min(16, os.cpu_count() or 1))
    jpeg_dir = scratch / "jpeg"
    jpeg_dir.mkdir(parents=True, exist_ok=True)
    clean = sample_labels(args.images, seed=SEED)
    t0 = time.perf_counter()
    render_many(clean, args.stored_px, SEED, jpeg_dir, workers)
    rendered = time.perf_counter() - t0
    t0 = time.perf_counter()
    dataset = JpegFolder(jpeg_dir, clean, args.stored_px)
    train = load_split(dataset, "train", scratch / "cache")  # nlbench's decode-once cache
    decoded = time.perf_counter() - t0
    test_labels = sample_labels(args.eval_images, seed=SEED + 1)
    test = render_many(test_labels, args.stored_px, SEED + 1, None, workers)
    noisy = inject_noise(clean, len(CLASS_NAMES), 0.2, "flip", dataset="synthfer", seed=SEED).labels
    jpeg_bytes = sum(p.stat().st_size for p in jpeg_dir.glob("*.jpg"))
    notes = (f"{args.images} JPEGs at {args.stored_px} px ({jpeg_bytes / 2**20:.0f} MiB) rendered+written in "
             f"{rendered:.1f} s; nlbench cache decoded in {decoded:.1f} s")
    return BenchData(jpeg_dir, list(dataset.table("train").refs), clean, noisy, train.images,
                     torch.from_numpy(np.ascontiguousarray(test)), test_labels, notes)


def pick_scratch(nbytes: int, preferred: str | None) -> Path | None:
    """A folder with room for ``nbytes`` (+ margin): --scratch, else /dev/shm, else the temp dir."""
    margin = min(4 * 2**30, nbytes // 10 + 64 * 2**20)
    candidates = [Path(preferred)] if preferred else [Path("/dev/shm"), Path(tempfile.gettempdir())]
    for folder in candidates:
        try:
            if folder.is_dir() and os.access(folder, os.W_OK) and shutil.disk_usage(folder).free > nbytes + margin:
                return folder
        except OSError:
            continue
    return None


def host_memory_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def build_memmap(path: Path | None, n: int, size: int, unique: int = 64) -> tuple[torch.Tensor, float]:
    """An n x 3 x S x S uint8 memmap filled by tiling a few rendered faces (fast; no per-image render).

    ``path`` None: the same array in anonymous host memory.
    """
    t0 = time.perf_counter()
    faces = render_faces(sample_labels(unique, seed=SEED + 7), size, SEED + 7)
    rows = max(unique, (256 * 2**20) // faces[0].nbytes // unique * unique)  # ~256 MiB blocks
    block = np.tile(faces, (math.ceil(rows / unique), 1, 1, 1))[:rows]
    shape = (n, 3, size, size)
    out = np.memmap(path, dtype=np.uint8, mode="w+", shape=shape) if path is not None else np.empty(shape, np.uint8)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        out[start:stop] = block[: stop - start]
    if path is None:
        return torch.from_numpy(out), time.perf_counter() - t0
    del out
    # Reopened the way nlbench.cache.load_split maps its cache: copy-on-write, wrapped by torch.
    mapped = np.memmap(path, dtype=np.uint8, mode="c", shape=shape)
    return torch.from_numpy(np.asarray(mapped)), time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------
# nlbench's training path, from the engine's own pieces
# ------------------------------------------------------------------------------------------------
class PrefetchGather:
    """Proposed host-cache path: a thread gathers batch k+1 into pinned buffers while the GPU runs k.

    Indices come from the CPU copy of the epoch order (no device->host sync), the gather writes into
    preallocated pinned memory (no per-batch pin), and the copy to the device is asynchronous.
    """

    name = "prefetch"

    def __init__(self, images: torch.Tensor, device: torch.device, batch: int, depth: int = 2) -> None:
        self.images, self.device, self.depth = images, device, depth
        pin = device.type == "cuda"
        shape = (batch, *images.shape[1:])
        self.slots = [torch.empty(shape, dtype=images.dtype, pin_memory=pin) for _ in range(depth)]
        self.events = [torch.cuda.Event() if pin else None for _ in range(depth)]
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self.futures: dict[int, Any] = {}
        self.order = torch.empty(0, dtype=torch.long)
        self.steps = 0
        self.batch = batch

    def _fill(self, step: int) -> tuple[int, int]:
        slot = step % self.depth
        event = self.events[slot]
        if event is not None:
            while not event.query():  # the previous copy out of this slot must be done; polling,
                time.sleep(0.0002)  # unlike synchronize(), is no sync the sync-debug count would flag
        idx = self.order[step * self.batch : (step + 1) * self.batch]
        torch.index_select(self.images, 0, idx, out=self.slots[slot][: len(idx)])
        return slot, len(idx)

    def start_epoch(self, order_cpu: torch.Tensor, steps: int, batch: int) -> None:
        for future in self.futures.values():
            future.result()
        self.order, self.steps, self.futures = order_cpu, steps, {}
        for step in range(min(self.depth, steps)):
            self.futures[step] = self.pool.submit(self._fill, step)

    def get(self, step: int, index: torch.Tensor) -> torch.Tensor:
        slot, count = self.futures.pop(step).result()
        if self.device.type == "cuda":
            x = self.slots[slot][:count].to(self.device, non_blocking=True)
            self.events[slot].record()
        else:
            x = self.slots[slot][:count].clone()
        if step + self.depth < self.steps:
            self.futures[step + self.depth] = self.pool.submit(self._fill, step + self.depth)
        return x

    def close(self) -> None:
        for future in self.futures.values():
            future.result()
        self.pool.shutdown(wait=True)


class EngineLoop:
    """The engine's own :class:`~nlbench.trainer.EpochRunner`, run for a number of steps across epochs.

    Timing rows ask for N steps, not whole epochs; this only starts and finishes the runner's
    epochs at their boundaries (``finish`` is the engine's one synchronisation per epoch).
    """

    def __init__(self, runner: EpochRunner) -> None:
        self.runner = runner
        self.device, self.settings = runner.device, runner.settings
        self.epoch = -1
        self.open = False

    def at_boundary(self) -> bool:
        return not self.open or self.runner.step_index >= self.runner.steps

    def end_epoch(self) -> dict[str, Any]:
        if not self.open:
            return {}
        self.open = False
        return self.runner.finish()

    def run(self, count: int) -> None:
        for _ in range(count):
            if self.at_boundary():
                self.end_epoch()
                self.epoch += 1
                self.runner.start(self.epoch)
                self.open = True
            self.runner.step()


def build_method(
    method_name: str, settings: TrainSettings, device: torch.device, noisy: np.ndarray, clean: np.ndarray,
    num_classes: int, registry: Any,
) -> tuple[Method, Context, LabelStore, torch.Tensor]:
    """A method built on a Context exactly as Engine._train builds it."""
    cls = registry.method(method_name)
    hp = cls.HParams()
    cls.validate(hp, {"epochs": settings.epochs, "noise_rate": 0.2, "batch_size": settings.batch_size})
    labels = LabelStore(noisy, device)
    names = CLASS_NAMES if num_classes == len(CLASS_NAMES) else tuple(f"c{i}" for i in range(num_classes))
    ctx = Context(
        device=device, num_classes=num_classes, class_names=tuple(names), epochs=settings.epochs,
        batch_size=settings.batch_size, train_size=len(noisy), noise_rate=0.2, seed=SEED, settings=settings,
        backbones=BackboneFactory(settings.backbone, num_classes, SEED, None), labels=labels,
    )
    method = cls(hp)
    method.build(ctx)
    return method, ctx, labels, torch.as_tensor(clean, device=device)


# -- levers that patch engine behaviour inside this process (proposals, see README) ---------------
@contextlib.contextmanager
def fewer_syncs() -> Iterator[type[StepMeter]]:
    """The engine's own meter: both sync removals this lever measured (hue jitter without a host
    test, host-side scalars kept on the host) are now the engine's default, so this row should
    match the method row; it stays to catch a regression."""
    yield StepMeter


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


def use_foreach_adam(ctx: Context) -> None:
    """Switch the context's (fused on CUDA) Adam optimisers to the foreach implementation."""
    for registered in ctx.optimizers:
        for group in registered.optimizer.param_groups:
            group["fused"] = False
            group["foreach"] = True


# -- counters -------------------------------------------------------------------------------------
def dynamo_graphs() -> int | None:
    try:
        from torch._dynamo.utils import counters
        return int(counters["stats"]["unique_graphs"])
    except Exception:
        return None


def cudagraph_skips() -> int | None:
    """Graphs inductor did not turn into CUDA graphs (mode reduce-overhead), with the reason logged."""
    try:
        from torch._dynamo.utils import counters
        return int(counters["inductor"]["cudagraph_skips"])
    except Exception:
        return None


class LogCapture(logging.Handler):
    def __init__(self, needles: tuple[str, ...]) -> None:
        super().__init__(logging.DEBUG)
        self.needles = needles
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:
            return
        if any(n in text for n in self.needles):
            text = " ".join(text.split())[:300]
            if text not in self.messages:  # a record can reach several of the loggers listened on
                self.messages.append(text)


@contextlib.contextmanager
def capture_torch_logs(recompiles: bool) -> Iterator[LogCapture]:
    """Collect recompile reasons and CUDA-graph skips that torch logs while compiled rows run."""
    handler = LogCapture(("Recompiling", "guard failure", "skipping cudagraphs", "cudagraph"))
    if recompiles:
        with contextlib.suppress(Exception):
            import torch._logging
            torch._logging.set_logs(recompiles=True, perf_hints=True)
    # torch's artifact loggers do not propagate to "torch": listen on each (never on the structured
    # trace logger, whose payloads are only built when it has a handler).
    loggers = [logging.getLogger(name) for name, obj in list(logging.Logger.manager.loggerDict.items())
               if name.startswith("torch") and "__trace" not in name and isinstance(obj, logging.Logger)]
    loggers.append(logging.getLogger("torch"))
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        if recompiles:
            with contextlib.suppress(Exception):
                import torch._logging
                torch._logging.set_logs()


def count_syncs(loop: EngineLoop) -> tuple[int | None, list[str]]:
    """Host synchronisations of one training step, via torch.cuda.set_sync_debug_mode("warn")."""
    if loop.device.type != "cuda":
        return None, []
    if loop.at_boundary():
        loop.run(1)  # the first step of an epoch also uploads the epoch's order: not a per-step sync
    sync(loop.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            loop.run(1)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    hits = [w for w in caught if "synchroniz" in str(w.message).lower()]
    where = sorted({f"{Path(w.filename).name}:{w.lineno}" for w in hits})
    return len(hits), where


def count_flops_per_image(loop: EngineLoop) -> float | None:
    """FLOPs (2 per multiply-add) of one training step per image, counted by torch's FlopCounterMode."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    if loop.at_boundary():
        loop.run(1)
    with FlopCounterMode(display=False) as counter:
        loop.run(1)
    return counter.get_total_flops() / loop.settings.batch_size


# ------------------------------------------------------------------------------------------------
# The bench
# ------------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, device: torch.device, report: Report) -> None:
        self.args, self.device, self.report = args, device, report
        self.registry = get_registry()
        self.flops: dict[str, float] = {}  # (method/phase) -> FLOPs per training image
        self.probe_tflops: float | None = None
        self.ref_img_s: float | None = None
        self.data: BenchData | None = None
        self.placed: dict[str, torch.Tensor] = {}

    # -- settings ---------------------------------------------------------------------------
    def settings(self, **changes: Any) -> TrainSettings:
        a = self.args
        base = TrainSettings(epochs=40, batch_size=a.batch, image_size=a.size, eval_batch_size=512,
                             augmentation="cct", cache_on_device="auto", compile=False)
        settings = dataclasses.replace(base, **changes)
        settings.check()
        return settings

    def derived(self, row: dict[str, Any], key: str) -> dict[str, Any]:
        """Add x ref, TFLOP/s and % of the probe to a training row."""
        img_s = row.get("img_s")
        if img_s and self.ref_img_s:
            row["x_ref"] = img_s / self.ref_img_s
        flops = self.flops.get(key)
        if img_s and flops:
            row["flops_per_img_g"] = flops / 1e9
            row["tflops"] = img_s * flops / 1e12
            if self.probe_tflops:
                row["pct_peak"] = 100 * row["tflops"] / self.probe_tflops
        return row

    # -- probe ------------------------------------------------------------------------------
    def probe(self) -> dict[str, Any]:
        row = matmul_probe(self.device, self.args.quick)
        self.probe_tflops = row["tflops"]
        return row

    # -- reference --------------------------------------------------------------------------
    def reference_rows(self) -> None:
        from torch.utils.data import DataLoader

        a, device, data = self.args, self.device, self.data
        assert data is not None
        dataset = ReferenceDataset(data.paths, data.noisy, reference_transform(a.size))
        loader = DataLoader(dataset, batch_size=a.batch, shuffle=True, num_workers=a.workers,
                            pin_memory=device.type == "cuda", drop_last=True,
                            persistent_workers=a.workers > 0)
        batches = cycle(loader)
        notes = (f"{a.workers} DataLoader workers, PIL decode + torchvision CCT transforms, fp32, "
                 f"TF32 convs={torch.backends.cudnn.allow_tf32}, 3x ResNet-18 + CCT loss, foreach Adam")

        def full() -> dict[str, Any]:
            nets, opt = reference_models(device)
            reset_peak(device)
            step = reference_step(nets, opt, device)
            run = lambda k: [step(*next(batches)) for _ in range(k)]  # noqa: E731
            run(a.warmup)
            sync(device)
            t0 = time.perf_counter()
            run(a.steps)
            sync(device)
            seconds = time.perf_counter() - t0
            img_s = a.steps * a.batch / seconds
            self.ref_img_s = img_s
            row = {"img_s": img_s, "step_ms": 1e3 * seconds / a.steps, "peak_gib": peak_gib(device),
                   "x_ref": 1.0, "notes": notes}
            if not a.quick:  # one more step, only worth it where the FLOP rate means something
                self.flops["reference"] = reference_flops(nets, opt, device, a)
            return self.derived(row, "reference")

        def loader_only() -> dict[str, Any]:
            # Drain what the workers prefetched while the row above ran (prefetch_factor 2 per worker).
            for _ in range(a.warmup + 2 * max(1, a.workers)):
                next(batches)
            t0 = time.perf_counter()
            for _ in range(a.steps):
                next(batches)[0].to(device, non_blocking=True)
            sync(device)
            seconds = time.perf_counter() - t0
            return {"img_s": a.steps * a.batch / seconds, "step_ms": 1e3 * seconds / a.steps,
                    "notes": f"the reference's data pipeline alone ({a.workers} workers): its CPU ceiling"}

        def compute_only() -> dict[str, Any]:
            nets, opt = reference_models(device)
            reset_peak(device)
            gen = torch.Generator(device=device).manual_seed(0)
            x = torch.randn(a.batch, 3, a.size, a.size, device=device, generator=gen)
            y = torch.randint(0, 7, (a.batch,), device=device, generator=gen)
            step = reference_step(nets, opt, device)
            for _ in range(a.warmup):
                step(x, y)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(a.steps):
                step(x, y)
            sync(device)
            seconds = time.perf_counter() - t0
            row = {"img_s": a.steps * a.batch / seconds, "step_ms": 1e3 * seconds / a.steps,
                   "peak_gib": peak_gib(device), "notes": "the reference's fp32 step on one resident batch: its "
                   "device ceiling"}
            return self.derived(row, "reference")

        need = 30 if device.type == "cuda" else 0
        try:
            run_row(self.report, "reference", full, need)
            run_row(self.report, "reference loader-only", loader_only, need / 2)
            if not a.quick:  # simple code, and the slowest row of a CPU smoke run
                run_row(self.report, "reference compute-only", compute_only, need / 2)
        finally:
            batches.close()  # ends the loader iterator; its persistent workers exit with the loader
            release_memory()

    # -- nlbench training rows --------------------------------------------------------------
    def train_row(self, method_name: str, phase_index: int, settings: TrainSettings, *, key: str,
                  images: torch.Tensor | None = None, source: str = "engine", num_classes: int = 7,
                  clean: np.ndarray | None = None, noisy: np.ndarray | None = None,
                  meter_cls: type[StepMeter] = StepMeter, after_build: Callable[[Method, Context], None] | None = None,
                  compiled: bool = False, count_flops: bool = False, notes: str = "") -> dict[str, Any]:
        a, device, data = self.args, self.device, self.data
        assert data is not None
        images = images if images is not None else self.placed_default()
        clean = clean if clean is not None else data.clean
        noisy = noisy if noisy is not None else data.noisy
        reset_peak(device)
        t_build = time.perf_counter()
        method, ctx, labels, clean_labels = build_method(method_name, settings, device, noisy, clean, num_classes,
                                                     self.registry)
        if after_build is not None:
            after_build(method, ctx)
        build_s = time.perf_counter() - t_build
        phases = method.phases()
        if phase_index >= len(phases):
            return {"status": f"skipped: {method_name} has {len(phases)} phase(s)"}
        for phase in phases[: phase_index + 1]:  # the engine calls start_phase as it enters each phase
            method.start_phase(phase)
        phase = phases[phase_index]
        pipeline = settings.augmentation or "cct"
        channels_last = device.type == "cuda" and settings.channels_last
        augmenter = Augmenter(pipeline, settings.image_size, IMAGENET_MEAN, IMAGENET_STD, device, channels_last)
        gather = (PrefetchGather(images, device, settings.batch_size) if source == "prefetch"
                  else ImageCache(images, device))
        loop = EngineLoop(EpochRunner(method, ctx, phase, augmenter, gather, labels, clean_labels, settings,
                                      meter_cls=meter_cls))
        row: dict[str, Any] = {"method": method_name, "phase": phase.name}
        extra: list[str] = []
        try:
            with capture_torch_logs(recompiles=compiled) as logs:
                graphs0, skips0 = dynamo_graphs(), cudagraph_skips()
                t0 = time.perf_counter()
                loop.run(1)
                sync(device)
                first_s = time.perf_counter() - t0
                loop.run(max(0, a.warmup - 1))
                sync(device)
                if compiled:  # compile the evaluation graphs too, then watch a whole epoch for recompiles
                    t_eval = time.perf_counter()
                    self._evaluate(method, phase, augmenter, ctx, settings.eval_batch_size)
                    extra.append(f"first eval {time.perf_counter() - t_eval:.1f} s")
                    method.train_mode(phase)
                graphs1 = dynamo_graphs()
                t0 = time.perf_counter()
                loop.run(a.steps)
                loop.end_epoch()
                sync(device)
                seconds = time.perf_counter() - t0
                if compiled:
                    t_eval = time.perf_counter()
                    self._evaluate(method, phase, augmenter, ctx, settings.eval_batch_size)
                    extra.append(f"eval again {time.perf_counter() - t_eval:.2f} s")
                    method.train_mode(phase)
                    loop.run(1)  # a step after evaluation: train-mode graphs must still hit the cache
                    sync(device)
                graphs2 = dynamo_graphs()
            row["img_s"] = a.steps * settings.batch_size / seconds
            row["step_ms"] = 1e3 * seconds / a.steps
            row["peak_gib"] = peak_gib(device)
            row["build_s"] = round(build_s, 2)
            row["first_step_s"] = round(first_s, 2)
            if compiled:
                row["compile_s"] = round(max(0.0, first_s - seconds / a.steps), 1)
                if graphs0 is not None and graphs1 is not None and graphs2 is not None:
                    row["graphs_warmup"] = graphs1 - graphs0
                    row["recompiles_after_warmup"] = graphs2 - graphs1
                    extra.insert(0, f"compile {row['compile_s']:.0f} s; graphs in warm-up {graphs1 - graphs0}, "
                                    f"recompiles after warm-up {graphs2 - graphs1}")
                row["log"] = logs.messages[:12]
                skips1 = cudagraph_skips()
                if skips0 is not None and skips1 is not None:
                    row["cudagraph_skips"] = skips1 - skips0
                skipped = [m for m in logs.messages if "skipping cudagraphs" in m]
                if skipped:
                    extra.append(f"cudagraphs skipped: {skipped[0][:120]}")
                elif row.get("cudagraph_skips"):
                    extra.append(f"{row['cudagraph_skips']} graph(s) ran without CUDA graphs")
            syncs, where = count_syncs(loop)
            row["syncs_per_step"] = syncs
            row["sync_sites"] = where
            if syncs:
                extra.append("syncs at " + ", ".join(where))
            if count_flops and key not in self.flops and not compiled and not (a.quick and self.flops):
                try:  # FLOPs per image only feed the TFLOP/s columns: never fail a row over them
                    flops = count_flops_per_image(loop)
                except Exception as err:
                    flops = None
                    extra.append(f"FLOP count failed: {type(err).__name__}: {err}")
                if flops:
                    self.flops[key] = flops
            loop.end_epoch()
        finally:
            if isinstance(gather, PrefetchGather):
                gather.close()
        row["notes"] = "; ".join([n for n in [notes, *extra] if n])
        del method, ctx, loop
        return self.derived(row, key)

    def _evaluate(self, method: Method, phase: Phase, augmenter: Augmenter, ctx: Context, batch: int) -> None:
        data = self.data
        assert data is not None
        predictions = predict_split(method, phase, data.test_u8, augmenter, ctx, batch)
        accuracies(predictions, torch.as_tensor(data.test_labels, device=self.device))

    def placed_default(self) -> torch.Tensor:
        if "auto" not in self.placed:
            assert self.data is not None
            self.placed["auto"] = ImageCache.place(self.data.train_u8, self.device, self.settings())
        return self.placed["auto"]

    def method_names(self) -> list[str]:
        names = self.args.methods or sorted(self.registry.methods)
        lever = self.args.lever_method
        return ([lever] if lever in names else []) + [n for n in names if n != lever]

    def method_rows(self, names: list[str]) -> None:
        need = 20 if self.device.type == "cuda" else 0
        for name in names:
            try:
                phases = self._phase_names(name)
            except Exception as err:
                self.report.add({"name": f"nlbench {name}", "status": f"failed: {type(err).__name__}: {err}"})
                continue
            for index, phase in enumerate(phases):
                key = f"{name}/{phase}"
                run_row(self.report, f"nlbench {key}",
                        lambda n=name, i=index, k=key: self.train_row(
                            n, i, self.settings(), key=k, count_flops=True,
                            notes="engine defaults (bf16 autocast + channels_last on CUDA, fused Adam, "
                                  "cache on device when it fits)" if self.device.type == "cuda" else "engine defaults"),
                        need)

    def _phase_names(self, name: str) -> list[str]:
        cls = self.registry.method(name)
        method = cls(cls.HParams())
        method.ctx = types.SimpleNamespace(epochs=40)  # phases() usually reads only ctx.epochs
        try:
            return [p.name for p in method.phases()]
        except Exception:
            return ["train"]

    # -- levers -----------------------------------------------------------------------------
    def lever_rows(self) -> None:
        a, device = self.args, self.device
        name = a.lever_method
        key = f"{name}/{self._phase_names(name)[0]}"
        cuda = device.type == "cuda"
        need = 20 if cuda else 0
        levers = a.levers

        if "foreach-adam" in levers:
            run_row(self.report, "lever foreach-adam", lambda: self.train_row(
                name, 0, self.settings(), key=key, after_build=lambda m, c: use_foreach_adam(c),
                notes="Adam(foreach=True) instead of fused" if cuda else "CPU: no fused Adam, same as default"), need)
        if "fewer-syncs" in levers:
            def fewer() -> dict[str, Any]:
                with fewer_syncs() as meter:
                    return self.train_row(name, 0, self.settings(), key=key, meter_cls=meter,
                                          notes="proposed: jitter without .any() read, host scalars summed on host")
            run_row(self.report, "lever fewer-syncs", fewer, need)
        if "cudnn-benchmark" in levers:
            def bench() -> dict[str, Any]:
                if not cuda:
                    return {"status": "skipped: CUDA only"}
                with cudnn_benchmark(True):
                    return self.train_row(name, 0, self.settings(), key=key,
                                          notes="torch.backends.cudnn.benchmark = True")
            run_row(self.report, "lever cudnn-benchmark", bench, need)
        if "host-cache" in levers:
            def host() -> dict[str, Any]:
                assert self.data is not None
                images = ImageCache.place(self.data.train_u8, device, self.settings(cache_on_device="no"))
                return self.train_row(name, 0, self.settings(cache_on_device="no"), key=key, images=images,
                                      notes="engine path with cache_on_device=no: index.cpu(), index_select, "
                                            "pin_memory(), copy per step")
            run_row(self.report, "lever host-cache", host, need)
        if "host-prefetch" in levers:
            def prefetch() -> dict[str, Any]:
                assert self.data is not None
                return self.train_row(name, 0, self.settings(cache_on_device="no"), key=key,
                                      images=self.data.train_u8, source="prefetch",
                                      notes="proposed: CPU-order gather into pinned double buffers on a thread, "
                                            "async copy")
            run_row(self.report, "lever host-prefetch", prefetch, need)
    def compile_rows(self) -> None:
        a, device = self.args, self.device
        name = a.lever_method
        key = f"{name}/{self._phase_names(name)[0]}"
        cuda = device.type == "cuda"
        need_compile = 150 if cuda else 0
        backend = a.compile_backend or ("inductor" if cuda else "eager")
        levers = a.levers

        def compiled_settings_and_hook(mode: str | None) -> tuple[TrainSettings, Callable | None]:
            if backend == "inductor" and mode is None:
                return self.settings(compile=True), None  # the engine's own path: ctx.backbone() compiles
            def hook(method: Method, ctx: Context) -> None:
                for module in method.modules():
                    module.compile(backend=backend, mode=mode)
            return self.settings(), hook

        if "compile" in levers:
            def comp() -> dict[str, Any]:
                reset_dynamo()
                settings, hook = compiled_settings_and_hook(None)
                return self.train_row(name, 0, settings, key=key, after_build=hook, compiled=True,
                                      notes=f"torch.compile (backend {backend}) of every network")
            run_row(self.report, "lever compile", comp, need_compile)
        if "compile-all" in levers:
            def comp_all() -> dict[str, Any]:
                settings, hook = compiled_settings_and_hook(None)
                with fewer_syncs() as meter, cudnn_benchmark(cuda):
                    return self.train_row(name, 0, settings, key=key, after_build=hook, compiled=True,
                                          meter_cls=meter,
                                          notes="compile + fewer-syncs + cudnn-benchmark (compile cache of the "
                                                "row above is reused)")
            run_row(self.report, "lever compile-all", comp_all, need_compile)

    def cudagraph_row(self) -> None:
        a, device = self.args, self.device
        name = a.lever_method
        key = f"{name}/{self._phase_names(name)[0]}"

        def graphs() -> dict[str, Any]:
            if device.type != "cuda":
                return {"status": "skipped: CUDA only"}
            if (a.compile_backend or "inductor") != "inductor":
                return {"status": "skipped: needs the inductor backend"}
            reset_dynamo()

            def hook(method: Method, ctx: Context) -> None:
                for module in method.modules():
                    module.compile(mode="reduce-overhead")
            with fewer_syncs() as meter, cudnn_benchmark(True):
                return self.train_row(name, 0, self.settings(), key=key, after_build=hook, compiled=True,
                                      meter_cls=meter, notes="torch.compile(mode=reduce-overhead): CUDA graphs "
                                      "of each network's forward/backward, + fewer-syncs + cudnn-benchmark")
        run_row(self.report, "lever cudagraphs", graphs, 150 if device.type == "cuda" else 0)

    # -- evaluation -------------------------------------------------------------------------
    def eval_rows(self) -> None:
        a, device, data = self.args, self.device, self.data
        assert data is not None
        name = a.lever_method
        settings = self.settings()
        n = data.test_u8.shape[0]
        labels = torch.as_tensor(data.test_labels, device=device)
        holder: dict[str, Any] = {}

        def setup() -> None:
            if "method" not in holder:
                method, ctx, _, _ = build_method(name, settings, device, data.noisy, data.clean, 7, self.registry)
                holder.update(method=method, ctx=ctx, phases=method.phases(),
                              augmenter=Augmenter("cct", settings.image_size, IMAGENET_MEAN, IMAGENET_STD, device,
                                                  device.type == "cuda" and settings.channels_last))

        def one(bs: int, placement: str, phase_index: int) -> dict[str, Any]:
            setup()
            method, ctx, augmenter = holder["method"], holder["ctx"], holder["augmenter"]
            phases = holder["phases"]
            if phase_index >= len(phases):
                return {"status": "skipped: no such phase"}
            phase = phases[phase_index]
            images = data.test_u8 if placement == "host" else data.test_u8.to(device)
            reset_peak(device)
            times = []
            for _ in range(a.eval_repeats + 1):
                sync(device)
                t0 = time.perf_counter()
                predictions = predict_split(method, phase, images, augmenter, ctx, bs)
                accuracies(predictions, labels)  # the engine's one synchronisation per evaluation
                times.append(time.perf_counter() - t0)
            seconds = float(np.median(times[1:]))  # the first call pays cuDNN/allocator warm-up
            with torch.no_grad(), ctx.autocast():
                members = len(method.predict_members(augmenter.test(images[:2].to(device)), phase))
            return {"img_s": n / seconds, "eval_s": seconds, "peak_gib": peak_gib(device),
                    "notes": f"{n} test images, phase {phase.name} ({members} outputs), first call {times[0]:.2f} s"}

        for placement in ("host", "device"):
            for bs in a.eval_batches:
                run_row(self.report, f"eval {name}/train bs={bs} {placement}", lambda b=bs, p=placement: one(b, p, 0))
        run_row(self.report, f"eval {name}/distill bs={a.eval_batches[0]} host",
                lambda: one(a.eval_batches[0], "host", 1))
        holder.clear()

    # -- AffectNet scale ----------------------------------------------------------------------
    def affectnet_rows(self) -> None:
        rng = np.random.default_rng(SEED)
        clean = rng.integers(0, AFFECTNET_CLASSES, size=self.args.affectnet_images)
        for size in self.args.affectnet_sizes:
            self._affectnet_size(size, clean)

    def _affectnet_size(self, size: int, clean: np.ndarray) -> None:
        a, device = self.args, self.device
        n, name, cuda = len(clean), a.lever_method, device.type == "cuda"
        nbytes = n * 3 * size * size
        label = f"affectnet S={size}"
        folder = pick_scratch(nbytes, a.scratch)
        mem = host_memory_available()
        in_shm = folder is not None and str(folder).startswith("/dev/shm")
        if (folder is None or in_shm) and mem is not None and nbytes > 0.7 * mem:
            self.report.add({"name": f"{label} build", "status": f"skipped: no folder with {nbytes / 1e9:.1f} GB "
                             f"free, and host memory ({mem / 1e9:.0f} GB available) cannot hold it"})
            return
        # No folder with room: the same array in anonymous host memory (noted in the row).
        path = (folder / f"nlbench-affectnet-{size}-{os.getpid()}.u8") if folder is not None else None
        holder: dict[str, Any] = {}
        settings = self.settings(augmentation="affectnet")
        common: dict[str, Any] = {"num_classes": AFFECTNET_CLASSES, "clean": clean, "noisy": clean,
                                  "key": f"{name}/{self._phase_names(name)[0]}"}

        def build() -> dict[str, Any]:
            images, seconds = build_memmap(path, n, size)
            holder["images"] = images
            where = f"memmap in {folder}" if path is not None else "array in host memory (no folder had room)"
            auto = "device"
            if cuda:
                free, _ = torch.cuda.mem_get_info(device)
                auto = "device" if nbytes <= DEVICE_CACHE_SHARE * free else "host (whole cache pinned)"
            return {"build_s": round(seconds, 1), "bytes": nbytes,
                    "notes": f"{n:,} x 3 x {size} x {size} uint8 = {nbytes / 1e9:.1f} GB {where}, "
                             f"built in {seconds:.1f} s by tiling 64 faces; engine 'auto' would choose {auto}"}

        def on_device() -> dict[str, Any]:
            if not cuda:
                return {"status": "skipped: CUDA only (on the CPU the cache is always on the host)"}
            free, _ = torch.cuda.mem_get_info(device)
            reserve = a.affectnet_reserve_gib * 2**30
            if nbytes + reserve > free:
                return {"status": f"skipped: {nbytes / 2**30:.1f} GiB cache + {a.affectnet_reserve_gib:.0f} GiB "
                                  f"for training > {free / 2**30:.1f} GiB free"}
            t0 = time.perf_counter()
            placed = ImageCache.place(holder["images"], device, self.settings(cache_on_device="yes"))
            sync(device)
            upload = time.perf_counter() - t0
            try:
                return self.train_row(name, 0, settings, images=placed, **common,
                                      notes=f"cache_on_device=yes: {nbytes / 2**30:.1f} GiB on the GPU, "
                                            f"upload {upload:.1f} s")
            finally:
                del placed

        def on_host() -> dict[str, Any]:
            return self.train_row(name, 0, settings, images=holder["images"], **common,
                                  notes="engine path with cache_on_device=no (memmap, per-batch pin)")

        def prefetch() -> dict[str, Any]:
            return self.train_row(name, 0, settings, images=holder["images"], source="prefetch", **common,
                                  notes="proposed prefetching host path")

        need = 25 if cuda else 0
        try:
            row = run_row(self.report, f"{label} build", build, (nbytes / 1.0e9 + 30) if cuda else 0)
            if row.get("status") == "ok":
                rows = {"device": (on_device, need + nbytes / 5e9), "host": (on_host, need),
                        "host-prefetch": (prefetch, need)}
                for placement in a.affectnet_placements:
                    fn, need_s = rows[placement]
                    run_row(self.report, f"{label} {placement}", fn, need_s)
        finally:
            holder.clear()
            release_memory()
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink()


# -- reference loop pieces ------------------------------------------------------------------------
class ReferenceDataset(torch.utils.data.Dataset):
    """Official-repository style: one JPEG decoded with PIL per sample, transforms per sample."""

    def __init__(self, paths: list[str], labels: np.ndarray, transform: Any) -> None:
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[i]) as im:
            image = im.convert("RGB")
        return self.transform(image), int(self.labels[i])


def reference_transform(size: int) -> Any:
    """The CCT training transform of the official code, in torchvision."""
    from torchvision import transforms as T

    return T.Compose([
        T.RandomHorizontalFlip(),
        T.RandomApply([
            T.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25, hue=0.25),
            T.RandomAffine(degrees=0, translate=(0.1, 0.1), scale=(1.0, 1.25),
                           interpolation=T.InterpolationMode.BILINEAR),
        ], p=0.5),
        T.Resize((size, size)),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        T.RandomErasing(scale=(0.02, 0.25)),
    ])


def cycle(loader: Any) -> Iterator[Any]:
    while True:
        yield from loader


def reference_models(device: torch.device) -> tuple[list[torch.nn.Module], torch.optim.Optimizer]:
    torch.manual_seed(SEED)
    nets = [create_backbone("resnet18", len(CLASS_NAMES)).to(device).train() for _ in range(3)]
    opt = torch.optim.Adam([p for net in nets for p in net.parameters()], lr=1e-3)
    return nets, opt


def reference_step(nets: list[torch.nn.Module], opt: torch.optim.Optimizer,
                   device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """fp32 forward of every net, CE per net + KL over ordered pairs (CCT), backward, Adam."""
    lam = 0.5

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        logits = [net(x) for net in nets]
        sup = sum(F.cross_entropy(z, y) for z in logits) / len(logits)
        pairs = [(j, k) for j in range(len(logits)) for k in range(len(logits)) if j != k]
        cons = sum(F.kl_div(F.log_softmax(logits[j], 1), F.log_softmax(logits[k], 1), reduction="batchmean",
                            log_target=True) for j, k in pairs) / len(pairs)
        loss = (1 - lam) * sup + lam * cons
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def reference_flops(nets: list[torch.nn.Module], opt: torch.optim.Optimizer, device: torch.device,
                    a: argparse.Namespace) -> float | None:
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    step = reference_step(nets, opt, device)
    x = torch.randn(a.batch, 3, a.size, a.size, device=device)
    y = torch.randint(0, 7, (a.batch,), device=device)
    with FlopCounterMode(display=False) as counter:
        step(x, y)
    return counter.get_total_flops() / a.batch


def reset_dynamo() -> None:
    with contextlib.suppress(Exception):
        torch._dynamo.reset()


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.show:
        return show(args.show)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            print("error: --device cuda but no CUDA GPU is available; use --device cpu", file=sys.stderr)
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
        bench = Bench(args, device, report)
        bench.data = data
        # Most wanted first, so a time budget drops the least important rows: the lever method's
        # rows, its levers and evaluation, compile, AffectNet scale, other methods, CUDA graphs.
        try:
            names = bench.method_names()
            if "probe" in groups:
                run_row(report, "probe matmul", bench.probe)
            if "reference" in groups:
                bench.reference_rows()
            if "methods" in groups:
                bench.method_rows(names[:1])
            if "levers" in groups:
                bench.lever_rows()
            if "eval" in groups:
                bench.eval_rows()
            if "levers" in groups:
                bench.compile_rows()
            if "affectnet" in groups:
                bench.affectnet_rows()
            if "methods" in groups:
                bench.method_rows(names[1:])
            if "levers" in groups and "cudagraphs" in args.levers:
                bench.cudagraph_row()
        except KeyboardInterrupt:
            report.add({"name": "interrupted", "status": "interrupted (time limit?): rows above are complete"})
        finally:
            bench.placed.clear()
            summarise(bench, report)
            print_summary(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
