"""How rows are measured: the row runner, device clocks and memory, the matmul probe, the step
driver around the engine's ``EpochRunner``, host synchronisations, FLOPs, dynamo graphs and logs."""

from __future__ import annotations

import contextlib
import gc
import logging
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from report import Report

from nlbench.errors import RunFailed
from nlbench.train.epoch import EpochRunner


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


# -- device clocks and memory ---------------------------------------------------------------------
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
    row = {"tflops": tflops, "notes": f"{kind} matmul on random data: the ceiling of the '% peak' column",
           "probe_dtype": str(dtype), "probe_n": n}
    if device.type == "cpu":  # what bf16 (AVX512-BF16, AMX) would offer the cpu-bf16 rows
        a16, b16 = a.bfloat16(), b.bfloat16()
        for _ in range(2):
            a16 @ b16
        t0 = time.perf_counter()
        for _ in range(reps):
            a16 @ b16
        row["bf16_tflops"] = 2 * n**3 / ((time.perf_counter() - t0) / reps) / 1e12
        row["notes"] += f"; bf16 on this CPU: {row['bf16_tflops']:.3f} TFLOP/s"
    return row


# -- the step driver ------------------------------------------------------------------------------
class EngineLoop:
    """The engine's own :class:`~nlbench.train.epoch.EpochRunner`, run for a number of steps across epochs.

    Timing rows ask for N steps, not whole epochs; this only starts and finishes the runner's
    epochs at their boundaries (``finish`` is the engine's one synchronisation per epoch).
    """

    def __init__(self, runner: EpochRunner) -> None:
        self.runner = runner
        self.device, self.settings = runner.device, runner.settings
        self.epoch = -1
        self.open = False
        #: The engine's message when a timed epoch's loss went non-finite (else None).
        self.nonfinite: str | None = None

    def at_boundary(self) -> bool:
        return not self.open or self.runner.step_index >= self.runner.steps

    def end_epoch(self) -> dict[str, Any]:
        if not self.open:
            return {}
        self.open = False
        try:
            return self.runner.finish()
        except RunFailed as err:
            # A timing row measures speed, and a few steps at random init on random images may
            # diverge (seen once under bf16 on another CPU): the row keeps its time and says so.
            if "the loss became" not in str(err):
                raise
            self.nonfinite = self.nonfinite or str(err)
            return {}

    def run(self, count: int) -> None:
        for _ in range(count):
            if self.at_boundary():
                self.end_epoch()
                self.epoch += 1
                self.runner.start(self.epoch)
                self.open = True
            self.runner.step()


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


# -- torch.compile: graphs, CUDA-graph skips, logs --------------------------------------------------
def reset_dynamo() -> None:
    with contextlib.suppress(Exception):
        torch._dynamo.reset()


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
