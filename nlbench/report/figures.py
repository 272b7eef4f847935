"""The figures of ``nlbench plot`` and ``nlbench report``, drawn from the run store with matplotlib.

Every figure is written as PNG (150 dpi) and PDF. Each ``plot_*`` function takes the runs (see
:func:`nlbench.report.runs.read_runs`) and an output folder, returns the files it wrote, and keeps the numbers it drew
in :attr:`Figure.data` so that tests (and users) can check them. Colours are the Okabe-Ito
palette (safe for colour-blind readers), one colour per method across figures, and lines differ
in style too where colour alone would carry meaning.

matplotlib is an optional dependency (``pip install "nlbench[plots]"``): :func:`require` says so.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nlbench.errors import UsageError
from nlbench.report.runs import FinishedRun as Run
from nlbench.report.runs import seeds_text, test_set_labels, variant_labels

#: Okabe & Ito (2008): distinguishable with every common colour-vision deficiency.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
KINDS = ("lambda", "curves", "memorisation", "selection", "confusion", "temperature", "gradcam", "ranks")


def require() -> Any:
    """matplotlib.pyplot with the non-interactive backend, or a usage error saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError('figures need matplotlib: pip install "nlbench[plots]" (or pip install matplotlib).') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8,
                         "figure.dpi": 100, "savefig.bbox": "tight", "axes.spines.top": False,
                         "axes.spines.right": False, "pdf.fonttype": 42})
    return plt


#: One Okabe-Ito colour per built-in method (yellow, faint on white, is left for others).
METHOD_COLOURS = {"standard": "#000000", "coteaching": "#E69F00", "coteaching_plus": "#56B4E9", "jocor": "#009E73",
                  "nct": "#CC79A7", "scn": "#0072B2", "cct": "#D55E00",
                  # Beyond Okabe-Ito's eight: two of Paul Tol's colour-blind-safe muted colours.
                  "eac": "#882255", "rul": "#999933"}
#: Line styles that tell variants of one method apart.
STYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))


def colour(method: str) -> str:
    """The colour of a method (variants share it), the same in every figure."""
    import zlib

    base = method.split(":")[0].split(" ")[0]
    if base in METHOD_COLOURS:
        return METHOD_COLOURS[base]
    return PALETTE[zlib.crc32(base.encode()) % len(PALETTE)]


def _by_variant(runs: list[Run]) -> dict[str, list[Run]]:
    labels = variant_labels(runs)
    return _groups(runs, lambda r: labels[r.path])


@dataclass
class Figure:
    """What one plot call wrote, and the numbers it drew (by panel), for checks."""

    files: list[Path] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def save(fig: Any, out: Path, name: str) -> list[Path]:
    """Write ``fig`` as ``name``.png and ``name``.pdf under ``out``; returns both paths."""
    plt = require()
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(files[0], dpi=150)
    fig.savefig(files[1])
    plt.close(fig)
    return files


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_")


def _grid(n: int, width: float = 3.6, height: float = 2.8) -> tuple[Any, list[Any]]:
    from matplotlib.ticker import MaxNLocator

    plt = require()
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.6), squeeze=False,
                             layout="constrained")
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    for ax in flat[:n]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, flat[:n]


def _legend_below(fig: Any, axes: list[Any], title: str | None = None) -> None:
    """One legend for the whole figure, below the panels (never over a curve)."""
    handles, labels = {}, []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    fig.legend([handles[k] for k in labels], labels, loc="outside lower center", ncols=min(4, len(labels)),
               frameon=False, title=title, title_fontsize=8)


