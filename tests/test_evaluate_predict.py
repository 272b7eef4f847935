"""nlbench evaluate, nlbench predict and table --layout cross on tiny synthfer runs trained here."""

from __future__ import annotations

import csv
import io
import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, read_result, run_dirs

#: The options of the runs' own synthfer (TINY), as --set items of `evaluate`.
OWN = [item for item in TINY if item.startswith("datasets.")]
OTHER_SEED = [flag for item in [*OWN, "datasets.synthfer.options.seed=3"] for flag in ("--set", item)]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Standard on synthfer at 20% noise, seeds 1 and 2, one epoch each."""
    from nlbench.cli import main

    root = tmp_path_factory.mktemp("transfer") / "runs"
    with pytest.MonkeyPatch.context() as patch:  # the autouse isolation is per test: keep caches out of ~
        patch.setenv("NLBENCH_CACHE", str(root.parent / "cache"))
        for seed in ("1", "2"):
            try:
                main(["run", "--method", "standard", "--epochs", "1", "--seed", seed, "--device", "cpu", "-q",
                      "--runs-dir", str(root), *TINY])
            except SystemExit as exit_:
                assert exit_.code in (0, None)
    return root


def _run(store: Path, seed: int) -> Path:
    return next(p for p in run_dirs(store) if p.name.startswith(f"seed{seed}-"))


def _faces(root: Path, split: str, count: int, seed: int, rename: dict[str, str] | None = None) -> None:
    """``count`` synthfer faces as PNG files in ``root/split/<class>/`` (16 px: the runs' storage size);
    the train split gets every class (imagefolder skips test classes missing from train/)."""
    from PIL import Image

    from nlbench.lib.synthface import CLASS_NAMES, render_faces, sample_labels

    labels = np.arange(count) % len(CLASS_NAMES) if split == "train" else sample_labels(count, seed)
    for i, (label, pixels) in enumerate(zip(labels, render_faces(labels, 16, seed))):
        folder = root / split / (rename or {}).get(CLASS_NAMES[label], CLASS_NAMES[label])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.transpose(1, 2, 0)).save(folder / f"{i:03d}.png")


def _folder_dataset(root: Path, rename: dict[str, str] | None = None) -> Path:
    _faces(root, "train", 14, 20, rename)
    _faces(root, "test", 35, 21, rename)
    return root


def _evaluations(run: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run / "evaluations").glob("*.json"))]


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_evaluating_the_runs_own_test_split_gives_the_stored_result(cli, store):
    run = _run(store, 1)
    shown = cli("evaluate", str(run), "--dataset", "synthfer", "--device", "cpu",
                *[flag for item in OWN for flag in ("--set", item)])
    assert shown.code == 0, shown.err
    [record] = _evaluations(run)
    stored = read_result(run)
    # The engine's own last-epoch evaluation and model.pt evaluated here agree exactly.
    assert record["scores"]["accuracy"] == pytest.approx(stored["metrics"]["model"]["last"], abs=1e-4)  # float32 there
    assert record["report"]["confusion_matrix"] == stored["final"]["model"]["confusion_matrix"]
    assert record["own_data"] and "this is the run's own test split" in shown.out
    assert f"accuracy {record['scores']['accuracy']:.2f}%" in shown.out
    assert all(len(line) <= 80 for line in shown.out.splitlines() if not line.startswith("stored in"))


def test_evaluate_equals_the_accuracy_computed_from_predict_csv(cli, store, tmp_path):
    run = _run(store, 1)
    data = _folder_dataset(tmp_path / "faces")  # folders in alphabetical order: another class order than the model's
    shown = cli("evaluate", run.name.split("-")[1][:6], "--runs-dir", str(store), "--dataset", "imagefolder",
                "--data-root", str(data), "--set", "datasets.imagefolder.options.size=16", "--device", "cpu")
    assert shown.code == 0, shown.err
    [record] = [r for r in _evaluations(run) if r["target"]["root"] == str(data.resolve())]
    out = tmp_path / "p.csv"
    predicted = cli("predict", str(run), "--folder", str(data / "test"), "--out", str(out), "--device", "cpu")
    assert predicted.code == 0, predicted.err
    rows = _csv_rows(out.read_text())
    names = record["report"]["class_names"]
    assert list(rows[0]) == ["path", "predicted", *names]
    assert len(rows) == record["samples"] == 35
    for row in rows:  # probabilities of every class, summing to 1, the predicted one the largest
        p = np.array([float(row[n]) for n in names])
        assert p.sum() == pytest.approx(1.0, abs=1e-4) and names[int(p.argmax())] == row["predicted"]
    truth = [Path(row["path"]).parent.name for row in rows]
    hits = [t == row["predicted"] for t, row in zip(truth, rows)]
    assert record["scores"]["accuracy"] == pytest.approx(100 * sum(hits) / len(hits), abs=1e-9)
    recalls = [np.mean([h for h, t in zip(hits, truth) if t == n]) for n in names if n in truth]
    assert record["scores"]["balanced_accuracy"] == pytest.approx(100 * np.mean(recalls), abs=1e-9)
    matrix = np.zeros((len(names), len(names)), dtype=int)
    for t, row in zip(truth, rows):
        matrix[names.index(t), names.index(row["predicted"])] += 1
    assert record["report"]["confusion_matrix"] == matrix.tolist()


def test_class_names_are_matched_by_name_with_a_clear_error_map_and_drop(cli, store, tmp_path):
    run = _run(store, 1)
    data = _folder_dataset(tmp_path / "faces", rename={"happiness": "happy", "fear": "contempt"})
    base = ["evaluate", str(run), "--dataset", "imagefolder", "--data-root", str(data), "--device", "cpu",
            "--set", "datasets.imagefolder.options.size=16"]
    refused = cli(*base)
    assert refused.code == 2 and "Traceback" not in refused.err
    assert "does not know: contempt, happy" in refused.err
    assert "neutral, happiness, surprise, sadness, anger, disgust, fear" in refused.err  # the model's classes
    assert "anger, contempt, disgust, happy, neutral, sadness, surprise" in refused.err  # the target's
    assert "--map happy=happiness" in refused.err and "--drop-unknown" in refused.err
    assert not [r for r in _evaluations(run) if r["target"]["root"] == str(data.resolve())]
    assert cli(*base, "--map", "happy=joyful").code == 2  # not a model class
    assert cli(*base, "--map", "happy").code == 2
    done = cli(*base, "--map", "happy=happiness", "--drop-unknown")
    assert done.code == 0, done.err
    [record] = [r for r in _evaluations(run) if r["target"]["root"] == str(data.resolve())]
    contempt = len(list((data / "test" / "contempt").glob("*.png")))
    assert record["classes"]["dropped"] == {"contempt": contempt} and record["dropped_samples"] == contempt
    assert record["samples"] == 35 - contempt and record["classes"]["model_only"] == ["fear"]
    assert f"{contempt} of 35 images left out" in done.out and "classes the target lacks: fear" in done.out
    # The same numbers from predict: happy counts as happiness, every 'fear' answer is wrong.
    rows = _csv_rows(cli("predict", str(run), "--folder", str(data / "test"), "--device", "cpu").out)
    kept = [(Path(r["path"]).parent.name.replace("happy", "happiness"), r["predicted"]) for r in rows
            if Path(r["path"]).parent.name != "contempt"]
    assert record["scores"]["accuracy"] == pytest.approx(100 * np.mean([t == p for t, p in kept]), abs=1e-9)
    assert record["predicted_outside"] == sum(p == "fear" for _, p in kept)


def test_a_rerun_replaces_its_file_and_another_target_gets_its_own(cli, store):
    run = _run(store, 2)
    args = ["evaluate", str(run), "--dataset", "synthfer", "--device", "cpu", *OTHER_SEED]
    assert cli(*args).code == 0
    [first] = _evaluations(run)
    assert cli(*args).code == 0
    [second] = _evaluations(run)  # replaced, not duplicated
    assert second["evaluated"] > first["evaluated"] and second["scores"] == first["scores"]
    assert second["target"]["changed_options"]["seed"] == 3 and second["target"]["split"] == "test"
    assert cli("evaluate", str(run), "--dataset", "synthfer", "--split", "train", "--device", "cpu",
               *OTHER_SEED).code == 0
    assert sorted(r["target"]["split"] for r in _evaluations(run)) == ["test", "train"]
    shown = cli("show", str(run))
    assert shown.code == 0
    assert "synthfer test (seed=3): accuracy" in shown.out and "synthfer train (seed=3): accuracy" in shown.out


def test_table_cross_cells_are_mean_and_std_over_seeds(cli, store):
    runs = [_run(store, 1), _run(store, 2)]
    for run in runs:
        assert cli("evaluate", str(run), "--dataset", "synthfer", "--device", "cpu", *OTHER_SEED).code == 0
    shown = cli("table", "--runs-dir", str(store), "--layout", "cross", "--format", "csv")
    assert shown.code == 0, shown.err
    cells = {row["column"]: row for row in _csv_rows(shown.out) if row["method"] == "standard"}
    own = [read_result(run)["metrics"]["model"]["last"] for run in runs]
    other = [next(r for r in _evaluations(run) if r["target"]["changed_options"].get("seed") == 3
                  and r["target"]["split"] == "test")["scores"]["accuracy"] for run in runs]
    for column, values in (("own test", own), ("synthfer (seed=3)", other)):
        assert cells[column]["trained on"] == "synthfer" and cells[column]["n"] == "2"
        assert float(cells[column]["mean"]) == pytest.approx(statistics.mean(values), abs=1e-4)
        assert float(cells[column]["std"] or 0) == pytest.approx(statistics.stdev(values), abs=1e-4)
    rich = cli("table", "--runs-dir", str(store), "--layout", "cross")
    assert rich.code == 0 and "own test" in rich.out and "synthfer (seed=3)" in rich.out
    refused = cli("table", "--runs-dir", str(store), "--layout", "cross", "--metric", "best")
    assert refused.code == 2 and "--metric last" in refused.err


def test_an_unfinished_run_is_a_clear_error(cli, store, tmp_path):
    copy = tmp_path / "seed1-copy"
    shutil.copytree(_run(store, 1), copy, ignore=shutil.ignore_patterns("evaluations"))
    (copy / "result.json").unlink()
    refused = cli("evaluate", str(copy), "--dataset", "synthfer", "--device", "cpu")
    assert refused.code == 2 and "is not finished" in refused.err and "nlbench status" in refused.err
    assert not (copy / "evaluations").exists()


def test_predict_names_an_unreadable_file_and_writes_nothing(cli, store, tmp_path):
    good = tmp_path / "face.png"
    _faces(tmp_path / "one", "test", 7, 5)
    shutil.copy(next((tmp_path / "one").rglob("*.png")), good)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    out = tmp_path / "p.csv"
    refused = cli("predict", str(_run(store, 1)), str(good), str(bad), "--out", str(out), "--device", "cpu")
    assert refused.code == 2 and str(bad) in refused.err and "Nothing was written" in refused.err
    assert not out.exists()
    assert cli("predict", str(_run(store, 1)), "--device", "cpu").code == 2  # no image given
    done = cli("predict", str(_run(store, 1)), str(good), "--device", "cpu")
    assert done.code == 0 and done.out.splitlines()[1].startswith(f"{good},")
