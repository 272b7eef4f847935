"""Loggers (--logger): the TensorBoard logger's curves are metrics.jsonl's, resumes draw no point
twice, sweeps log too, loggers never stay behind or change a run, and the W&B example plugin logs
the same numbers through a fake ``wandb`` module."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

import nlbench
from conftest import TINY, run_dirs
from nlbench.plugins import get_registry
from nlbench.registry import LOGGER_PLUGIN

EXAMPLE_PLUGINS = Path(__file__).resolve().parents[1] / "examples" / "plugins"
STANDARD = ["--method", "standard", "--noise", "0.4", "--seed", "1", *TINY]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar curve of a run's tensorboard folder as TensorBoard reads it: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def same_curve(curve: list[tuple[int, float]], values: list[float]) -> bool:
    """Whether a TensorBoard curve has one point per epoch (steps 1, 2, ...) with these values."""
    return [s for s, _ in curve] == list(range(1, len(values) + 1)) and [v for _, v in curve] == pytest.approx(values)


def enabled_loggers() -> list[str]:
    return [name for name, _ in get_registry().manager.list_name_plugin() if name and name.startswith(LOGGER_PLUGIN)]


def test_tensorboard_logs_every_members_curves_equal_to_metrics_jsonl(cli, tmp_path):
    pytest.importorskip("tensorboard")
    ran = cli("run", "--method", "coteaching", "--epochs", "2", *TINY, "--runs-dir", str(tmp_path), "--quiet",
              "--logger", "tensorboard", "--logger", "tensorboard")  # a repeated name is one logger
    assert ran.code == 0, ran.err
    [run] = run_dirs(tmp_path)
    records, curves = metrics(run), scalars(run)
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2  # the epochs, then the hparams
    for member in ("net1", "net2", "model"):  # every member's test and noisy-validation accuracy
        assert same_curve(curves[f"test/{member}"], [r["test"][member] for r in records])
        assert same_curve(curves[f"val/{member}"], [r["val"][member] for r in records])
    assert same_curve(curves["train/loss"], [r["train"]["loss"] for r in records])
    assert same_curve(curves["train/label_precision"], [r["train"]["label_precision"] for r in records])
    assert same_curve(curves["lr"], [r["lr"] for r in records])
    assert [s for s, _ in curves["images_per_s"]] == [1, 2]
    assert "logger" not in (run / "spec.json").read_text()  # not part of the run's identity
    assert enabled_loggers() == []  # gone once the command ends: the next run in this process has none


@pytest.mark.parametrize(("epochs", "stop_after", "interval", "restart_at"), [
    (2, 1, 3600, 1),  # no checkpoint yet: the run restarts, attempt 1's epoch is drawn again, once
    (3, 2, 0, 3),  # a checkpoint every epoch: the run resumes at epoch 3
])
def test_a_resumed_run_draws_no_epoch_twice(cli, tmp_path, epochs, stop_after, interval, restart_at):
    """An interrupted run goes on where its checkpoint is: its new event file starts with
    TensorBoard's purge mark at that step, and every epoch is shown once, as metrics.jsonl has it."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    class Stop:
        seen = 0

        @nlbench.hookimpl
        def on_epoch_end(self, run, record):
            Stop.seen += 1
            if Stop.seen == stop_after:
                raise KeyboardInterrupt

    args = ["run", *STANDARD, "--epochs", str(epochs), "--set", f"train.checkpoint_interval={interval}",
            "--runs-dir", str(tmp_path), "--logger", "tensorboard", "--quiet"]
    observer = Stop()
    get_registry().manager.register(observer)  # before the logger: called after it, so its epoch is logged
    try:
        assert cli(*args).code == 130
    finally:
        get_registry().manager.unregister(observer)
    [run] = run_dirs(tmp_path)
    assert [s for s, _ in scalars(run)["test/model"]] == list(range(1, stop_after + 1))
    again = cli(*args)
    assert again.code == 0, again.err
    files = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 3  # attempt 1, attempt 2, the hparams
    starts = [(e.session_log.status, e.step) for f in files for e in EventFileLoader(str(f)).Load()
              if e.HasField("session_log")]
    assert starts == [(1, restart_at)]  # SessionLog.START: TensorBoard drops attempt 1's points from there
    records = metrics(run)
    assert len(records) == epochs
    for tag, values in (("test/model", [r["test"]["model"] for r in records]),
                        ("train/loss", [r["train"]["loss"] for r in records])):
        assert same_curve(scalars(run)[tag], values)


