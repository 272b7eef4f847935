"""Tests of the ferplus dataset plugin: the majority rule, both layouts on small fixtures, and the
exact counts of shared/data/ferplus (skipped when that folder is absent; NLBENCH_FERPLUS overrides it)."""

from __future__ import annotations

import gzip
import itertools
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nlbench import DataError
from nlbench.plugins import get_registry

REAL = Path(os.environ.get("NLBENCH_FERPLUS") or Path(__file__).resolve().parents[2] / "shared" / "data" / "ferplus")
VOTES_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
FOLDER_OF = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}

# (usage, name, votes) -> expected label (None = dropped)
ROWS = [
    ("Training", "fer0000000.png", [0, 10, 0, 0, 0, 0, 0, 0, 0, 0], 1),
    ("Training", "fer0000001.png", [0, 0, 6, 0, 0, 0, 4, 0, 0, 0], 2),
    ("Training", "fer0000002.png", [4, 0, 0, 0, 1, 0, 0, 4, 1, 0], None),  # 4 vs 4 after dropping single votes
    ("Training", "", [0, 0, 0, 0, 0, 0, 0, 0, 0, 10], None),  # not a face, no image name
    ("Training", "fer0000004.png", [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], None),  # only single votes
    ("Training", "fer0000005.png", [5, 0, 0, 0, 0, 0, 0, 0, 4, 0], 0),  # 9 votes: kept, reported
    ("PublicTest", "fer0000006.png", [0, 0, 0, 0, 0, 0, 0, 7, 3, 0], 7),  # contempt
    ("PublicTest", "fer0000007.png", [2, 0, 0, 0, 0, 0, 0, 0, 8, 0], None),  # unknown wins
    ("PrivateTest", "fer0000008.png", [0, 0, 0, 7, 3, 0, 0, 0, 0, 0], 3),
    ("PrivateTest", "fer0000009.png", [0, 0, 0, 0, 6, 1, 3, 0, 0, 0], 4),
]


def ferplus(root: Path, **options):
    return get_registry().dataset("ferplus")(root, options)


def face(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, 48 * 48, dtype=np.uint8)


