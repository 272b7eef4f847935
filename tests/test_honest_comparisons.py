"""Comparisons that cannot mislead: reference scores, one-class models, test splits, folds."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from nlbench.report.references import dominant_prediction, split_reference
from nlbench.report.render import render
from nlbench.report.tables import build_table, compare

CLASSES = ["anger", "happy", "neutral"]


def _store(root, method, dataset, seed, matrix, options=None, classes=CLASSES, rate=0.2, test_split=None, run=None):
    """A finished run whose last-epoch confusion matrix is ``matrix`` (rows: true class)."""
    matrix = np.asarray(matrix)
    accuracy = 100.0 * np.trace(matrix) / matrix.sum()
    tag = run or f"{method}{seed}{abs(hash(json.dumps([dataset, options], sort_keys=True))) % 10**6}"
    folder = root / dataset / method / f"noise{rate:.2f}-flip" / f"seed{seed}-{tag}"
    folder.mkdir(parents=True)
    summary = {"last": accuracy, "lastk": accuracy, "k": 1, "best": accuracy, "best_epoch": 1, "curve": [accuracy]}
    record = {
        "run_id": tag, "method": method, "dataset": dataset, "seed": seed, "finished": 1.0,
        "noise": {"rate": rate, "mode": "flip", "source": "injected", "realised_rate": rate},
        "metrics": {"model": summary}, "hparams": {}, "train": {"epochs": 5, "image_size": 32, "batch_size": 8},
        "dataset_options": options or {}, "test_size": int(matrix.sum()),
        "final": {"model": {"confusion_matrix": matrix.tolist(), "class_names": list(classes)}, "members": {}},
    }
    if test_split:
        record["test_split"] = test_split
    (folder / "result.json").write_text(json.dumps(record))
    return folder


def _markdown(table, **extra):
    out = io.StringIO()
    render(table, "markdown", out, **extra)
    return out.getvalue()


# An imbalanced test set: 100 neutral of 200 faces.
LABELS = [50, 50, 100]
NEUTRAL_ALWAYS = [[0, 0, 50], [0, 0, 50], [0, 0, 100]]  # 50% accuracy, balanced 33.3
HONEST = [[30, 10, 10], [10, 30, 10], [20, 20, 60]]  # 60% accuracy
MOSTLY_NEUTRAL = [[5, 0, 45], [0, 8, 42], [0, 0, 100]]  # 91% neutral answers


def test_reference_scores_follow_the_test_labels():
    reference = split_reference({"final": {"model": {"confusion_matrix": HONEST, "class_names": CLASSES}}})
    assert reference.size == 200 and reference.counts == (50, 50, 100) and reference.majority_class == "neutral"
    assert reference.majority("accuracy") == pytest.approx(50.0)
    assert reference.chance("accuracy") == pytest.approx(100 / 3)
    assert reference.majority("balanced_accuracy") == pytest.approx(100 / 3)
    # always "neutral": F1 of neutral = 2 * 0.5 / 1.5, the others 0
    assert reference.majority("macro_f1") == pytest.approx(100 * (2 * 0.5 / 1.5) / 3)
    # uniform guesses: F1_k = 2 p_k (1/3) / (p_k + 1/3)
    expected = np.mean([2 * p / 3 / (p + 1 / 3) for p in (0.25, 0.25, 0.5)]) * 100
    assert reference.chance("macro_f1") == pytest.approx(expected)
    assert reference.chance("ece") is None


def test_a_model_answering_one_class_is_flagged_and_a_right_majority_is_not():
    result = {"final": {"model": {"confusion_matrix": MOSTLY_NEUTRAL, "class_names": CLASSES}}}
    dominant = dominant_prediction(result)
    assert dominant.class_name == "neutral" and dominant.share == pytest.approx(187 / 200)
    assert "answers 'neutral' for 94% of the test samples (50% of the test labels)" == dominant.describe()
    assert dominant_prediction({"final": {"model": {"confusion_matrix": HONEST, "class_names": CLASSES}}}) is None
    # 80% of the labels are one class: answering it 80% of the time is right, not a collapse
    skewed = [[70, 5, 5], [5, 5, 0], [5, 0, 5]]
    assert dominant_prediction({"final": {"model": {"confusion_matrix": skewed, "class_names": CLASSES}}}) is None


def test_tables_show_the_references_and_flag_one_class_models(tmp_path):
    for seed in (1, 2, 3):
        _store(tmp_path, "standard", "mine", seed, HONEST)
        _store(tmp_path, "cct", "mine", seed, MOSTLY_NEUTRAL if seed == 1 else HONEST)
    table = build_table(tmp_path, "last")
    text = _markdown(table)
    assert "| reference | majority class | 50.00 |" in text and "|  | chance | 33.33 |" in text
    assert "|  | cct | 58.83 ± 2.02 (3) † |" in text and "| 20 | standard | **60.00 ± 0.00 (3)** |" in text
    assert "cct on mine, noise 20, seed 1: answers 'neutral' for 94%" in text
    assert "majority class 'neutral' 50.00, chance 33.33 (3 classes, 200 test samples)" in text
    out = io.StringIO()
    render(table, "csv", out)
    rows = out.getvalue().splitlines()
    assert any(r.startswith(",reference: majority class,mine,50.0000") for r in rows)
    assert any("answers 'neutral'" in r for r in rows if r.startswith("20,cct,"))


def test_runs_on_other_test_splits_never_share_a_column(tmp_path):
    for seed in (1, 2, 3):
        _store(tmp_path, "standard", "mine", seed, HONEST, options={"test_fraction": 0.2},
               test_split={"size": 200, "sha256": "a" * 64, "class_counts": LABELS})
        _store(tmp_path, "standard", "mine", seed, [[10, 0], [0, 10]], classes=["a", "b"],
               options={"test_fraction": 0.3}, test_split={"size": 20, "sha256": "b" * 64, "class_counts": [10, 10]})
    table = build_table(tmp_path, "last")
    assert table.columns == ["mine [test_fraction=0.2]", "mine [test_fraction=0.3]"]
    assert [row[1] for row in table.rows] == ["standard"]  # one row: the split is the column, not a variant
    assert table.references["mine [test_fraction=0.3]"].counts == (10, 10)
    # the same options, another split (other files): labelled by what differs in the split itself
    other = tmp_path / "other"
    _store(other, "standard", "mine", 1, HONEST, test_split={"size": 200, "sha256": "c" * 64, "class_counts": LABELS})
    _store(other, "standard", "mine", 1, [[10, 0], [0, 10]], classes=["a", "b"], run="d1",
           test_split={"size": 20, "sha256": "d" * 64, "class_counts": [10, 10]})
    assert build_table(other, "last").columns == ["mine [2 classes, test 20]", "mine [3 classes, test 200]"]


def test_folds_average_within_a_seed_and_test_every_sample_once(tmp_path):
    accuracy = {1: [60, 70], 2: [80, 90]}  # seed -> fold 1, fold 2
    matrices = {60: [[30, 20], [20, 30]], 70: [[35, 15], [15, 35]], 80: [[40, 10], [10, 40]], 90: [[45, 5], [5, 45]]}
    for seed, values in accuracy.items():
        for fold, value in enumerate(values, start=1):
            _store(tmp_path, "standard", "ck", seed, matrices[value], classes=["a", "b"],
                   options={"folds": 2, "fold": fold, "split_seed": 0})
    table = build_table(tmp_path, "last")
    assert table.columns == ["ck"] and [row[1] for row in table.rows] == ["standard"]  # fold is no variant
    cell = table.cell(("20", "standard"), "ck")
    assert cell.n == 2 and cell.by_seed == {1: pytest.approx(65.0), 2: pytest.approx(85.0)}
    assert cell.mean == pytest.approx(75.0)
    assert table.references["ck"].size == 200  # two folds of 100
    _store(tmp_path, "standard", "ck", 3, matrices[60], classes=["a", "b"], options={"folds": 2, "fold": 1, "split_seed": 0})
    notes = build_table(tmp_path, "last").notes
    assert any("seed 3: 1 of 2 folds finished" in n for n in notes)


def test_compare_shows_nothing_for_two_seeds(tmp_path):
    for seed in (1, 2):
        _store(tmp_path, "standard", "mine", seed, HONEST)
        _store(tmp_path, "cct", "mine", seed, [[40, 5, 5], [5, 40, 5], [10, 10, 80]])
    table = build_table(tmp_path, "last")
    text = _markdown(table, comparison=compare(table, "standard"))
    assert "n=2: too few seeds" in text and "+20.00" not in text


def test_where_and_the_plot_filters_narrow_table_export_report_and_runs(tmp_path, cli):
    from tests.test_run_reader import fake_run

    root = tmp_path / "runs"
    for seed in (1, 2):
        fake_run(root, "standard", seed, last=60.0, train={"train_size": 800})
        fake_run(root, "standard", seed, last=40.0, train={"train_size": 200})  # a stale protocol
    fake_run(root, "cct", 1, last=90.0, train={"train_size": 800})
    table = cli("table", "--runs-dir", str(root), "--format", "csv", "--where", "train.train_size=800")
    assert table.code == 0, table.err
    assert "60.0000" in table.out and "40.0000" not in table.out and "train_size" not in table.out
    only = cli("table", "--runs-dir", str(root), "--format", "csv", "--methods", "standard", "--seeds", "1")
    assert "cct" not in only.out and ",1,1," in only.out.replace('"', "")
    export = cli("export", "--runs-dir", str(root), "--where", "train.train_size=200")
    assert export.code == 0 and len(export.out.strip().splitlines()) == 1 + 2
    listed = cli("runs", "--runs-dir", str(root), "--where", "train.train_size=800", "--format", "csv")
    assert listed.code == 0 and len(listed.out.strip().splitlines()) == 1 + 3
    by_method = cli("export", "--runs-dir", str(root), "--where", "methods.standard.lr=0.5")
    assert by_method.code == 2 and "--where methods.standard.lr: no stored run records" in by_method.err
    typo = cli("table", "--runs-dir", str(root), "--where", "train.trainsize=800")
    assert typo.code == 2 and "train.trainsize" in typo.err
    bad = cli("table", "--runs-dir", str(root), "--where", "train.train_size")
    assert bad.code == 2 and "KEY=VALUE" in bad.err
    report = cli("report", "--runs-dir", str(root), "--out", str(tmp_path / "report"), "--gradcam", "0",
                 "--where", "train.train_size=800")
    assert report.code == 0, report.err
    text = (tmp_path / "report" / "report.md").read_text()
    assert "40.00" not in text and "train_size=200" not in text


def test_runs_trained_with_other_code_are_named_and_force_retrains_them(cli, tmp_path):
    from tests.conftest import TINY
    from tests.test_plugins import GOOD, _folder

    folder = _folder(tmp_path, {"mine.py": GOOD.format(name="mine")})
    config = tmp_path / "benchmark.toml"
    config.write_text(f'[plugins]\npaths = ["{folder}"]\n')
    runs = str(tmp_path / "runs")
    common = ["--config", str(config), "--runs-dir", runs]
    sweep = ["sweep", *common, "--methods", "mine", "--noise", "0.2", "--seeds", "1", "--epochs", "1", "--no-table",
             *TINY]
    first = cli(*sweep)
    assert first.code == 0, first.err
    result = json.loads(next((tmp_path / "runs").rglob("result.json")).read_text())
    assert result["code"]["method_file"]["name"] == "plugins/mine.py"
    assert result["code"]["dataset_file"]["name"] == "datasets/synthfer.py" and result["code"]["nlbench"]
    assert "other code" not in cli("status", *common).out
    (folder / "mine.py").write_text(GOOD.format(name="mine") + "\n# a changed loss\n")
    status = cli("status", *common)
    assert "1 done run(s) were trained with other code of plugins/mine.py" in status.out
    listed = cli("runs", *common)
    assert "done*" in listed.out and "trained with other code of plugins/mine.py" in listed.out
    table = cli("table", *common, "--format", "markdown")
    assert "1 run(s) shown were trained with other code of plugins/mine.py" in table.err
    again = cli(*sweep)
    assert again.code == 0 and "reused as they are; --force trains them again" in again.err
    assert "trained 0" in again.err
    forced = cli(*sweep, "--force")
    assert forced.code == 0 and "trained 1" in forced.err, forced.err
    assert "other code" not in cli("status", *common).out


def test_the_noise_record_counts_the_samples_trained_on_and_wrong_labels_per_label():
    from nlbench.data.noise import trained_noise

    clean = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    noisy = np.array([0, 2, 2, 0, 1, 2, 2, 2, 2, 0])
    index = np.array([0, 1, 2, 4, 5, 6, 7])  # 3, 8 and 9 are held out or beyond train_size
    record = trained_noise(clean, noisy, index, ("a", "b", "c"))
    assert record["samples"] == 7 and record["wrong"] == 3 and record["rate"] == pytest.approx(3 / 7)
    assert record["transitions"] == [[1, 0, 2], [0, 1, 1], [0, 0, 2]]
    # of the 5 samples labelled c, 3 are truly a or b
    assert record["wrong_by_label"] == {"a": 0.0, "b": 0.0, "c": pytest.approx(3 / 5)}


def test_a_run_records_the_noise_of_what_it_trained_on(cli, tmp_path):
    from tests.conftest import TINY

    ran = cli("run", "--method", "standard", "--noise", "0.4", "--epochs", "1", "--runs-dir", str(tmp_path), "-q",
              *TINY, "--set", "train.train_size=60")
    assert ran.code == 0, ran.err
    result = json.loads(next(tmp_path.rglob("result.json")).read_text())
    trained = result["noise"]["trained"]
    assert trained["samples"] == 60 and sum(map(sum, result["noise"]["transitions"])) == 60
    matrix = np.array(result["noise"]["transitions"])
    assert trained["wrong"] == matrix.sum() - np.trace(matrix)
    shown = cli("show", str(next(tmp_path.rglob("result.json")).parent))
    assert "of the 60 labels trained on are wrong" in shown.out and "wrong%" in shown.out
    assert "reference (this test split): accuracy: majority class" in shown.out
    preview = cli("noise", "preview", "--noise", "0.4", *TINY, "--set", "train.train_size=60")
    assert preview.code == 0 and "60 trained on" in preview.out
    assert f"{100 * trained['rate']:.1f}% of the 60 labels trained on are wrong" in preview.out


def test_a_copied_run_is_listed_as_a_duplicate_and_shown_by_its_id(tmp_path, cli):
    import shutil

    from tests.test_run_reader import fake_run

    root = tmp_path / "runs"
    original = fake_run(root, "standard", 1, run_id="abc123def456", last=60.0)
    shutil.copytree(original, original.parent / (original.name + "-copy"))
    listed = cli("runs", "--runs-dir", str(root))
    assert "duplicate" in listed.out and "count the copy that finished last, once" in listed.out
    shown = cli("show", "abc123", "--runs-dir", str(root))
    assert shown.code == 0 and "run abc123def456" in shown.out
