"""The lever rows: one change at a time on the lever method, and the mechanisms they switch on.

Foreach Adam, fewer host synchronisations, cuDNN autotuning, the host image cache with and without
prefetching, torch.compile, CUDA graphs. Each lever changes one thing in the engine's training path
built by :meth:`bench.Bench.train_row`: a training setting, the optimiser after the assembly, the
image source or the meter of the ``EpochRunner``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import torch
from measure import reset_dynamo, run_row

from nlbench.context import Context
from nlbench.method import Method
from nlbench.settings import TrainSettings
from nlbench.train.epoch import StepMeter

if TYPE_CHECKING:  # pragma: no cover
    from bench import Bench


class PrefetchGather:
    """Proposed host-cache path: a thread gathers batch k+1 into pinned buffers while the GPU runs k.

    Indices come from the CPU copy of the epoch order (no device->host sync), the gather writes into
    preallocated pinned memory (no per-batch pin), and the copy to the device is asynchronous. It
    replaces the assembly's :class:`nlbench.train.epoch.ImageCache` as the ``EpochRunner``'s image source.
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


def compile_networks(backend: str | None, mode: str | None) -> Callable[[Method, Context], None]:
    """An after-assembly hook compiling every network of the method with ``backend`` and ``mode``."""
    options = {"backend": backend} if backend else {}  # None: torch's default (inductor)

    def hook(method: Method, ctx: Context) -> None:
        for module in method.modules():
            module.compile(mode=mode, **options)
    return hook


# -- the rows -------------------------------------------------------------------------------------
def lever_rows(bench: Bench) -> None:
    """foreach-adam, loop-adam, fewer-syncs, cudnn-benchmark, host-cache, cpu-bf16(-nchw), host-prefetch (those in --levers)."""
    a, report = bench.args, bench.report
    name, cuda = a.lever_method, bench.device.type == "cuda"
    need = 20 if cuda else 0
    levers = a.levers

    if "foreach-adam" in levers:
        run_row(report, "lever foreach-adam", lambda: bench.train_row(
            name, 0, bench.settings(), after_build=lambda m, c: use_foreach_adam(c),
            notes="Adam(foreach=True) instead of fused"), need)
    if "loop-adam" in levers:
        run_row(report, "lever loop-adam", lambda: bench.train_row(
            name, 0, bench.settings(fused_adam=False),
            notes="train.fused_adam=false: torch's per-parameter loop" if not cuda
            else "CUDA: always fused, same as default"), need)
    if "fewer-syncs" in levers:
        def fewer() -> dict[str, Any]:
            with fewer_syncs() as meter:
                return bench.train_row(name, 0, bench.settings(), meter_cls=meter,
                                       notes="proposed: jitter without .any() read, host scalars summed on host")
        run_row(report, "lever fewer-syncs", fewer, need)
    if "cudnn-benchmark" in levers:
        def autotune() -> dict[str, Any]:
            if not cuda:
                return {"status": "skipped: CUDA only"}
            with cudnn_benchmark(True):
                return bench.train_row(name, 0, bench.settings(), notes="torch.backends.cudnn.benchmark = True")
        run_row(report, "lever cudnn-benchmark", autotune, need)
    if "host-cache" in levers:
        run_row(report, "lever host-cache", lambda: bench.train_row(
            name, 0, bench.settings(cache_on_device="no"),
            notes="engine path with cache_on_device=no: index.cpu(), index_select, pin_memory(), copy per step"),
            need)
    if "cpu-bf16" in levers:
        def cpu_bf16() -> dict[str, Any]:
            if cuda:
                return {"status": "skipped: CPU only (CUDA runs bf16 + channels_last by default)"}
            return bench.train_row(name, 0, bench.settings(cpu_amp=True),
                                   notes="train.cpu_amp: bf16 autocast + channels_last on the CPU")
        run_row(report, "lever cpu-bf16", cpu_bf16, need)
    if "cpu-bf16-nchw" in levers:
        def cpu_bf16_nchw() -> dict[str, Any]:
            if cuda:
                return {"status": "skipped: CPU only"}
            return bench.train_row(name, 0, bench.settings(cpu_amp=True, channels_last=False),
                                   notes="bf16 autocast on the CPU, contiguous (NCHW) layout")
        run_row(report, "lever cpu-bf16-nchw", cpu_bf16_nchw, need)
    if "host-prefetch" in levers:
        run_row(report, "lever host-prefetch", lambda: bench.train_row(
            name, 0, bench.settings(cache_on_device="no"), source="prefetch",
            notes="proposed: CPU-order gather into pinned double buffers on a thread, async copy"), need)


def compile_rows(bench: Bench) -> None:
    """compile (the engine's own ``settings.compile``) and compile-all (those in --levers)."""
    a, report = bench.args, bench.report
    name, cuda = a.lever_method, bench.device.type == "cuda"
    need_compile = 150 if cuda else 0
    backend = a.compile_backend or ("inductor" if cuda else "eager")

    def compiled() -> tuple[TrainSettings, Callable[[Method, Context], None] | None]:
        if backend == "inductor":
            return bench.settings(compile=True), None  # the engine's own path: ctx.backbone() compiles
        return bench.settings(), compile_networks(backend, None)

    if "compile" in a.levers:
        def comp() -> dict[str, Any]:
            reset_dynamo()
            settings, hook = compiled()
            return bench.train_row(name, 0, settings, after_build=hook, compiled=True,
                                   notes=f"torch.compile (backend {backend}) of every network")
        run_row(report, "lever compile", comp, need_compile)
    if "compile-all" in a.levers:
        def comp_all() -> dict[str, Any]:
            settings, hook = compiled()
            with fewer_syncs() as meter, cudnn_benchmark(cuda):
                return bench.train_row(name, 0, settings, after_build=hook, compiled=True, meter_cls=meter,
                                       notes="compile + fewer-syncs + cudnn-benchmark (compile cache of the "
                                             "row above is reused)")
        run_row(report, "lever compile-all", comp_all, need_compile)


def cudagraph_row(bench: Bench) -> None:
    """cudagraphs: compile(mode=reduce-overhead) + fewer-syncs + cudnn-benchmark (CUDA, inductor only)."""
    a, cuda = bench.args, bench.device.type == "cuda"

    def graphs() -> dict[str, Any]:
        if not cuda:
            return {"status": "skipped: CUDA only"}
        if (a.compile_backend or "inductor") != "inductor":
            return {"status": "skipped: needs the inductor backend"}
        reset_dynamo()
        with fewer_syncs() as meter, cudnn_benchmark(True):
            return bench.train_row(a.lever_method, 0, bench.settings(), compiled=True, meter_cls=meter,
                                   after_build=compile_networks(None, "reduce-overhead"),
                                   notes="torch.compile(mode=reduce-overhead): CUDA graphs of each network's "
                                         "forward/backward, + fewer-syncs + cudnn-benchmark")
    run_row(bench.report, "lever cudagraphs", graphs, 150 if cuda else 0)
