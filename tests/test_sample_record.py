"""The per-sample record: what a method decided about each training sample in each epoch, exported.

Three tiny synthfer runs are trained once for the module (Co-teaching with a fast forget-rate ramp,
SCN relabelling from the first epoch, Standard); each test reads them through
``nlbench export --samples`` and checks the rows against what the method's schedule, the run's
metrics and its noise say.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TINY, run_dirs, whole_and_resumed
from nlbench.cli import main
from nlbench.errors import RunFailed
from nlbench.lib.selection import coteaching_forget_rate, keep_count
from nlbench.plugins import get_registry
from nlbench.store import SAMPLE_LABELS, SAMPLES, RunDir, sample_file
from nlbench.train.epoch import SampleRecorder, score_name

EPOCHS = 2
COMMON = ["run", "--epochs", str(EPOCHS), "--noise", "0.4", "--device", "cpu", *TINY]
#: Co-teaching whose forget rate reaches tau = 0.4 in the second epoch: 0, then 0.4.
COTEACHING = ["--method", "coteaching", "--set", "methods.coteaching.num_gradual=1"]
#: SCN relabelling every sample whose prediction beats its label, from the first epoch on.
SCN = ["--method", "scn", "--set", "methods.scn.relabel_epoch=1", "--set", "methods.scn.relabel=all",
       "--set", "methods.scn.relabel_threshold=0.0"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three runs' folders, by method."""
    root = tmp_path_factory.mktemp("samples") / "runs"
    for extra in (COTEACHING, SCN, ["--method", "standard"]):
        try:
            main([*COMMON, "-q", *extra, "--runs-dir", str(root)])
        except SystemExit as exit_:
            assert exit_.code in (0, None)
    return {path.parts[-3]: path for path in run_dirs(root)}


def export(cli, *args: str) -> pd.DataFrame:
    out = cli("export", "--samples", *args)
    assert out.code == 0, out.err
    return pd.read_csv(io.StringIO(out.out), keep_default_na=False, na_values=[""])


def history(run: Path) -> list[dict]:
    return RunDir(run).read_metrics()[0]


@pytest.mark.slow  # the module's three runs: about 40 s on a busy 2-core CPU
def test_rows_are_samples_times_epochs_with_the_runs_noise(cli, store, tmp_path):
    run = store["standard"]
    rows = export(cli, str(run))
    n = json.loads((run / "result.json").read_text())["noise"]["trained"]["samples"]
    assert len(rows) == n * EPOCHS
    assert list(rows.columns) == ["index", "image", "clean_label", "noisy_label", "epoch", "phase", "seen",
                                  "selected", "score", "label_used", "relabelled_to"]
    assert sorted(set(rows["epoch"])) == [1, 2] and set(rows["phase"]) == {"train"}
    # Standard selects nothing: "selected" is unknown (empty), not all true; it has no score either.
    assert rows["selected"].isna().all() and rows["score"].isna().all() and rows["relabelled_to"].isna().all()
    assert (rows["label_used"] == rows["noisy_label"]).all()
    # The clean and noisy columns are the run's noise: its transition matrix and its noisy labels.
    noise = json.loads((run / "result.json").read_text())["noise"]
    first = rows[rows["epoch"] == 1]
    classes = list(get_registry().dataset("synthfer").class_names)
    counts = pd.crosstab(pd.Categorical(first["clean_label"], classes), pd.Categorical(first["noisy_label"], classes),
                         dropna=False).to_numpy()
    assert counts.tolist() == noise["transitions"]
    assert (first["clean_label"] != first["noisy_label"]).sum() == noise["trained"]["wrong"]
    file = tmp_path / "noise.csv"
    assert cli("noise", "export", "--noise", "0.4", "--out", str(file), *TINY).code == 0
    exported = pd.read_csv(file, comment="#", dtype={"name": str})
    by_name = dict(zip(exported["name"], exported["class"]))
    assert [by_name[str(name)] for name in first["image"]] == first["noisy_label"].tolist()


@pytest.mark.slow  # the module's three runs: about 40 s on a busy 2-core CPU
def test_coteaching_selects_the_share_its_forget_rate_keeps(cli, store):
    run = store["coteaching"]
    rows = export(cli, run.name.split("-", 1)[1], "--runs-dir", str(run.parents[3]))  # by run id
    batch = 32
    for epoch in range(EPOCHS):
        part = rows[rows["epoch"] == epoch + 1]
        seen = part["seen"] > 0
        # Judged exactly where seen (Co-teaching says for every sample of every batch); unseen: unknown.
        assert (part["selected"].notna() == seen).all()
        n_steps = int(part["seen"].sum()) // batch
        keep = keep_count(batch, coteaching_forget_rate(epoch, 0.4, 1))
        assert int(part["selected"].fillna(False).astype(bool).sum()) == n_steps * keep, epoch
        record = history(run)[epoch]["train"]
        assert record["selected_per_step"] == pytest.approx(keep)
    assert keep_count(batch, coteaching_forget_rate(1, 0.4, 1)) < batch  # the check above did select


@pytest.mark.slow  # the module's three runs: about 40 s on a busy 2-core CPU
def test_scn_shows_relabelled_samples_and_its_weights(cli, store):
    run = store["scn"]
    rows = export(cli, str(run))
    assert "weight" in rows.columns and "score" not in rows.columns
    for epoch, record in enumerate(history(run)):
        part = rows[rows["epoch"] == epoch + 1]
        relabelled = part["relabelled_to"].notna()
        assert relabelled.sum() == record["train"]["labels_changed"]
        assert (part.loc[relabelled, "relabelled_to"] != part.loc[relabelled, "noisy_label"]).all()
        used = part["relabelled_to"].where(relabelled, part["noisy_label"])
        assert (part["label_used"] == used).all()
        seen = part["seen"] > 0
        assert part.loc[seen, "weight"].between(0, 1).all() and part.loc[~seen, "weight"].isna().all()
    assert rows[rows["epoch"] == EPOCHS]["relabelled_to"].notna().sum() > 0


