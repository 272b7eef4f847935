"""The lever rows: one change at a time on the lever method, each timed by :meth:`bench.Bench.train_row`.

The mechanisms they switch on (foreach Adam, fewer host synchronisations, cuDNN autotuning, the
host image cache with prefetching, torch.compile) live in :mod:`levers`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench import Bench
from levers import compile_networks, cudnn_benchmark, fewer_syncs, use_foreach_adam
from measure import reset_dynamo, run_row

from nlbench.context import Context
from nlbench.method import Method
from nlbench.settings import TrainSettings


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
