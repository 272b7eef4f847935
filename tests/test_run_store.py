"""End-to-end runs on tiny synthfer: stored files, skip, --force, resume, NaN handling."""

from __future__ import annotations

import json

import numpy as np
import pytest

import nlbench
from conftest import TINY, read_result, run_dirs
from nlbench.plugins import get_registry


def test_run_stores_every_file_and_prints_the_result(cli, tmp_path):
    runs = tmp_path / "runs"
    result = cli("run", "--method", "standard", "--epochs", "2", "--seed", "3", "--runs-dir", str(runs), *TINY)
    assert result.code == 0, result.err
    [run] = run_dirs(runs)
    for name in ("spec.json", "status.json", "metrics.jsonl", "noisy_labels.npy", "model.pt", "result.json"):
        assert (run / name).is_file(), name
    # A finished run drops its resumable checkpoint and keeps the deployable weights, tensors only.
    assert not (run / "checkpoint.pt").exists() and not list(run.glob(".checkpoint.*"))
    import torch

    model = torch.load(run / "model.pt", weights_only=True)
    assert model["method"] == "standard" and set(model["weights"]) == {"net"}
    assert oct((run / "result.json").stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # not mkstemp's 0600
    assert json.loads((run / "status.json").read_text())["state"] == "done"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]
    stored = read_result(run)
    assert stored["method"] == "standard" and stored["seed"] == 3
    assert stored["initialisation"] == "random"
    model = stored["metrics"]["model"]
    assert set(model) >= {"last", "lastk", "best", "best_epoch", "curve"}
    assert len(stored["final"]["model"]["confusion_matrix"]) == 7
    assert sum(map(sum, stored["final"]["model"]["confusion_matrix"])) == stored["test_size"]
    noisy = np.load(run / "noisy_labels.npy")
    assert stored["noise"]["realised_rate"] == pytest.approx(float(np.mean(noisy != _clean_train_labels())))
    assert "deployable model" in result.out and str(run) in result.out.replace("\n", "")
    assert "acc_clean" in stored["diagnostics"] and "acc_noisy" in stored["diagnostics"]


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_keep_checkpoint_keeps_the_resumable_state_and_cct_deploys_only_its_student(cli, tmp_path):
    args = ["run", "--method", "cct", "--epochs", "1", "--runs-dir", str(tmp_path), "--keep-checkpoint",
            "--set", "methods.cct.networks=2", *TINY]
    assert cli(*args).code == 0
    [run] = run_dirs(tmp_path)
    assert (run / "checkpoint.pt").is_file()
    import torch

    assert set(torch.load(run / "model.pt", weights_only=True)["weights"]) == {"student"}


def _clean_train_labels():
    from nlbench.lib.synthface import sample_labels

    return sample_labels(96, 0)


def test_identical_finished_run_is_skipped_unless_forced(cli, tmp_path):
    args = ["run", "--method", "standard", "--epochs", "1", "--runs-dir", str(tmp_path), *TINY]
    assert cli(*args).code == 0
    [run] = run_dirs(tmp_path)
    first = (run / "result.json").stat().st_mtime_ns
    again = cli(*args)
    assert again.code == 0 and "already done" in again.err
    assert (run / "result.json").stat().st_mtime_ns == first
    forced = cli(*args, "--force")
    assert forced.code == 0 and (run / "result.json").stat().st_mtime_ns != first


def test_every_method_gets_the_same_noisy_labels(cli, tmp_path):
    for method in ("standard", "cct"):
        extra = ["--set", "methods.cct.distill_epochs=-1"] if method == "cct" else []
        assert cli("run", "--method", method, "--epochs", "1", "--noise", "0.4", "--runs-dir", str(tmp_path),
                   *TINY, *extra).code == 0
    labels = [np.load(run / "noisy_labels.npy") for run in run_dirs(tmp_path)]
    assert len(labels) == 2 and np.array_equal(labels[0], labels[1])