def test_a_sweep_logs_each_run_and_a_forced_retrain_replaces_the_curves(cli, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ["sweep", "--methods", "standard", "--seeds", "1", "--epochs", "1", "--jobs", "1", "--no-table", "--quiet",
            *TINY, "--runs-dir", str(tmp_path)]
    bad = cli(*args, "--logger", "tensorbord")
    assert bad.code == 2 and "unknown logger 'tensorbord'" in bad.err and "tensorboard" in bad.err
    assert not run_dirs(tmp_path)
    try:
        ran = cli(*args, "--logger", "tensorboard")
    finally:  # --jobs 1 trains in this process, whose workers keep their loggers until it exits
        get_registry().enable_loggers([])
    assert ran.code == 0, ran.err
    [run] = run_dirs(tmp_path)
    assert same_curve(scalars(run)["test/model"], [metrics(run)[0]["test"]["model"]])
    # --force retrains a done run beside it and moves it into place before the run's end
    forced = cli("run", "--method", "standard", "--seed", "1", "--epochs", "1", *TINY, "--runs-dir", str(tmp_path),
                 "--force", "--quiet", "--logger", "tensorboard")
    assert forced.code == 0, forced.err
    assert run_dirs(tmp_path) == [run] and same_curve(scalars(run)["test/model"], [metrics(run)[0]["test"]["model"]])
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def test_unknown_logger_and_missing_package_are_usage_errors(cli, tmp_path, monkeypatch):
    unknown = cli("run", *STANDARD, "--epochs", "1", "--runs-dir", str(tmp_path), "--logger", "nope")
    assert unknown.code == 2 and "unknown logger 'nope'. Known loggers:" in unknown.err and "tensorboard" in unknown.err
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    missing = cli("run", *STANDARD, "--epochs", "1", "--runs-dir", str(tmp_path), "--logger", "tensorboard")
    assert missing.code == 2 and "pip install 'nlbench[tensorboard]'" in missing.err, missing.err
    assert not run_dirs(tmp_path) and enabled_loggers() == []


class FakeWandb(types.ModuleType):
    """A stand-in for the wandb package that records what it is asked to do."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.calls: list[tuple[str, dict]] = []

    def init(self, **kwargs):
        self.calls.append(("init", kwargs))
        return object()

    def log(self, data, step=None):
        self.calls.append(("log", {"data": dict(data), "step": step}))

    def finish(self, **kwargs):
        self.calls.append(("finish", kwargs))


def test_the_wandb_example_plugin_logs_metrics_jsonl(cli, tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    config = tmp_path / "benchmark.toml"
    config.write_text(f'[plugins]\npaths = ["{EXAMPLE_PLUGINS.as_posix()}"]\n')
    ran = cli("run", *STANDARD, "--epochs", "2", "--config", str(config), "--runs-dir", str(tmp_path / "runs"),
              "--quiet", "--logger", "wandb")
    assert ran.code == 0, ran.err
    [run] = run_dirs(tmp_path / "runs")
    spec = json.loads((run / "spec.json").read_text())
    kinds = [kind for kind, _ in fake.calls]
    assert kinds == ["init", "log", "log", "finish"]
    init = fake.calls[0][1]
    assert init["name"] == spec["run_id"] and init["config"] == spec and init["project"] == "nlbench"
    for (_, logged), step, record in zip(fake.calls[1:3], (1, 2), metrics(run)):
        assert logged["step"] == step
        assert logged["data"]["test/model"] == pytest.approx(record["test"]["model"])
        assert logged["data"]["train/loss"] == pytest.approx(record["train"]["loss"])
    assert fake.calls[3][1] == {"exit_code": 0}

    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed
    missing = cli("run", *STANDARD, "--epochs", "1", "--config", str(config), "--runs-dir", str(tmp_path / "other"),
                  "--logger", "wandb")
    assert missing.code == 2 and "pip install wandb" in missing.err