@pytest.mark.slow  # the module's three runs: about 40 s on a busy 2-core CPU
def test_formats_and_a_run_without_record(cli, store, tmp_path):
    run = store["coteaching"]
    out = cli("export", "--samples", str(run), "--format", "jsonl")
    first = json.loads(out.out.splitlines()[0])
    assert first["selected"] is True and first["score"] is None and first["epoch"] == 1
    target = tmp_path / "rows.csv"
    assert cli("export", "--samples", str(run), "--out", str(target)).code == 0
    assert cli("export", "--samples", str(run), "--out", str(target)).code == 0  # ours: replaced
    assert cli("export", "--samples", str(run), "--methods", "standard").code == 2
    old = tmp_path / "old-run"
    (old / SAMPLES).mkdir(parents=True)
    (old / "spec.json").write_text((run / "spec.json").read_text())
    (old / "result.json").write_text((run / "result.json").read_text())
    out = cli("export", "--samples", str(old))
    assert out.code == 2 and "no per-sample record" in out.err and "--force" in out.err
    (old / SAMPLE_LABELS).write_bytes(b"not a zip")
    out = cli("export", "--samples", str(old))
    assert out.code == 2 and "damaged" in out.err
    # Resumed by this nlbench from an older checkpoint: the epochs before it have no record, and say so.
    partial = tmp_path / "partial"
    shutil.copytree(run, partial)
    (partial / sample_file("train", 0)).unlink()
    out = cli("export", "--samples", str(partial))
    assert out.code == 0 and "1 epoch(s)" in out.err and "train 1" in out.err
    assert set(pd.read_csv(io.StringIO(out.out))["epoch"]) == {2}


def test_recorder_counts_repeats_and_keeps_the_last_score():
    labels = RunDirLabels(torch.tensor([0, 1, 2, 1]))
    recorder = SampleRecorder(4, 3, torch.device("cpu"))
    recorder.add(torch.tensor([0, 1, 1]), {"selected": torch.tensor([False, True, False]),
                                           "sample_score": torch.tensor([0.5, 0.25, 0.75])}, "here")
    recorder.add(torch.tensor([0, 2]), {"selected": torch.tensor([False, False]),
                                        "sample_score": torch.tensor([0.125, 1.0])}, "here")
    recorder.add(torch.tensor([3]), {"loss": torch.tensor(0.0)}, "here")
    labels.current[2] = 0
    record = recorder.finish(labels)
    assert record["seen"].tolist() == [2, 2, 1, 1]
    assert record["selected"].tolist() == [0, 1, 0, -1]  # any batch selected it; 3: never judged
    assert record["score"].tolist() == [0.125, 0.75, 1.0, pytest.approx(float("nan"), nan_ok=True)]
    assert record["relabelled_to"].tolist() == [-1, -1, 0, -1]
    with pytest.raises(RunFailed, match="one value per sample"):
        recorder.add(torch.tensor([0, 1]), {"selected": torch.tensor([True])}, "here")


class RunDirLabels:
    """A stand-in label store: given labels and the current (possibly relabelled) ones."""

    def __init__(self, given: torch.Tensor) -> None:
        self.given, self.current = given, given.clone()


def test_score_names_are_checked():
    class Named:
        sample_score_name = "epoch"

    with pytest.raises(RunFailed, match="sample_score_name"):
        score_name(Named())  # type: ignore[arg-type]
    Named.sample_score_name = "weight"
    assert score_name(Named()) == "weight"  # type: ignore[arg-type]


@pytest.mark.slow
def test_resumed_run_records_what_a_whole_run_records(cli, tmp_path):
    args = [*COMMON, *SCN]
    whole, resumed = whole_and_resumed(cli, tmp_path, args)
    assert whole["run_id"] == resumed["run_id"]
    a, b = run_dirs(tmp_path / "whole")[0], run_dirs(tmp_path / "resumed")[0]
    files = sorted(p.name for p in (a / SAMPLES).iterdir())
    assert files == ["labels.npz", Path(sample_file("train", 0)).name, Path(sample_file("train", 1)).name]
    assert files == sorted(p.name for p in (b / SAMPLES).iterdir())
    for name in files:
        assert (a / SAMPLES / name).read_bytes() == (b / SAMPLES / name).read_bytes(), name


def test_restart_without_checkpoint_drops_stale_epochs(tmp_path):
    run = RunDir(tmp_path)
    for epoch in range(3):
        run.write_npz(sample_file("train", epoch), {"seen": np.ones(2, dtype=np.uint8)})
    run.prune_samples({sample_file("train", 0)})
    assert sorted(p.name for p in (tmp_path / SAMPLES).iterdir()) == ["train-epoch-0001.npz"]
    assert run.file(sample_file("train", 0)).read_bytes() == _npz(run, {"seen": np.ones(2, dtype=np.uint8)})


def _npz(run: RunDir, arrays: dict) -> bytes:
    """The bytes ``write_npz`` gives ``arrays`` (written twice: equal bytes, no timestamp)."""
    run.write_npz("again.npz", arrays)
    return run.file("again.npz").read_bytes()