class StopAfter:
    """An observer plugin that interrupts the run after a given number of epochs."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.seen = 0

    @nlbench.hookimpl
    def on_epoch_end(self, run, record):
        self.seen += 1
        if self.seen == self.epochs:
            raise KeyboardInterrupt


def test_resume_gives_the_same_result_as_an_uninterrupted_run(cli, tmp_path):
    # CCT exercises both phases: the interruption falls inside the training phase, the
    # second one inside distillation.
    args = ["run", "--method", "cct", "--epochs", "3", "--noise", "0.3", *TINY,
            "--set", "methods.cct.networks=2", "--set", "methods.cct.distill_epochs=2"]
    whole = cli(*args, "--runs-dir", str(tmp_path / "whole"))
    assert whole.code == 0, whole.err
    manager = get_registry().manager
    resumed_root = tmp_path / "resumed"
    for stop_after in (2, 2):
        observer = StopAfter(stop_after)
        manager.register(observer)
        try:
            interrupted = cli(*args, "--runs-dir", str(resumed_root))
        finally:
            manager.unregister(observer)
        assert interrupted.code == 130
        [run] = run_dirs(resumed_root)
        assert not (run / "result.json").exists()  # a killed run never looks done
        assert json.loads((run / "status.json").read_text())["state"] == "interrupted"
    # As if the last attempt had been killed -9 while writing its checkpoint: a partial temp file
    # and a "running" status nobody holds the lock of.
    [run] = run_dirs(resumed_root)
    (run / ".checkpoint.pt.k9x2ab").write_bytes(b"half a checkpoint")
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "running"}))
    from nlbench.store import RunDir

    state = RunDir(run).state()
    assert state.state == "interrupted" and "1 partial file(s)" in state.detail
    final = cli(*args, "--runs-dir", str(resumed_root))
    assert final.code == 0, final.err
    assert "resuming" in final.err and "removed 1 partial file(s)" in final.err
    assert not (run / ".checkpoint.pt.k9x2ab").exists()
    a, b = read_result(run_dirs(tmp_path / "whole")[0]), read_result(run_dirs(resumed_root)[0])
    assert a["metrics"] == b["metrics"]
    assert a["final"] == b["final"]
    assert (a["cost"]["attempts"], b["cost"]["attempts"]) == (1, 3)  # the cost covers every attempt
    lines = (run_dirs(resumed_root)[0] / "metrics.jsonl").read_text().splitlines()
    assert [(json.loads(x)["phase"], json.loads(x)["epoch"]) for x in lines] == [
        ("train", 0), ("train", 1), ("train", 2), ("distill", 0), ("distill", 1)
    ]


NAN_PLUGIN = '''
import torch
import torch.nn.functional as F
import nlbench

class Exploding(nlbench.Method):
    """Trains normally, then returns a NaN loss at epoch 2, batch 2."""
    name = "exploding"
    summary = "test method whose loss becomes NaN"

    def build(self, ctx):
        super().build(ctx)
        self.net = ctx.backbone()
        self.opt = ctx.optimizer([self.net])
        self.steps = 0

    def on_epoch_start(self, phase, epoch):
        self.epoch = epoch
        self.steps = 0

    def train_step(self, batch, phase, epoch):
        self.steps += 1
        loss = F.cross_entropy(self.net(batch.x).float(), batch.y)
        if epoch == 1 and self.steps == 2:
            loss = loss * float("nan")
        self.opt.zero_grad()
        self.ctx.backward(loss)
        self.opt.step()
        return {"loss": loss.detach()}

    def predict(self, x):
        return self.net(x)

@nlbench.hookimpl
def register_methods(register):
    register(Exploding)
'''


def test_nan_loss_fails_the_run_naming_epoch_and_batch(cli, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "exploding.py").write_text(NAN_PLUGIN)
    config = tmp_path / "benchmark.toml"
    config.write_text(f'[plugins]\npaths = ["{plugins}"]\n')
    result = cli("run", "--config", str(config), "--method", "exploding", "--epochs", "3",
                 "--runs-dir", str(tmp_path / "runs"), *TINY)
    assert result.code == 1
    assert "epoch 2, batch 2" in result.err
    [run] = run_dirs(tmp_path / "runs")
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "batch 2" in status["error"]
    assert not (run / "result.json").exists()
    # the first epoch's metrics and checkpoint are kept
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert (run / "checkpoint.pt").is_file()


def test_relabel_counts_separate_restored_from_wrong_changes():
    import torch

    from nlbench.context import LabelStore
    from nlbench.train.epoch import relabel_counts

    clean = torch.tensor([0, 1, 2, 3, 4])
    store = LabelStore(np.array([0, 2, 2, 0, 4]), torch.device("cpu"))  # samples 1 and 3 are noisy
    store.relabel(torch.tensor([1, 3, 4]), torch.tensor([1, 2, 0]))  # restores 1, wrongly moves 3 and 4
    assert relabel_counts(store, clean) == {"labels_changed": 3, "labels_restored": 1, "relabel_events": 3}


def test_balanced_sampling_draws_classes_evenly():
    import torch

    from nlbench.settings import TrainSettings
    from nlbench.train.epoch import epoch_order

    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    counts = np.bincount(labels).astype(float)
    weights = torch.as_tensor(1.0 / counts[labels])
    order, steps = epoch_order(1000, TrainSettings(batch_size=100), torch.Generator().manual_seed(0), weights)
    drawn = np.bincount(labels[order.numpy()], minlength=3)
    assert steps == 10 and len(order) == 1000
    assert all(abs(d - 333) < 60 for d in drawn)


def test_step_meter_reports_memorisation_and_precision_and_none_for_empty_subsets():
    import torch

    from nlbench.train.epoch import StepMeter

    meter = StepMeter(torch.device("cpu"))
    y = torch.tensor([0, 1, 2, 0])
    is_noisy = torch.tensor([False, False, True, True])
    logits = torch.eye(3)[[0, 2, 2, 1]]  # right on samples 0 and 2 (against the given labels)
    meter.add({"loss": torch.tensor(1.0), "logits": logits, "selected": torch.tensor([True, True, True, False]),
               "lam": 0.5}, y, is_noisy)
    summary = meter.summary(1, "train", 0)
    assert summary["acc_clean"] == 50.0 and summary["acc_noisy"] == 50.0
    assert summary["label_precision"] == pytest.approx(200 / 3) and summary["lam"] == 0.5
    clean_only = StepMeter(torch.device("cpu"))
    clean_only.add({"loss": torch.tensor(1.0), "logits": logits}, y, torch.zeros(4, dtype=torch.bool))
    assert clean_only.summary(1, "train", 0)["acc_noisy"] is None


class _Payload:
    """Unpickling this calls os.system: what a hostile checkpoint.pt would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _interrupted_run(cli, tmp_path):
    """A run folder left with its checkpoint, as an interrupted run leaves it."""
    args = ["run", "--method", "standard", "--epochs", "3", "--runs-dir", str(tmp_path / "runs"), *TINY]
    observer = StopAfter(1)
    manager = get_registry().manager
    manager.register(observer)
    try:
        assert cli(*args).code == 130
    finally:
        manager.unregister(observer)
    [run] = run_dirs(tmp_path / "runs")
    assert (run / "checkpoint.pt").is_file()
    return args, run


