"""The bench: nlbench's training path assembled by the engine, and the method, eval and AffectNet rows.

Every nlbench row is built from a :class:`nlbench.spec.RunSpec` by :func:`nlbench.train.assemble.assemble`
(context, method, noisy labels, augmenter, image cache: the engine's own assembly) on the bench's
data, then trained by the engine's :class:`nlbench.train.epoch.EpochRunner`. What a row may change is
what a lever measures: a training setting, the image source or the meter.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from data import (
    NOISE_RATE,
    SEED,
    Data,
    affectnet_data,
    affectnet_labels,
    build_memmap,
    host_memory_available,
    pick_scratch,
)
from levers import PrefetchGather
from measure import (
    EngineLoop,
    capture_torch_logs,
    count_flops_per_image,
    count_syncs,
    cudagraph_skips,
    dynamo_graphs,
    matmul_probe,
    peak_gib,
    release_memory,
    reset_peak,
    run_row,
    sync,
)
from report import Report

from nlbench.context import Context
from nlbench.data.cache import SplitData
from nlbench.method import Method, Phase
from nlbench.options import build_options
from nlbench.plugins import get_registry
from nlbench.settings import TrainSettings
from nlbench.spec import DataSpec, FrozenMap, NoiseSpec, RunSpec, build_hparams
from nlbench.train.assemble import Assembly, assemble, training_labels
from nlbench.train.epoch import DEVICE_CACHE_SHARE, EpochRunner, ImageCache, StepMeter
from nlbench.train.evaluate import accuracies, predict_split


class Bench:
    def __init__(self, args: argparse.Namespace, device: torch.device, report: Report, data: Data) -> None:
        self.args, self.device, self.report, self.data = args, device, report, data
        self.registry = get_registry()
        self.flops: dict[str, float] = {}  # (method/phase) -> FLOPs per training image
        self.probe_tflops: float | None = None
        self.ref_img_s: dict[str, float] = {}  # reference method -> its images/s
        self._phases: dict[str, list[str]] = {}

    # -- specs and assembly -------------------------------------------------------------------
    def settings(self, **changes: Any) -> TrainSettings:
        """The training settings of a row: the engine's defaults at the benchmark's sizes, plus ``changes``."""
        a = self.args
        values = {"epochs": 40, "batch_size": a.batch, "image_size": a.size, "eval_batch_size": 512,
                  "augmentation": a.augmentation, "cache_on_device": "auto", "compile": False, **changes}
        return build_options(TrainSettings, values, "train")

    def spec(self, method: str, settings: TrainSettings, data: Data | None = None) -> RunSpec:
        """The run spec of a row: ``method`` with its default hyperparameters on ``data``, 20 % flip noise."""
        dataset = (data or self.data).dataset
        cls = self.registry.method(method)
        hp = build_hparams(cls, {}, epochs=settings.epochs, noise_rate=NOISE_RATE, batch_size=settings.batch_size)
        return RunSpec(
            method=method, hparams=FrozenMap(dataclasses.asdict(hp)),
            data=DataSpec(name=dataset.name, version=str(dataset.version),
                          options=FrozenMap(dataclasses.asdict(dataset.options))),
            noise=NoiseSpec(rate=NOISE_RATE), seed=SEED, train=settings, device=str(self.device),
        )

    def assemble(self, method: str, settings: TrainSettings, data: Data | None = None) -> Assembly:
        """The engine's assembly of a row's spec on the bench's own dataset and splits."""
        data = data or self.data
        return assemble(self.spec(method, settings, data), self.registry, device=self.device,
                        dataset=data.dataset, splits=(data.train, data.test))

    def noisy_labels(self) -> np.ndarray:
        """The noisy training labels every nlbench row of the JPEG data trains on (for the reference loop)."""
        spec = self.spec(self.args.lever_method, self.settings())
        return training_labels(self.data.dataset, self.data.train, spec).labels

    def phase_names(self, method: str) -> list[str]:
        """The phases of ``method`` as its assembled instance declares them."""
        if method not in self._phases:
            run = self.assemble(method, self.settings(cache_on_device="no"))
            self._phases[method] = [p.name for p in run.method.phases()]
            del run
            release_memory()
        return self._phases[method]

    def derived(self, row: dict[str, Any], key: str) -> dict[str, Any]:
        """Add x ref, TFLOP/s and % of the probe to a training row."""
        img_s = row.get("img_s")
        method = key.split("/")[0]
        if method.startswith("reference"):  # "reference" is CCT's loop, "reference standard" Standard's
            method = method.partition(" ")[2] or "cct"
        reference = self.ref_img_s.get(method, self.ref_img_s.get("cct"))
        if img_s and reference:
            row["x_ref"] = img_s / reference
        flops = self.flops.get(key)
        if img_s and flops:
            row["flops_per_img_g"] = flops / 1e9
            row["tflops"] = img_s * flops / 1e12
            if self.probe_tflops:
                row["pct_peak"] = 100 * row["tflops"] / self.probe_tflops
        return row

    def probe(self) -> dict[str, Any]:
        row = matmul_probe(self.device, self.args.quick)
        self.probe_tflops = row["tflops"]
        return row

    # -- one training row -------------------------------------------------------------------
    def train_row(self, method_name: str, phase_index: int, settings: TrainSettings, *, data: Data | None = None,
                  source: str = "engine", meter_cls: type[StepMeter] = StepMeter,
                  after_build: Callable[[Method, Context], None] | None = None, compiled: bool = False,
                  count_flops: bool = False, notes: str = "") -> dict[str, Any]:
        """Assemble ``method_name`` with ``settings``, then time the engine's EpochRunner in one phase.

        ``source`` "prefetch" replaces the assembly's image cache by :class:`levers.PrefetchGather`
        over the host images; ``after_build`` changes the built method (a lever).
        """
        a, device = self.args, self.device
        reset_peak(device)
        t_build = time.perf_counter()
        run = self.assemble(method_name, settings, data)
        method, ctx = run.method, run.ctx
        if after_build is not None:
            after_build(method, ctx)
        build_s = time.perf_counter() - t_build
        phases = method.phases()
        if phase_index >= len(phases):
            return {"status": f"skipped: {method_name} has {len(phases)} phase(s)"}
        for phase in phases[: phase_index + 1]:  # the engine calls start_phase as it enters each phase
            method.start_phase(phase)
        phase = phases[phase_index]
        key = f"{method_name}/{phase.name}"
        gather = (PrefetchGather(run.train.images, device, settings.batch_size) if source == "prefetch"
                  else run.train_images)
        loop = EngineLoop(EpochRunner(method, ctx, phase, run.augmenter, gather, run.labels, run.clean,
                                      run.spec.train, run.weights, meter_cls=meter_cls))
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
                    self._evaluate(run, phase)
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
                    self._evaluate(run, phase)
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
        if loop.nonfinite:
            extra.append("loss non-finite, time only: " + loop.nonfinite.split(";")[0])
        row["notes"] = "; ".join([n for n in [notes, *extra] if n])
        del run, method, ctx, loop, gather
        return self.derived(row, key)

    def _evaluate(self, run: Assembly, phase: Phase) -> None:
        """One evaluation epoch as the engine runs it after every training epoch."""
        predictions = predict_split(run.method, phase, run.test_images, run.augmenter, run.ctx,
                                    run.spec.train.eval_batch_size)
        accuracies(predictions, run.test_labels)

    # -- method rows ------------------------------------------------------------------------
    def method_names(self) -> list[str]:
        names = self.args.methods or sorted(self.registry.methods)
        lever = self.args.lever_method
        return ([lever] if lever in names else []) + [n for n in names if n != lever]

    def method_rows(self, names: list[str]) -> None:
        need = 20 if self.device.type == "cuda" else 0
        notes = ("engine defaults (bf16 autocast + channels_last on CUDA, fused Adam, cache on device when it fits)"
                 if self.device.type == "cuda" else "engine defaults")
        for name in names:
            try:
                phases = self.phase_names(name)
            except Exception as err:
                self.report.add({"name": f"nlbench {name}", "status": f"failed: {type(err).__name__}: {err}"})
                continue
            for index, phase in enumerate(phases):
                run_row(self.report, f"nlbench {name}/{phase}",
                        lambda n=name, i=index: self.train_row(n, i, self.settings(), count_flops=True, notes=notes),
                        need)

    # -- evaluation rows --------------------------------------------------------------------
    def eval_rows(self) -> None:
        a, device, data = self.args, self.device, self.data
        name = a.lever_method
        n = len(data.test)
        holder: dict[str, Any] = {}

        def one(bs: int, placement: str, phase_index: int, cpu_amp: bool = False) -> dict[str, Any]:
            key = "run-bf16" if cpu_amp else "run"
            if key not in holder:
                run = self.assemble(name, self.settings(cpu_amp=cpu_amp))
                holder.update({key: run, "phases": run.method.phases()})
            run, phases = holder[key], holder["phases"]
            if phase_index >= len(phases):
                return {"status": "skipped: no such phase"}
            phase = phases[phase_index]
            images = data.test.images if placement == "host" else data.test.images.to(device)
            reset_peak(device)
            times = []
            for _ in range(a.eval_repeats + 1):
                sync(device)
                t0 = time.perf_counter()
                predictions = predict_split(run.method, phase, images, run.augmenter, run.ctx, bs)
                accuracies(predictions, run.test_labels)  # the engine's one synchronisation per evaluation
                times.append(time.perf_counter() - t0)
            seconds = float(np.median(times[1:]))  # the first call pays cuDNN/allocator warm-up
            with torch.no_grad(), run.ctx.autocast():
                members = len(run.method.predict_members(run.augmenter.test(images[:2].to(device)), phase))
            return {"img_s": n / seconds, "eval_s": seconds, "peak_gib": peak_gib(device),
                    "notes": f"{n} test images, phase {phase.name} ({members} outputs), first call {times[0]:.2f} s"}

        for placement in ("host", "device"):
            for bs in a.eval_batches:
                run_row(self.report, f"eval {name}/train bs={bs} {placement}", lambda b=bs, p=placement: one(b, p, 0))
        run_row(self.report, f"eval {name}/distill bs={a.eval_batches[0]} host",
                lambda: one(a.eval_batches[0], "host", 1))
        if device.type == "cpu":
            run_row(self.report, f"eval {name}/train bs={a.eval_batches[0]} host cpu-bf16",
                    lambda: one(a.eval_batches[0], "host", 0, cpu_amp=True))
        holder.clear()

    # -- AffectNet scale --------------------------------------------------------------------
    def affectnet_rows(self) -> None:
        clean = affectnet_labels(self.args.affectnet_images)
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
        holder: dict[str, Data] = {}
        on_host = self.settings(augmentation="affectnet", cache_on_device="no")

        def build() -> dict[str, Any]:
            images, seconds = build_memmap(path, n, size)
            holder["data"] = affectnet_data(images, clean, size, a.eval_images)
            where = f"memmap in {folder}" if path is not None else "array in host memory (no folder had room)"
            auto = "device"
            if cuda:
                free, _ = torch.cuda.mem_get_info(device)
                auto = "device" if nbytes <= DEVICE_CACHE_SHARE * free else "host (whole cache pinned)"
            return {"build_s": round(seconds, 1), "bytes": nbytes,
                    "notes": f"{n:,} x 3 x {size} x {size} uint8 = {nbytes / 1e9:.1f} GB {where}, "
                             f"built in {seconds:.1f} s by tiling 64 faces; engine 'auto' would choose {auto}"}

        def device_row() -> dict[str, Any]:
            if not cuda:
                return {"status": "skipped: CUDA only (on the CPU the cache is always on the host)"}
            free, _ = torch.cuda.mem_get_info(device)
            reserve = a.affectnet_reserve_gib * 2**30
            if nbytes + reserve > free:
                return {"status": f"skipped: {nbytes / 2**30:.1f} GiB cache + {a.affectnet_reserve_gib:.0f} GiB "
                                  f"for training > {free / 2**30:.1f} GiB free"}
            settings = self.settings(augmentation="affectnet", cache_on_device="yes")
            data = holder["data"]
            t0 = time.perf_counter()
            placed = ImageCache.place(data.train.images, device, settings)  # timed here: the assembly keeps it
            sync(device)
            upload = time.perf_counter() - t0
            resident = dataclasses.replace(data, train=SplitData(placed, data.train.table))
            try:
                return self.train_row(name, 0, settings, data=resident,
                                      notes=f"cache_on_device=yes: {nbytes / 2**30:.1f} GiB on the GPU, "
                                            f"upload {upload:.1f} s")
            finally:
                del placed, resident

        def host_row() -> dict[str, Any]:
            return self.train_row(name, 0, on_host, data=holder["data"],
                                  notes="engine path with cache_on_device=no (memmap, per-batch pin)")

        def prefetch_row() -> dict[str, Any]:
            return self.train_row(name, 0, on_host, data=holder["data"], source="prefetch",
                                  notes="proposed prefetching host path")

        need = 25 if cuda else 0
        try:
            row = run_row(self.report, f"{label} build", build, (nbytes / 1.0e9 + 30) if cuda else 0)
            if row.get("status") == "ok":
                rows = {"device": (device_row, need + nbytes / 5e9), "host": (host_row, need),
                        "host-prefetch": (prefetch_row, need)}
                for placement in a.affectnet_placements:
                    fn, need_s = rows[placement]
                    run_row(self.report, f"{label} {placement}", fn, need_s)
        finally:
            holder.clear()
            release_memory()
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink()
