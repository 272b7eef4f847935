"""csvlabels: images listed in a CSV, with optional noisy-label and split columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import read_result, run_dirs
from nlbench.errors import ConfigError, DataError
from nlbench.plugins import get_registry

CLASSES = ["happy", "sad", "neutral"]


def make(root: Path, rows: int = 60, header: str = "image,label,annotator1,split", label=None) -> Path:
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = [header]
    for i in range(rows):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / "img" / f"{i}.png")
        name = label(i) if label else CLASSES[i % 3]
        lines.append(f"img/{i}.png,{name},{CLASSES[(i // 2) % 3]},{'train' if i < 45 else 'test'}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def dataset(root: Path, **options):
    return get_registry().dataset("csvlabels")(root, options)


def test_columns_classes_split_and_noisy_labels(tmp_path):
    root = make(tmp_path / "d")
    ds = dataset(root, split_column="split", noisy_label_column="annotator1")
    ds.check()
    assert ds.class_names == ("happy", "neutral", "sad")  # sorted names
    assert ds.to_affectnet == (1, 0, 2)
    train, test = ds.table("train"), ds.table("test")
    assert len(train) == 45 and len(test) == 15
    assert train.refs[0] == str(root / "img" / "0.png") and ds.class_names[train.labels[0]] == "happy"
    assert [ds.class_names[i] for i in train.noisy_labels[:4]] == ["happy", "happy", "sad", "sad"]
    assert test.noisy_labels is None
    assert ds.read_image(train.refs[0]).shape == (24, 24, 3)


def test_without_a_split_column_each_class_is_drawn(tmp_path):
    ds = dataset(make(tmp_path / "d"))
    train, test = ds.table("train"), ds.table("test")
    assert len(train) + len(test) == 60 and np.bincount(test.labels).tolist() == [4, 4, 4]


def test_numeric_labels_need_the_class_list(tmp_path):
    root = make(tmp_path / "d", label=lambda i: str(i % 3))
    with pytest.raises(DataError, match="give the class names in label order"):
        dataset(root).check()
    ds = dataset(root, classes=["happy", "sad", "neutral"], split_column="split")
    train = ds.table("train")
    assert [ds.class_names[y] for y in train.labels[:3]] == ["happy", "sad", "neutral"]


def test_wrong_columns_and_bad_rows(tmp_path):
    root = make(tmp_path / "d", header="path,emotion,annotator1,split")
    with pytest.raises(DataError, match="has no column 'image', 'label' .*its columns: path, emotion"):
        dataset(root).check()
    ds = dataset(root, image_column="path", label_column="emotion", classes=["happy", "sad"])
    (root / "img" / "0.png").unlink()
    problems = ds.table("train").problems
    assert any("label 'neutral' is not one of the classes" in p for p in problems)
    assert any("0.png does not exist" in p for p in problems)


def test_real_noise_run_from_the_cli(cli, tmp_path):
    root = make(tmp_path / "d")
    sets = ["--set", "datasets.csvlabels.options.noisy_label_column=annotator1",
            "--set", "datasets.csvlabels.options.split_column=split", "--set", "train.image_size=16",
            "--set", "train.batch_size=8", "--set", "train.val_fraction=0"]
    out = cli("run", "-m", "standard", "-d", "csvlabels", "--data-root", str(root), "--noise-source", "dataset",
              "-e", "1", "--runs-dir", str(tmp_path / "runs"), "-q", *sets)
    assert out.code == 0, out.err
    noise = read_result(run_dirs(tmp_path / "runs")[0])["noise"]
    assert noise["realised_rate"] == pytest.approx(30 / 45) and "annotator1" in noise["note"]


def test_test_rows_need_no_noisy_label(tmp_path):
    root = make(tmp_path / "d")
    lines = (root / "labels.csv").read_text().splitlines()
    # The annotator labelled the training rows only; one training row lacks its label too.
    lines = [lines[0]] + [",".join(row.split(",")[:2] + ["" if i >= 44 else row.split(",")[2]] + row.split(",")[3:])
                          for i, row in enumerate(lines[1:])]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    ds = dataset(root, split_column="split", noisy_label_column="annotator1")
    assert len(ds.table("test")) == 15 and len(ds.table("train")) == 44
    assert any("noisy label '' is not a class; training row skipped" in p for p in ds.table("train").problems)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda text: text.replace("img/3.png,happy", "img/3.png,happy,extra,fields,here", 1),
     r"labels.csv line 5: 3 field\(s\) more than the header's 4"),
    (lambda text: text.replace("img/3.png,happy", 'img/3.png,"happy', 1), "labels.csv line .* is not valid CSV|fewer fields"),
    (lambda text: text + "img/0.png,happy,happy,test\n", "lists the image .*0.png more than once"),
])
def test_malformed_rows_and_duplicate_images_are_data_errors(tmp_path, edit, message):
    root = make(tmp_path / "d")
    csv_file = root / "labels.csv"
    csv_file.write_text(edit(csv_file.read_text()))
    with pytest.raises(DataError, match=message):
        dataset(root).check()


def test_a_binary_file_given_as_the_csv_is_a_data_error(tmp_path):
    root = make(tmp_path / "d")
    (root / "labels.csv").write_bytes((root / "img" / "0.png").read_bytes())
    with pytest.raises(DataError, match="is not UTF-8 text"):
        dataset(root).check()


def test_a_folder_given_as_the_csv_is_a_data_error(tmp_path):
    root = make(tmp_path / "d")
    (root / "folder.csv").mkdir()
    with pytest.raises(DataError, match="is a folder; set datasets.csvlabels.options.csv"):
        dataset(root, csv="folder.csv").check()


def make_subjects(root: Path, subjects: int = 10, per_subject: int = 6) -> Path:
    """CK+-like names S<subject>_<frame>.png with a subject column; subjects 1-7 are given as train, the others test."""
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["image,label,subject,split"]
    for s in range(1, subjects + 1):
        for frame in range(per_subject):
            name = f"img/S{s:03d}_{frame:03d}.png"
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / name)
            lines.append(f"{name},{CLASSES[frame % 3]},S{s:03d},{'train' if s <= 7 else 'test'}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def subjects_of(refs) -> set[str]:
    return {Path(ref).name.split("_")[0] for ref in refs}


@pytest.mark.parametrize("group", [{"group_column": "subject"}, {"group_pattern": r"img/(S\d+)_"}])
def test_groups_keep_every_subject_in_one_split(tmp_path, group):
    root = make_subjects(tmp_path / "d")
    ds = dataset(root, **group)
    train, test = ds.table("train"), ds.table("test")
    assert len(train) + len(test) == 60 and not subjects_of(train.refs) & subjects_of(test.refs)
    assert len(subjects_of(test.refs)) == 2 and len(test) == 12  # round(10 * 0.2) subjects, every row of each
    assert dataset(root, **group).table("test").refs == test.refs  # seeded
    drawn = {frozenset(subjects_of(dataset(root, split_seed=seed, **group).table("test").refs)) for seed in range(4)}
    assert len(drawn) > 1
    by_column = dataset(root, group_column="subject", test_fraction=0.3, split_seed=3).table("test").refs
    assert by_column == dataset(root, group_pattern=r"S\d+", test_fraction=0.3, split_seed=3).table("test").refs


def test_a_given_split_is_checked_for_subjects_in_both(tmp_path):
    root = make_subjects(tmp_path / "d")
    assert len(dataset(root, split_column="split", group_column="subject").table("test")) == 18
    csv_file = root / "labels.csv"
    csv_file.write_text(csv_file.read_text().replace("img/S009_003.png,happy,S009,test", "img/S009_003.png,happy,S009,train"))
    with pytest.raises(DataError, match="subject 'S009' has images in both the train and the test split of labels.csv"):
        dataset(root, split_column="split", group_column="subject").table("train")
    assert len(dataset(root, split_column="split").table("test")) == 17  # without groups: not checked


def test_folds_partition_the_rows_stratified_by_class(tmp_path):
    root = make(tmp_path / "d")
    tested: list[str] = []
    for fold in range(1, 5):
        ds = dataset(root, folds=4, fold=fold, test_fraction=0.5)  # test_fraction is ignored
        train, test = ds.table("train"), ds.table("test")
        assert not set(train.refs) & set(test.refs) and len(train) + len(test) == 60
        assert np.bincount(test.labels).tolist() == [5, 5, 5]  # 20 rows per class, 4 folds
        tested += test.refs
    assert len(tested) == len(set(tested)) == 60  # each row in exactly one fold's test set
    assert dataset(root, folds=4, fold=2).table("test").refs != dataset(root, folds=4, fold=2, split_seed=1).table("test").refs


def test_folds_over_subjects(tmp_path):
    root = make_subjects(tmp_path / "d")
    tested: list[str] = []
    for fold in range(1, 6):
        ds = dataset(root, group_column="subject", folds=5, fold=fold)
        train, test = ds.table("train"), ds.table("test")
        assert not subjects_of(train.refs) & subjects_of(test.refs) and len(subjects_of(test.refs)) == 2
        tested += test.refs
    assert len(tested) == len(set(tested)) == 60


@pytest.mark.parametrize(("options", "message"), [
    ({"group_column": "subject", "group_pattern": "S"}, "set group_column or group_pattern, not both"),
    ({"folds": 5, "split_column": "split"}, "folds 5 .* which split_column 'split' gives: set one of them"),
    ({"group_pattern": "S[0-9"}, r"invalid datasets.csvlabels.options: group_pattern 'S\[0-9' is not a valid"),
    ({"folds": 10, "fold": 11}, "fold 11 is more than folds 10"),
    ({"fold": 3}, "fold 3 is set but folds is 0"),
])
def test_wrong_protocol_options_are_config_errors(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        dataset(make_subjects(tmp_path / "d"), **options)


def test_subjects_missing_are_data_errors(tmp_path):
    root = make_subjects(tmp_path / "d")
    csv_file = root / "labels.csv"
    csv_file.write_text(csv_file.read_text().replace("img/S004_003.png,happy,S004", "img/S004_003.png,happy,"))
    with pytest.raises(DataError, match="labels.csv line 23: no subject in column 'subject'"):
        dataset(root, group_column="subject").table("train")
    with pytest.raises(DataError, match=r"image img/S004_000.png does not match .*group_pattern 'S00\[0-3\]'"):
        dataset(root, group_pattern="S00[0-3]").table("train")
    with pytest.raises(DataError, match="has no column 'person'"):
        dataset(root, group_column="person").check()


def test_fold_options_from_the_command_line(cli, tmp_path):
    root = make(tmp_path / "d")
    out = cli("prepare", "-d", "csvlabels", "--data-root", str(root), "--cache-dir", str(tmp_path / "cache"),
              "--set", "datasets.csvlabels.options.fold=3", "--set", "datasets.csvlabels.options.folds=10")
    assert out.code == 0, out.err
    out = cli("prepare", "-d", "csvlabels", "--data-root", str(root), "--set", "datasets.csvlabels.options.fold=3")
    assert out.code == 2 and "fold 3 is set but folds is 0" in out.err


def test_new_options_stay_out_of_the_identity_at_their_defaults(tmp_path):
    root = make(tmp_path / "d")
    assert not {"group_column", "group_pattern", "folds", "fold"} & set(dataset(root).identity()["options"])
    options = dataset(root, folds=10, fold=3, group_pattern="img").identity()["options"]
    assert (options["folds"], options["fold"], options["group_pattern"]) == (10, 3, "img")


def test_labels_and_derived_classes_ignore_case(tmp_path):
    spelling = ["Happy", "happy", "HAPPY", "happy", "Sad", "sad", "Neutral", "neutral"]
    root = make(tmp_path / "d", rows=48, label=lambda i: spelling[i % 8])
    ds = dataset(root)
    ds.check()
    assert ds.class_names == ("Neutral", "Sad", "happy")  # most common spelling; ties: first in sort order
    assert ds.to_affectnet == (0, 2, 1)
    labels = np.concatenate([ds.table("train").labels, ds.table("test").labels])
    assert np.bincount(labels).tolist() == [12, 12, 24] and not ds.table("train").problems
    given = dataset(root, classes=["SAD", "Happy", "neutral"])
    assert np.bincount(given.table("train").labels).tolist() == np.bincount(ds.table("train").labels)[[1, 2, 0]].tolist()


def test_labels_that_are_not_classes_are_named_with_the_classes(tmp_path):
    root = make(tmp_path / "d")
    problems = dataset(root, classes=["happy", "sad"]).table("train").problems
    assert problems[0] == ("20 row(s) skipped: their label(s) 'neutral' (20 rows) are not classes; the classes (given "
                           "with datasets.csvlabels.options.classes, matched ignoring case) are 'happy', 'sad'")
    with pytest.raises(DataError, match=r"class\(es\) 'angry' of datasets.csvlabels.options.classes have no training "
                                        r"row in labels.csv; 20 row\(s\) skipped: their label\(s\) 'neutral' "
                                        r"\(20 rows\) are not classes; .* are 'happy', 'sad', 'angry'"):
        dataset(root, classes=["happy", "sad", "angry"]).check()