def test_a_malicious_checkpoint_is_refused_without_running_its_code(cli, tmp_path):
    import torch

    args, run = _interrupted_run(cli, tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"run_id": "x", "method": _Payload(str(marker))}, run / "checkpoint.pt")
    result = cli(*args)
    assert result.code == 2
    assert "cannot be loaded safely" in result.err and "--force" in result.err
    assert "weights_only=False" not in result.err  # never torch's advice to switch the safety off
    assert not marker.exists(), "the pickle's code ran"


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, None])
def test_a_damaged_checkpoint_is_a_clear_message(cli, tmp_path, content):
    args, run = _interrupted_run(cli, tmp_path)
    path = run / "checkpoint.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if content is None else content)  # None: truncated
    result = cli(*args)
    assert result.code == 2 and "cannot resume" in result.err and "Traceback" not in result.err
    assert cli(*args, "--force").code == 0  # what the message says to do works


def test_a_run_killed_after_its_last_checkpoint_resumes_to_the_same_result(cli, tmp_path):
    args = ["run", "--method", "cct", "--epochs", "2", *TINY, "--set", "methods.cct.networks=2",
            "--set", "methods.cct.distill_epochs=1"]
    whole = cli(*args, "--runs-dir", str(tmp_path / "whole"))
    assert whole.code == 0, whole.err
    observer = StopAfter(3)  # after the last epoch's checkpoint, before result.json
    manager = get_registry().manager
    manager.register(observer)
    try:
        assert cli(*args, "--runs-dir", str(tmp_path / "cut")).code == 130
    finally:
        manager.unregister(observer)
    [run] = run_dirs(tmp_path / "cut")
    assert not (run / "result.json").exists() and (run / "checkpoint.pt").is_file()
    final = cli(*args, "--runs-dir", str(tmp_path / "cut"))
    assert final.code == 0, final.err
    a, b = read_result(run_dirs(tmp_path / "whole")[0]), read_result(run)
    assert a["metrics"] == b["metrics"] and a["final"] == b["final"]


