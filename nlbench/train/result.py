"""The one place a run's result is built: everything result.json says, from the spec and the trained run.

Its schema, and the checks every reader applies, are :mod:`nlbench.result`; the result is checked
against it here too, so a field this function writes wrongly fails the run that wrote it, not a
reader months later.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import torch

from nlbench.code_identity import code_record
from nlbench.data.noise import trained_noise
from nlbench.environment import describe_environment, peak_memory_mb
from nlbench.fileio import json_default
from nlbench.result import Result, parse_result
from nlbench.spec.runspec import RunSpec
from nlbench.train.assemble import Assembly
from nlbench.train.evaluate import confusion, per_class_report
from nlbench.train.model_selection import summarise_history


def build_result(spec: RunSpec, method_cls: type, run: Assembly, history: list[dict[str, Any]],
                 predictions: dict[str, torch.Tensor], cost: dict[str, Any]) -> Result:
    """The result of a finished run: identity, settings, metrics of every selection rule, per-class
    results, noise, cost and environment. ``cost`` holds what the engine measured: ``seconds``,
    ``attempts`` and ``train_images_per_s``."""
    dataset = run.dataset
    classes = tuple(dataset.class_names)
    matrix = confusion(predictions["model"], run.test_labels, dataset.num_classes)
    members = {
        name: per_class_report(confusion(pred, run.test_labels, dataset.num_classes), classes)
        for name, pred in predictions.items() if name != "model"
    }
    identity, recorded = spec.identity(), spec.to_json()
    record = {
        "run_id": spec.run_id,
        "method": spec.method,
        "dataset": spec.data.name,
        **({"dataset_plugin": spec.data.plugin} if spec.data.plugin else {}),  # an instance of another plugin
        "dataset_version": spec.data.version,
        "dataset_options": dict(spec.data.options),
        "data_fingerprint": spec.data.fingerprint,
        "noise": noise_record(spec, run, dataset.num_classes),
        "seed": spec.seed,
        **{f"hp_{k}": v for k, v in spec.hparams.items()},
        "hparams": dict(spec.hparams),
        "train": identity["train"],
        # Recorded, not part of the run id: where it ran and how fast (settings that change no number).
        "runtime": {"device": str(run.device), "cache_dir": spec.cache_dir,
                    **{k: v for k, v in recorded["train"].items() if k not in identity["train"]}},
        "uses_noise_rate": bool(method_cls.uses_noise_rate),
        **({"forget_rate_from": forget_rate_source(spec)} if method_cls.uses_noise_rate else {}),
        "pretrained": ({"sha256": spec.pretrained_sha256, "path": spec.train.pretrained}
                       if spec.pretrained_sha256 else None),
        "initialisation": "pretrained file" if spec.pretrained_sha256 else "random",
        "metrics": summarise_history(history, spec.train.last_k),
        "final": {"model": per_class_report(matrix, classes), "members": members},
        "diagnostics": history[-1]["train"] if history else {},
        "selection_rule": ("val = test accuracy of the epoch with the highest accuracy on the held-out noisy "
                           "validation split; best = highest test accuracy over epochs (selected on the test "
                           "set: an oracle)"),
        "deployment": run.method.deployment(),
        "validation": {"fraction": spec.train.val_fraction, "size": int(run.val_index.size),
                       "labels": "noisy (as trained on)"},
        "cost": {
            "network_epochs": sum(run.method.trained_networks(p) * p.epochs for p in run.method.phases()),
            # Forward-backward passes over the training set: EAC passes each image and its flip.
            "pass_epochs": float(run.method.passes_per_step)
            * sum(run.method.trained_networks(p) * p.epochs for p in run.method.phases()),
            # Measured work (methods whose steps report it): image-passes / N, scans included.
            **work_epochs(history, int(run.labels.given.numel())),
            # Every attempt's epochs up to its last checkpoint (work lost after one is not counted):
            # seconds, attempts and training images per second, measured by the engine.
            **cost,
            "peak_memory_mb": peak_memory_mb(run.device),
            # Per-sample state a method keeps (ELR's targets): memory beside the networks.
            **({"sample_state_mb": sum(state.megabytes for state in run.ctx.sample_states.values())}
               if run.ctx.sample_states else {}),
        },
        "environment": describe_environment(run.device),
        "code": code_record(method_cls, type(dataset)),
        "test_size": int(run.test_labels.numel()),
        "test_split": test_split_record(run),
        "finished": time.time(),
    }
    # Checked as it will be stored (numpy numbers become JSON numbers), so what readers get is what passed.
    return parse_result(json.loads(json.dumps(record, default=json_default)), "the result the engine built")


def work_epochs(history: list[dict[str, Any]], n: int) -> dict[str, float]:
    """``{"work_epochs": sum of the epochs' work and scan work / N}`` when the method's steps report
    ``work`` (nlbench.Method), else nothing."""
    trains = [r.get("train", {}) for r in history]
    if not n or not any("work" in t for t in trains):
        return {}
    return {"work_epochs": sum((t.get("work") or 0.0) + (t.get("scan_work") or 0.0) for t in trains) / n}


def test_split_record(run: Assembly) -> dict[str, Any]:
    """What identifies the test split: its size, per-class counts and the SHA-256 of its samples'
    names (relative to the data root) and labels. Runs with other digests never share a table column."""
    import hashlib

    from nlbench.data.noise_file import sample_names

    table = run.test.table
    labels = np.asarray(table.labels, dtype=np.int64)
    digest = hashlib.sha256()
    for name, label in zip(sample_names(table.refs, run.dataset.root), labels.tolist()):
        digest.update(f"{name}\t{label}\n".encode())
    return {"size": int(labels.size), "sha256": digest.hexdigest(),
            "class_counts": np.bincount(labels, minlength=run.dataset.num_classes).tolist()}


def noise_record(spec: RunSpec, run: Assembly, num_classes: int) -> dict[str, Any]:
    """What the result says about the run's label noise: settings, realised rate, transitions (counts)."""
    clean = run.train.table.labels
    trained = trained_noise(clean, run.noisy, run.train_index, tuple(run.dataset.class_names))
    record: dict[str, Any] = {"rate": spec.noise.rate, "mode": spec.noise.mode, "source": spec.noise.source,
                              # Of the whole training split (what sets a forget rate from real noise).
                              "realised_rate": run.realised_rate,
                              # Rows: clean class, columns: the label trained on; the samples trained
                              # on (after the validation hold-out and train_size), as "trained" says.
                              "transitions": trained.pop("transitions"), "trained": trained}
    if run.noise.note:
        record["note"] = run.noise.note
    rule = getattr(run.train.table, "noise_rule", "given")
    if spec.noise.source == "dataset" and rule != "given":
        record["rule"] = rule  # drawn from votes: the rate differs a little per seed, the rule does not
    if run.noise.seed is not None:
        record["generator_seed"] = run.noise.seed
    if spec.noise.source == "file":
        record["file"] = {"path": spec.noise.file, "sha256": spec.noise.file_sha256}
    return record


def forget_rate_source(spec: RunSpec) -> str:
    """Where a noise-rate-driven method's forget rate came from, for the result."""
    if spec.hparams.get("forget_rate", -1.0) != -1.0:
        return "the forget_rate option"
    if spec.noise.source == "dataset":
        return "the realised rate of the dataset's own noisy labels"
    return "the injected noise rate"
