"""The dataset plugins through the CLI: `nlbench run` on bad layouts, `nlbench prepare`, `nlbench datasets`."""

from __future__ import annotations

import json
from pathlib import Path

from test_datasets_rafdb import make_rafdb

from nlbench.dataset import AFFECTNET_ORDER
from nlbench.plugins import get_registry

BUILT_IN = ("affectnet7", "affectnet8", "fec", "ferplus", "imagefolder", "rafdb", "synthfer")


def test_every_dataset_is_registered_and_declares_its_settings() -> None:
    registry = get_registry()
    assert set(BUILT_IN) <= set(registry.datasets)
    assert not [p.error for p in registry.plugins if not p.ok]
    for name in BUILT_IN:
        cls = registry.dataset(name)
        assert cls.augmentation in ("cct", "affectnet") and len(cls.mean) == len(cls.std) == 3
        if name in ("imagefolder", "synthfer"):
            continue
        # the documented mapping names each class by its own AffectNet name
        assert tuple(AFFECTNET_ORDER[i] for i in cls.to_affectnet) == cls.class_names, name


def test_run_on_a_missing_root_exits_2_with_a_clear_message(cli, tmp_path: Path) -> None:
    result = cli("run", "--dataset", "rafdb", "--data-root", "/nonexistent", "--runs-dir", str(tmp_path), "-q")
    assert result.code == 2
    assert "error: data root '/nonexistent' of dataset 'rafdb' is not a folder" in result.err
    assert "Traceback" not in result.err


def test_run_on_an_incomplete_layout_names_what_is_missing(cli, tmp_path: Path) -> None:
    (tmp_path / "raf").mkdir()
    result = cli("run", "--dataset", "rafdb", "--data-root", str(tmp_path / "raf"), "--runs-dir", str(tmp_path), "-q")
    assert result.code == 2
    assert f"{tmp_path / 'raf' / 'EmoLabel'} does not exist" in result.err
    result = cli("run", "--dataset", "ferplus", "--data-root", str(tmp_path / "raf"), "--runs-dir", str(tmp_path), "-q")
    assert result.code == 2 and "fer2013new.csv" in result.err and "FER2013Train" in result.err


def test_prepare_lists_every_problem_without_crashing(cli, tmp_path: Path) -> None:
    root = make_rafdb(tmp_path / "raf")
    result = cli("prepare", "--dataset", "rafdb", "--data-root", str(root), "--cache-dir", str(tmp_path / "cache"))
    # the corrupt JPEG keeps the train cache from being built: listed, then exit 2
    assert result.code == 2, result.err
    assert "Traceback" not in result.err and "internal error" not in result.err
    out = result.out
    assert "cannot decode " + str(root / "Image/aligned/train_00010_aligned.jpg") in out
    assert "label '9' of train_00008.jpg is not in 1..7" in out
    assert "train_00009_aligned.jpg does not exist" in out
    assert "the train split(s) of 'rafdb' could not be prepared" in result.err
    assert "test: 3 images cached" in out

    # remove the corrupt file: its row is now skipped and reported, and the cache is built
    (root / "Image/aligned/train_00010_aligned.jpg").unlink()
    result = cli("prepare", "--dataset", "rafdb", "--data-root", str(root), "--cache-dir", str(tmp_path / "cache"))
    assert result.code == 0, result.err
    assert "train_00010_aligned.jpg does not exist" in result.out
    assert "train: 7 images cached" in result.out and "test: 3 images cached" in result.out
    for name in ("surprise", "neutral", "total"):
        assert name in result.out


def test_prepare_reports_flat_and_identical_images(cli, tmp_path: Path) -> None:
    root = make_rafdb(tmp_path / "raf")
    folder = root / "Image/aligned"
    (folder / "train_00010_aligned.jpg").unlink()
    (folder / "test_0007_aligned.jpg").write_bytes((folder / "train_00002_aligned.jpg").read_bytes())
    from PIL import Image

    Image.new("RGB", (100, 100), (128, 128, 128)).save(folder / "train_00003_aligned.jpg")
    result = cli("prepare", "--dataset", "rafdb", "--data-root", str(root), "--cache-dir", str(tmp_path / "cache"))
    assert result.code == 0, result.err
    assert "train_00003_aligned.jpg is a single flat colour" in result.out
    assert "1 group(s) of identical images (2 images; 1 group(s) span train and test)" in result.out


def test_prepare_of_a_missing_layout_exits_2(cli, tmp_path: Path) -> None:
    result = cli("prepare", "--dataset", "rafdb", "--data-root", str(tmp_path))
    assert result.code == 2 and "EmoLabel" in result.err
    result = cli("prepare", "--dataset", "rafdb")
    assert result.code == 2 and "--data-root" in result.err


def test_datasets_listing_shows_every_dataset(cli) -> None:
    result = cli("datasets")
    assert result.code == 0, result.err
    for name in BUILT_IN:
        assert name in result.out


def test_run_trains_on_a_dataset_plugin_with_its_own_noisy_labels(cli, tmp_path: Path) -> None:
    root = make_rafdb(tmp_path / "raf")
    (root / "Image/aligned/train_00010_aligned.jpg").unlink()
    (root / "noisy.txt").write_text("".join(f"train_{i:05d}.jpg {i % 7 + 1}\n" for i in range(1, 11)))
    result = cli(
        "run", "--method", "standard", "--dataset", "rafdb", "--data-root", str(root), "--noise-source", "dataset",
        "--epochs", "1", "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), "-q",
        "--set", "datasets.rafdb.options.noisy_list=noisy.txt", "--set", "train.image_size=16",
        "--set", "train.batch_size=4", "--set", "train.eval_batch_size=8",
    )
    assert result.code == 0, result.err
    [result_file] = (tmp_path / "runs").rglob("result.json")
    stored = json.loads(result_file.read_text())
    # train_00001..7 have labels 1..7 and noisy labels 2..7,1: every one differs
    assert stored["noise"]["source"] == "dataset" and stored["noise"]["realised_rate"] == 1.0
    assert stored["test_size"] == 3