def test_a_checkpoint_interval_saves_only_at_phase_ends_and_resumes_exactly(cli, tmp_path):
    args = ["run", "--method", "cct", "--epochs", "3", *TINY, "--set", "methods.cct.networks=2",
            "--set", "methods.cct.distill_epochs=1"]
    whole = cli(*args, "--runs-dir", str(tmp_path / "whole"))
    assert whole.code == 0, whole.err
    sparse = [*args, "--set", "train.checkpoint_interval=3600", "--runs-dir", str(tmp_path / "sparse")]
    manager = get_registry().manager
    seen = []
    for stop_after in (2, 3):
        observer = StopAfter(stop_after)
        manager.register(observer)
        try:
            assert cli(*sparse).code == 130
        finally:
            manager.unregister(observer)
        [run] = run_dirs(tmp_path / "sparse")
        seen.append((run / "checkpoint.pt").is_file())
    # Killed inside the training phase: no checkpoint yet (the interval had not passed), so the
    # second attempt started over; killed after the phase's last epoch: its checkpoint is there.
    assert seen == [False, True]
    final = cli(*sparse)
    assert final.code == 0, final.err
    assert "resuming" in final.err and "distill epoch 1" in final.err
    [a_dir], [b_dir] = run_dirs(tmp_path / "whole"), run_dirs(tmp_path / "sparse")
    assert a_dir.name == b_dir.name  # a runtime setting: the same run id
    a, b = read_result(a_dir), read_result(b_dir)
    assert a["metrics"] == b["metrics"] and a["final"] == b["final"]


@pytest.mark.parametrize("content", ["", "{}", "null", '{"metrics": ', "[1, 2]"])
def test_a_damaged_result_never_crashes_table_status_or_a_rerun(cli, tmp_path, content):
    runs = tmp_path / "runs"
    args = ["run", "--method", "standard", "--epochs", "1", "--runs-dir", str(runs), *TINY]
    assert cli(*args).code == 0
    assert cli(*args, "--seed", "2").code == 0
    first, second = run_dirs(runs)
    keep = (second / "result.json").read_bytes()
    (first / "result.json").write_text(content)
    table = cli("table", "--runs-dir", str(runs))
    assert table.code == 0 and "skipped 1 damaged result file" in table.err and str(first) in table.err
    status = cli("status", "--runs-dir", str(runs))
    assert status.code in (0, 1) and "Traceback" not in status.err
    rerun = cli(*args)
    assert rerun.code == 2 and "is damaged" in rerun.err and "--force" in rerun.err
    assert (second / "result.json").read_bytes() == keep  # nothing stored before is lost
    assert cli(*args, "--force").code == 0