def _series(run: Run, pick: Callable[[dict[str, Any]], float | None], phase: str | None = None) -> np.ndarray:
    values = [pick(r) for r in run.history if phase is None or r.get("phase") == phase]
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _mean_band(series: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and min/max over seeds, epoch by epoch, over the runs that reached each epoch.

    Runs of one cell share their epochs; a history that lost lines (a damaged metrics.jsonl) is
    padded, never the others cut to it.
    """
    length = max(len(s) for s in series)
    stack = np.vstack([np.pad(s, (0, length - len(s)), constant_values=np.nan) for s in series])
    with np.errstate(all="ignore"):
        return np.nanmean(stack, axis=0), np.nanmin(stack, axis=0), np.nanmax(stack, axis=0)


def _groups(runs: Iterable[Run], key: Callable[[Run], Any]) -> dict[Any, list[Run]]:
    groups: dict[Any, list[Run]] = defaultdict(list)
    for run in runs:
        groups[key(run)].append(run)
    return dict(groups)


def _need(runs: list[Run], what: str) -> None:
    if not runs:
        raise UsageError(f"no finished run has {what}; check the filters (--methods, --datasets, --noise, --seeds) "
                         f"and `nlbench status`.")


# ---------------------------------------------------------------------------------------- kinds
def plot_lambda(out: Path, betas: Iterable[float] = (0.25, 0.5, 0.65, 1.0, 2.0), epochs: int = 100,
                lambda_max: float = 0.9) -> Figure:
    """CCT's dynamic balancing lambda(e) for several beta (the paper's Fig. 2), from the schedule code."""
    from nlbench.lib.schedules import cct_lambda

    plt = require()
    fig, ax = plt.subplots(figsize=(4.6, 3.0))
    figure = Figure()
    styles = ("-", "--", "-.", ":", (0, (5, 1)))
    for i, beta in enumerate(betas):
        curve = [cct_lambda(e, epochs, lambda_max, beta) for e in range(epochs)]
        figure.data[f"beta={beta:g}"] = curve
        ax.plot(range(1, epochs + 1), curve, color=PALETTE[i % len(PALETTE)], linestyle=styles[i % len(styles)],
                label=f"β = {beta:g}")
    ax.set(xlabel="epoch", ylabel="λ (weight of the consistency loss)", ylim=(0, 1),
           title=f"CCT dynamic balancing (λmax = {lambda_max:g}, {epochs} epochs)")
    ax.legend(frameon=False)
    figure.files = save(fig, out, "lambda")
    return figure


def plot_curves(runs: list[Run], out: Path) -> Figure:
    """Test accuracy per epoch of each method (mean over seeds, min-max band), a panel per dataset x noise."""
    runs = [r for r in runs if r.history]
    _need(runs, "per-epoch metrics")
    sets = test_set_labels(runs)
    panels = _groups(runs, lambda r: (sets[r.path], r.noise))
    fig, axes = _grid(len(panels))
    figure = Figure()
    variants = variant_labels(runs)
    style_of = {label: STYLES[i % len(STYLES)] for i, label in enumerate(dict.fromkeys(variants.values()))}
    for ax, ((dataset, noise), members) in zip(axes, panels.items()):
        for label, group in _groups(members, lambda r: variants[r.path]).items():
            mean, low, high = _mean_band([_series(r, lambda h: h.get("test", {}).get("model")) for r in group])
            x = np.arange(1, len(mean) + 1)
            ax.plot(x, mean, color=colour(label), linestyle=style_of[label], label=label)
            if len(group) > 1:
                ax.fill_between(x, low, high, color=colour(label), alpha=0.12, linewidth=0)
            figure.data[f"{dataset}|{noise}|{label}"] = mean.tolist()
            boundary = _phase_boundary(group[0])
            if boundary:
                ax.axvline(boundary + 0.5, color="0.6", linewidth=0.8, linestyle=":")
        ax.set(title=f"{dataset}, noise {noise} ({seeds_text(members)})",
               xlabel="epoch",
               ylabel="test accuracy (%)")
    _legend_below(fig, axes)
    fig.suptitle("Test accuracy per epoch of the deployed model (line: mean over seeds; band: min-max;\n"
                 "dotted: the distillation phase starts)", fontsize=9)
    figure.files = save(fig, out, "curves")
    return figure


def _phase_boundary(run: Run) -> int | None:
    phases = [r.get("phase") for r in run.history]
    for i in range(1, len(phases)):
        if phases[i] != phases[i - 1]:
            return i
    return None


def plot_memorisation(runs: list[Run], out: Path) -> Figure:
    """Training accuracy against the given labels on truly clean and truly noisy samples, per epoch and method."""
    runs = [r for r in runs if any(h.get("train", {}).get("acc_noisy") is not None for h in r.history)]
    _need(runs, "training accuracy on noisy samples (runs with label noise)")
    variants, sets = variant_labels(runs), test_set_labels(runs)
    panels = _groups(runs, lambda r: (sets[r.path], r.noise, variants[r.path]))
    fig, axes = _grid(len(panels), 3.4, 2.6)
    figure = Figure()
    for ax, ((dataset, noise, method), group) in zip(axes, panels.items()):
        clean = _mean_band([_series(r, lambda h: h.get("train", {}).get("acc_clean"), "train") for r in group])[0]
        noisy = _mean_band([_series(r, lambda h: h.get("train", {}).get("acc_noisy"), "train") for r in group])[0]
        test = _mean_band([_series(r, lambda h: h.get("test", {}).get("model"), "train") for r in group])[0]
        x = np.arange(1, len(clean) + 1)
        ax.plot(x, clean, color=PALETTE[2], label="clean samples (given = true label)")
        ax.plot(x, noisy, color=PALETTE[3], linestyle="--", label="noisy samples (given ≠ true label)")
        ax.plot(x, test, color="0.35", linestyle=":", label="test accuracy")
        figure.data[f"{dataset}|{noise}|{method}"] = {"clean": clean.tolist(), "noisy": noisy.tolist(),
                                                       "test": test.tolist()}
        ax.set(title=f"{method}: {dataset}, noise {noise} ({seeds_text(group)})",
               xlabel="epoch", ylabel="accuracy (%)", ylim=(0, 100))
    _legend_below(fig, axes)
    fig.suptitle("Memorisation: training accuracy against the labels trained on (mean over seeds)", fontsize=9)
    figure.files = save(fig, out, "memorisation")
    return figure


def plot_selection(runs: list[Run], out: Path) -> Figure:
    """Label precision of the samples selection methods keep, and SCN's relabelling, per epoch."""
    noisy = [r for r in runs if float(r.result["noise"].get("realised_rate") or 0) > 0]  # clean: precision 100
    precise = [r for r in noisy if any(h.get("train", {}).get("label_precision") is not None for h in r.history)]
    relabel = [r for r in noisy if any(h.get("train", {}).get("labels_changed") for h in r.history)]
    _need(precise + relabel, "sample selection or relabelling diagnostics (Co-teaching, Co-teaching+, JoCoR, SCN)")
    sets = test_set_labels(noisy)
    panels = list(_groups(precise, lambda r: (sets[r.path], r.noise)).items())
    relabelled = variant_labels(relabel)
    panels += [(("relabel", *key), group) for key, group in
               _groups(relabel, lambda r: (sets[r.path], r.noise, relabelled[r.path])).items()]
    fig, axes = _grid(len(panels))
    figure = Figure()
    for ax, (key, members) in zip(axes, panels):
        if key[0] == "relabel":
            _, dataset, noise, variant = key
            for i, (name, style) in enumerate((("labels_changed", "-"), ("labels_restored", "--"))):
                mean = _mean_band([_series(r, lambda h, n=name: h.get("train", {}).get(n), "train") for r in members])[0]
                ax.plot(np.arange(1, len(mean) + 1), mean, color=PALETTE[3 + i], linestyle=style,
                        label=name.replace("_", " ").replace("labels ", "labels ") + " (cumulative)")
                figure.data[f"relabel|{dataset}|{noise}|{variant}|{name}"] = mean.tolist()
            ax.set(title=f"{variant} relabelling: {dataset}, noise {noise}", xlabel="epoch", ylabel="samples")
        else:
            dataset, noise = key
            for method, group in _by_variant(members).items():
                mean = _mean_band([_series(r, lambda h: h.get("train", {}).get("label_precision"), "train")
                                   for r in group])[0]
                ax.plot(np.arange(1, len(mean) + 1), mean, color=colour(method), label=method)
                figure.data[f"precision|{dataset}|{noise}|{method}"] = mean.tolist()
            realised = 100 * (1 - float(members[0].result["noise"].get("realised_rate") or 0))
            ax.axhline(realised, color="0.6", linestyle=":", linewidth=0.8, label="share of clean labels")
            ax.set(title=f"label precision: {dataset}, noise {noise}", xlabel="epoch",
                   ylabel="clean among selected (%)")
    _legend_below(fig, axes)
    figure.files = save(fig, out, "selection")
    return figure


