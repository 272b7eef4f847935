"""csvlabels: images listed in a CSV, with optional noisy-label and split columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import read_result, run_dirs
from nlbench.errors import DataError
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