def make_csv_layout(root: Path, gz: bool = False, rows=ROWS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    pixel_lines = ["emotion,pixels,Usage"] + [
        f"0,{' '.join(map(str, face(i)))},{usage}" for i, (usage, _, _, _) in enumerate(rows)
    ]
    text = "\n".join(pixel_lines) + "\n"
    if gz:
        (root / "fer2013.csv.gz").write_bytes(gzip.compress(text.encode()))
    else:
        (root / "fer2013.csv").write_text(text)
    vote_lines = [VOTES_HEADER] + [f"{u},{n},{','.join(map(str, v))}" for u, n, v, _ in rows]
    (root / "fer2013new.csv").write_text("\n".join(vote_lines) + "\n")
    return root


def make_folder_layout(root: Path) -> Path:
    for i, (usage, name, votes, _) in enumerate(ROWS):
        folder = root / FOLDER_OF[usage]
        folder.mkdir(parents=True, exist_ok=True)
        if name:
            Image.fromarray(face(i).reshape(48, 48)).save(folder / name)
            with open(folder / "label.csv", "a") as handle:
                handle.write(f'{name},"(0, 0, 48, 48)",{",".join(map(str, votes))}\n')
    with open(root / "FER2013Train" / "label.csv", "a") as handle:
        handle.write('fer0000099.png,"(0, 0, 48, 48)",0,10,0,0,0,0,0,0,0,0\n')  # image missing
        handle.write("broken row\n")
    return root


def test_majority_rule() -> None:
    module = sys.modules[get_registry().dataset("ferplus").__module__]  # plugins load by path
    labels = module.majority_labels(np.asarray([v for _, _, v, _ in ROWS]))
    assert list(labels) == [-1 if e is None else e for _, _, _, e in ROWS]


@pytest.mark.parametrize("gz", [False, True])
def test_csv_layout(tmp_path: Path, gz: bool) -> None:
    ds = ferplus(make_csv_layout(tmp_path, gz=gz))
    ds.check()
    assert ds.layout() == "csv" and ds.storage_size == 48 and ds.num_classes == 8
    train, test = ds.table("train"), ds.table("test")
    assert list(train.labels) == [1, 2, 0, 7] and list(test.labels) == [3, 4]
    name = "fer2013.csv.gz" if gz else "fer2013.csv"
    assert train.refs[0] == f"{name} line 2" and test.refs == [f"{name} line 10", f"{name} line 11"]
    image = ds.read_image(test.refs[1])
    assert image.shape == (48, 48, 3) and (image[:, :, 0] == image[:, :, 2]).all()
    assert (image[:, :, 0].ravel() == face(9)).all()
    assert train.problems == ["fer2013new.csv line 7: 9 votes instead of 10 (kept as neutral)"]


def test_csv_rows_with_bad_pixels_fail_to_decode_by_line(tmp_path: Path) -> None:
    root = make_csv_layout(tmp_path)
    lines = (root / "fer2013.csv").read_text().splitlines()
    lines[2] = "0,1 2 3,Training"
    lines[6] = lines[6].replace(" ", " x", 1)
    (root / "fer2013.csv").write_text("\n".join(lines) + "\n")
    ds = ferplus(root)
    train = ds.table("train")
    with pytest.raises(ValueError, match=r"fer2013.csv line 3: 3 pixel values instead of 2304"):
        ds.read_image(train.refs[1])
    with pytest.raises(ValueError, match=r"fer2013.csv line 7: pixels are not all integers"):
        ds.read_image(train.refs[2])
    assert (ds.read_image(train.refs[0])[:, :, 0].ravel() == face(0)).all()


def test_csv_files_must_be_row_aligned(tmp_path: Path) -> None:
    root = make_csv_layout(tmp_path)
    votes = (root / "fer2013new.csv").read_text().splitlines()
    (root / "fer2013new.csv").write_text("\n".join(votes[:-1]) + "\n")
    with pytest.raises(DataError, match=r"fer2013.csv has 10 rows but fer2013new.csv has 9: .* joined by row position"):
        ferplus(root).check()
    swapped = votes[:8] + [votes[9], votes[8]] + votes[10:]
    (root / "fer2013new.csv").write_text("\n".join(swapped) + "\n")
    with pytest.raises(DataError, match=r"line 9 is 'PublicTest' in fer2013.csv but 'PrivateTest' in fer2013new.csv"):
        ferplus(root).check()


def test_folder_layout(tmp_path: Path) -> None:
    ds = ferplus(make_folder_layout(tmp_path / "data").parent)  # found under data/
    assert ds.layout() == "folders"
    train, test = ds.table("train"), ds.table("test")
    assert list(train.labels) == [1, 2, 0, 7] and list(test.labels) == [3, 4]
    assert train.refs[0] == str(tmp_path / "data" / "FER2013Train" / "fer0000000.png")
    assert (ds.read_image(test.refs[1])[:, :, 1].ravel() == face(9)).all()
    problems = "\n".join(train.problems)
    missing = tmp_path / "data/FER2013Train/fer0000099.png"
    assert f"FER2013Train/label.csv line 6: image {missing} does not exist" in problems
    assert "FER2013Train/label.csv line 7: expected 12 fields" in problems
    assert "fer0000005.png: 9 votes instead of 10 (kept as neutral)" in problems


def test_layout_detection_and_messages(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no FERPlus files under .*fer2013new.csv.*FER2013Train"):
        ferplus(tmp_path).check()
    (tmp_path / "fer2013new.csv").write_text(VOTES_HEADER + "\n")
    with pytest.raises(DataError, match=r"found only fer2013new.csv"):
        ferplus(tmp_path).check()
    with pytest.raises(DataError, match=r"layout csv: .*fer2013.csv does not exist"):
        ferplus(tmp_path, layout="csv").check()
    with pytest.raises(DataError, match=r"layout folders: .*FER2013Train/label.csv does not exist"):
        ferplus(tmp_path, layout="folders").check()
    labels_only = tmp_path / "labels"
    (labels_only / "FER2013Train").mkdir(parents=True)
    for folder in ("FER2013Train", "FER2013Valid", "FER2013Test"):
        (labels_only / folder).mkdir(exist_ok=True)
        (labels_only / folder / "label.csv").write_text('fer0000000.png,"(0, 0, 48, 48)",0,10,0,0,0,0,0,0,0,0\n')
    with pytest.raises(DataError, match=r"lists 1 images but .*FER2013Train holds no .png image: generate them"):
        ferplus(labels_only).check()


# ---------------------------------------------------------------- the real data (shared/data/ferplus)
def _real() -> Path:
    if not (REAL / "fer2013new.csv").is_file():
        pytest.skip(f"real FERPlus data not found at {REAL} (set NLBENCH_FERPLUS to its folder)")
    return REAL


@pytest.fixture(scope="module")
def real_csv():
    ds = ferplus(_real())
    ds.check()
    return ds


def test_real_csv_layout_counts(real_csv) -> None:
    assert real_csv.layout() == "csv"
    train, test = real_csv.table("train"), real_csv.table("test")
    assert len(train) == 4835 and len(test) == 3153
    training_rows = {f"fer2013.csv.gz line {i + 2}" for i in range(4500)}  # the subset's 4,500 Training rows come first
    assert sum(r in training_rows for r in train.refs) == 3935
    assert list(np.bincount(train.labels, minlength=8)) == [1727, 1392, 585, 582, 414, 17, 99, 19]
    # pixels: one numpy parse, identical to a plain per-row parse
    line = 4321
    with gzip.open(REAL / "fer2013.csv.gz", "rt") as handle:
        text = next(itertools.islice(handle, line - 1, None))
    expected = np.asarray(text.split(",")[1].split(), dtype=np.uint8).reshape(48, 48)
    assert (real_csv.read_image(f"fer2013.csv.gz line {line}")[:, :, 0] == expected).all()


def test_real_folder_layout_counts(real_csv, tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("ferplus_folders")
    pixels = real_csv._csv_pixels()
    new = pd.read_csv(REAL / "fer2013new.csv", keep_default_na=False)
    for folder in FOLDER_OF.values():
        (root / folder).mkdir()
        shutil.copy(REAL / "ferplus_label_csv" / folder / "label.csv", root / folder / "label.csv")
    for i, (usage, name) in enumerate(zip(new["Usage"], new["Image name"], strict=True)):
        if name:  # Microsoft's generator writes no image for rows without a name
            Image.fromarray(pixels[i].reshape(48, 48)).save(root / FOLDER_OF[usage] / name, compress_level=0)
    ds = ferplus(root)
    assert ds.layout() == "folders"
    train, test = ds.table("train"), ds.table("test")
    assert len(train) == 4828 and len(test) == 3137
    assert sum("FER2013Train" in r for r in train.refs) == 3930
    assert list(np.bincount(train.labels, minlength=8)) == [1722, 1392, 589, 574, 411, 20, 101, 19]
    assert train.problems == [] and test.problems == []
    first = train.refs[0]
    assert (ds.read_image(first) == real_csv.read_image(real_csv.table("train").refs[0])).all()


def test_fer2013_labels_as_real_noise(tmp_path: Path) -> None:
    # emotion ids per row: FER2013 0 angry .. 6 neutral; row 1's majority is surprise (2)
    rows = ROWS
    root = make_csv_layout(tmp_path, rows=rows)
    text = (root / "fer2013.csv").read_text().splitlines()
    emotions = ["3", "5", "0", "0", "0", "6", "0", "0", "4", "x"]  # happy, surprise, ..., neutral, ...
    (root / "fer2013.csv").write_text("\n".join([text[0]] + [e + line[1:] for e, line in zip(emotions, text[1:])]) + "\n")
    train = ferplus(root, real_noise="fer2013").table("train")
    # kept training rows: 0 (happiness, FER2013 happy -> happiness), 1 (surprise, FER2013 surprise),
    # 5 (neutral, FER2013 neutral) and 6 (contempt, FER2013 angry -> anger: contempt is never in FER2013)
    assert list(train.labels) == [1, 2, 0, 7]
    assert list(train.noisy_labels) == [1, 2, 0, 4]
    assert ferplus(root).table("train").noisy_labels is None


def test_real_noise_needs_the_csv_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="only fer2013.csv carries"):
        ferplus(make_folder_layout(tmp_path), real_noise="fer2013").table("train")


def test_real_fer2013_noise_rate(real_csv) -> None:
    train = ferplus(_real(), real_noise="fer2013").table("train")
    assert len(train) == 4835
    assert float(np.mean(train.noisy_labels != train.labels)) == pytest.approx(0.3212, abs=5e-4)


def test_a_label_csv_full_of_garbage_is_an_error_not_a_smaller_split(tmp_path: Path) -> None:
    root = make_folder_layout(tmp_path)
    with open(root / "FER2013Valid" / "label.csv", "a") as handle:
        handle.write("".join(f"garbage row {i}\n" for i in range(12)))
    with pytest.raises(DataError, match=r"FER2013Valid/label.csv: 12 of its 14 rows are not FERPlus label rows"):
        ferplus(root).table("train")


@pytest.mark.parametrize("gz", [False, True])
def test_a_truncated_fer2013_csv_says_so_without_dumping_pixels(tmp_path: Path, gz: bool) -> None:
    root = make_csv_layout(tmp_path, gz=gz)
    name = "fer2013.csv.gz" if gz else "fer2013.csv"
    data = (root / name).read_bytes()
    (root / name).write_bytes(data[: len(data) - 3000] if not gz else data[: len(data) // 2])
    with pytest.raises(DataError) as err:
        ferplus(root).check()
    text = str(err.value)
    assert ("truncated" in text or "damaged or incomplete" in text) and len(text) < 400


def test_seven_classes_drop_contempt_faces_and_contempt_votes(tmp_path: Path) -> None:
    root = make_csv_layout(tmp_path)
    eight, seven = ferplus(root), ferplus(root, classes=7)
    assert seven.num_classes == 7 and "contempt" not in seven.class_names and eight.num_classes == 8
    assert list(eight.table("train").labels) == [1, 2, 0, 7]
    assert list(seven.table("train").labels) == [1, 2, 0]  # the contempt face is dropped
    assert seven.to_affectnet == eight.to_affectnet[:7]
    votes = ferplus(root, classes=7, real_noise="vote").table("train").votes
    assert votes.shape == (3, 7)  # contempt votes are no label to draw
    with pytest.raises(Exception, match="classes"):
        ferplus(root, classes=6)


def test_real_seven_class_counts(real_csv) -> None:
    seven = ferplus(_real(), classes=7)
    train, test = seven.table("train"), seven.table("test")
    assert len(train) == 4835 - 19 and list(np.bincount(train.labels, minlength=7)) == [1727, 1392, 585, 582, 414, 17, 99]
    assert len(test) < 3153 and test.labels.max() == 6


def test_a_run_says_how_many_rows_were_skipped_and_why(cli, tmp_path: Path) -> None:
    root = make_folder_layout(tmp_path / "ferplus")
    out = cli("run", "-d", "ferplus", "--data-root", str(root), "-e", "1", "--runs-dir", str(tmp_path / "runs"),
              "--set", "train.image_size=16", "--set", "train.batch_size=2", "--set", "train.val_fraction=0")
    text = " ".join(out.err.split())
    assert "rows of ferplus were skipped or look odd (the first: FER2013Train/label.csv line" in text, out.err