def confusion_matrix(runs: list[Run]) -> tuple[np.ndarray, list[str]]:
    """The row-normalised (%) confusion matrix of the deployed model summed over ``runs`` (counts added first)."""
    reports = [r.result.get("final", {}).get("model") or {} for r in runs]
    if len({tuple(rep.get("class_names", ())) for rep in reports}) > 1:
        raise UsageError("these runs were evaluated on different classes; a confusion matrix sums one set only.")
    counts = np.sum([np.asarray(rep["confusion_matrix"], dtype=np.float64) for rep in reports], axis=0)
    totals = counts.sum(axis=1, keepdims=True)
    return 100.0 * counts / np.where(totals > 0, totals, 1), list(reports[0].get("class_names", []))


def plot_confusion(runs: list[Run], out: Path, per_run: bool = False) -> Figure:
    """Row-normalised confusion matrices with class names (the paper's Fig. 3-4), per run or summed over seeds."""
    runs = [r for r in runs if (r.result.get("final", {}).get("model") or {}).get("confusion_matrix")]
    _need(runs, "a confusion matrix")
    plt = require()
    variants, sets = variant_labels(runs), test_set_labels(runs)
    def classes(run: Run) -> tuple[str, ...]:
        return tuple(run.result["final"]["model"].get("class_names", ()))

    key = ((lambda r: (sets[r.path], r.noise, variants[r.path], r.seed, classes(r))) if per_run
           else (lambda r: (sets[r.path], r.noise, variants[r.path], classes(r))))
    figure = Figure()
    for group_key, group in _groups(runs, key).items():
        matrix, names = confusion_matrix(group)
        size = 1.0 + 0.55 * len(names)
        fig, ax = plt.subplots(figsize=(size + 1.2, size))
        image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=100)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{matrix[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if matrix[i, j] > 55 else "black")
        dataset, noise, method = group_key[:3]
        seeds = f"seed {group_key[3]}" if per_run else seeds_text(group)
        ax.set(xlabel="predicted", ylabel="true", title=f"{method}: {dataset}, noise {noise} ({seeds})")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="% of the true class")
        name = _safe(f"confusion-{dataset}-{noise}-{method}" + (f"-seed{group_key[3]}" if per_run else ""))
        figure.data[name] = matrix.tolist()
        figure.files += save(fig, out, name)
    return figure


