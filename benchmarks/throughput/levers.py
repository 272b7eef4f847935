"""The levers' mechanisms: what each lever row (:mod:`lever_rows`) switches on in the engine's path.

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
from typing import Any

import torch

from nlbench.context import Context
from nlbench.method import Method
from nlbench.train.epoch import StepMeter


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