def plot_temperature(runs: list[Run], out: Path, metric: str = "last") -> Figure:
    """Test accuracy of CCT's student against the distillation temperature U (the paper's Fig. 5)."""
    runs = [r for r in runs if r.method == "cct" and "temperature_kd" in r.result.get("hparams", {})
            and r.result.get("deployment", {}).get("single", "").startswith("distill")]
    temperatures = {r.result["hparams"]["temperature_kd"] for r in runs}
    if len(temperatures) < 2:
        raise UsageError("plot temperature needs CCT runs with a distilled student at two or more temperatures, e.g. "
                         "nlbench sweep --methods cct --set methods.cct.temperature_kd=1,2,4,8 ...")
    plt = require()
    fig, ax = plt.subplots(figsize=(4.6, 3.0))
    figure = Figure()
    variants = variant_labels(runs, axes=("temperature_kd",))  # the curve's x axis is no variant
    sets = test_set_labels(runs)
    for i, ((dataset, noise, variant), group) in enumerate(
            _groups(runs, lambda r: (sets[r.path], r.noise, variants[r.path])).items()):
        by_u = _groups(group, lambda r: float(r.result["hparams"]["temperature_kd"]))
        us = sorted(by_u)
        if len(us) < 2:  # one temperature in this cell: nothing to compare
            continue
        values = [[r.result["metrics"]["model"][metric] for r in by_u[u] if metric in r.result["metrics"]["model"]]
                  for u in us]
        if any(not v for v in values):
            continue  # runs without this selection (e.g. val without a validation split)
        mean = [float(np.mean(v)) for v in values]
        std = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in values]
        ax.errorbar(us, mean, yerr=std, color=PALETTE[i % len(PALETTE)], marker="os^D"[i % 4], capsize=3,
                    label=f"{variant}: {dataset}, noise {noise}" if variant != "cct" else f"{dataset}, noise {noise}")
        figure.data[f"{dataset}|{noise}" + (f"|{variant}" if variant != "cct" else "")] = dict(zip(us, mean))
    if not figure.data:
        plt.close(fig)
        raise UsageError("plot temperature needs, in one dataset x noise cell, CCT students at two or more "
                         f"temperatures with a {metric!r} result.")
    ax.set(xlabel="distillation temperature U", ylabel=f"student test accuracy (%, {metric} epoch)",
           title="CCT: student accuracy against temperature (mean ± std over seeds)")
    ax.legend(frameon=False)
    figure.files = save(fig, out, "temperature")
    return figure


def plot_ranks(runs_dir: Path, out: Path, layout: str = "table1", metric: str = "last",
               run_ids: set[str] | None = None) -> Figure:
    """A critical-difference diagram of the methods' average ranks over the grid's cells (Demsar 2006)."""
    from nlbench.report.tables import build_table, ranks

    table = build_table(Path(runs_dir), metric, "model", run_ids=run_ids, layout=layout)
    result = ranks(table)
    if result.cells < 2 or len(result.methods) < 2:
        raise UsageError(f"plot ranks needs two or more methods run on two or more cells (dataset x noise) of "
                         f"layout {layout}, every method on every cell; found {len(result.methods)} method(s) on "
                         f"{result.cells} common cell(s) (--methods, --noise narrow the runs).")
    plt = require()
    order = np.argsort(result.average)
    names = [result.methods[i] for i in order]
    values = [result.average[i] for i in order]
    k = len(names)
    fig, ax = plt.subplots(figsize=(6.4, 1.2 + 0.28 * k))
    ax.set_xlim(k + 0.3, 0.7)  # rank 1 (best) on the right, as in Demsar's diagrams
    ax.set_ylim(-(k + 1), 2.4)
    ax.axhline(0, color="black", linewidth=1)
    ax.set_xticks(range(1, k + 1))
    ax.xaxis.set_ticks_position("top")
    ax.yaxis.set_visible(False)
    for spine in ("left", "right", "bottom"):
        ax.spines[spine].set_visible(False)
    for i, (name, value) in enumerate(zip(names, values)):
        y = -(i + 1)
        ax.plot([value, value], [0, y], color=colour(name), linewidth=1)
        ax.text(value, y, f" {name} ({value:.2f}) ", ha="left" if value < (k + 1) / 2 else "right", va="center",
                color=colour(name), fontsize=8)
        ax.plot(value, 0, "o", color=colour(name), markersize=4)
    cd = result.critical_difference
    if cd is not None:
        ax.plot([1, min(1 + cd, k + 0.3)], [1.2, 1.2], color="black", linewidth=2)
        ax.text(1 + min(cd, k - 0.7) / 2, 1.5, f"critical difference (Nemenyi, α = 0.05) = {cd:.2f}", ha="center",
                fontsize=8)
        # Methods whose ranks lie within the CD of each other: not significantly different.
        for start in range(k):
            end = max(j for j in range(k) if values[j] - values[start] <= cd)
            if end > start and not any(values[j] - values[s] <= cd and s < start and j >= end
                                       for s in range(start) for j in range(end, k)):
                y = -0.25 - 0.12 * start
                ax.plot([values[start], values[end]], [y, y], color="0.4", linewidth=3, alpha=0.6)
    p = result.friedman_p
    title = f"Average ranks over {result.cells} cells ({layout}, {metric} epoch; 1 = best)"
    if p is not None:
        title += f"; Friedman p = {p:.3g}"
    ax.set_title(title, fontsize=9, pad=18)
    figure = Figure(data={"ranks": dict(zip(names, values)), "cd": cd, "cells": result.cells})
    figure.files = save(fig, out, "ranks")
    return figure


def plot_gradcam(runs: list[Run], out: Path, registry: Any, images: int = 8, progress: Callable[[str], None] | None = None
                 ) -> Figure:
    """Grad-CAM maps of each run's deployable model on sample test images, predicted and true class under each."""
    from nlbench.report.gradcam import block_size, grad_cam, rebuild, sample_indices
    from nlbench.store import MODEL

    runs = [r for r in runs if (r.path / MODEL).is_file()]
    _need(runs, f"stored model weights ({MODEL})")
    plt = require()
    figure = Figure()
    for number, run in enumerate(runs, start=1):
        if progress:
            progress(f"gradcam {number}/{len(runs)}: {run.method} on {run.dataset}, noise {run.noise}, seed {run.seed}")
        assembly = rebuild(run.path, registry)
        names = list(assembly.dataset.class_names)
        indices = sample_indices(assembly.test_labels.cpu().numpy(), images)
        maps, pictures, predicted, true = grad_cam(assembly, indices)
        size = block_size(assembly)
        coarse = (f"\nlayer4 is {size[0]} x {size[1]} at {assembly.spec.train.image_size} px: no spatial detail "
                  f"(train at 64 px or more for maps)" if min(size) < 2 else "")
        cols = min(len(indices), 4)
        rows = (len(indices) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.3 * rows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, cam, picture, p, t in zip(axes.flat, maps, pictures, predicted, true):
            ax.imshow(picture, interpolation="bilinear")
            if not coarse:  # a 1 x 1 block has no map to draw
                ax.imshow(cam, cmap="magma", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
            mark = "✓" if p == t else "✗"
            ax.set_title(f"{mark} predicted {names[p]}\ntrue {names[t]}", fontsize=7,
                         color="black" if p == t else PALETTE[3])
        fig.suptitle(f"Grad-CAM ({run.result.get('deployment', {}).get('deploys', 'deployed model')}, layer4): "
                     f"{run.method} on {run.dataset}, noise {run.noise}, seed {run.seed}{coarse}", fontsize=8)
        name = _safe(f"gradcam-{run.dataset}-{run.noise}-{run.method}-seed{run.seed}")
        figure.data[name] = {"indices": indices, "predicted": predicted.tolist(), "true": true.tolist(),
                             "maps": maps}
        figure.files += save(fig, out, name)
    return figure
