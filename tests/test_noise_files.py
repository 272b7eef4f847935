"""Noise files that travel: export, train on exactly those labels, the official list format, damage and gaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, read_result, run_dirs
from nlbench.data.noise_file import match_labels, read_rows
from nlbench.errors import DataError


def export(cli, path: Path, *extra: str):
    out = cli("noise", "export", "--dataset", "synthfer", "--noise", "0.4", "--seed", "3", "--out", str(path),
              *TINY, *extra)
    assert out.code == 0, out.err
    return out


def train(cli, runs: Path, *extra: str):
    out = cli("run", "-m", "standard", "-d", "synthfer", "-e", "1", "--runs-dir", str(runs), "-q", *TINY, *extra)
    return out


def test_a_run_on_an_exported_file_trains_on_exactly_the_injected_labels(cli, tmp_path):
    file = tmp_path / "noise.csv"
    export(cli, file)
    assert train(cli, tmp_path / "injected", "-n", "0.4", "--seed", "3").code == 0
    done = train(cli, tmp_path / "file", "--noise-file", str(file))  # seed 1: the file decides the labels
    assert done.code == 0, done.err
    [injected], [from_file] = run_dirs(tmp_path / "injected"), run_dirs(tmp_path / "file")
    assert np.array_equal(np.load(injected / "noisy_labels.npy"), np.load(from_file / "noisy_labels.npy"))
    result = read_result(from_file)
    import hashlib

    assert result["noise"]["source"] == "file"
    assert result["noise"]["file"]["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert result["noise"]["realised_rate"] == read_result(injected)["noise"]["realised_rate"]
    # Same file, same run; another file (other labels), another run id.
    other = tmp_path / "other.csv"
    cli("noise", "export", "--dataset", "synthfer", "--noise", "0.2", "--seed", "3", "--out", str(other), *TINY)
    assert train(cli, tmp_path / "file", "--noise-file", str(file)).code == 0
    assert len(run_dirs(tmp_path / "file")) == 1
    assert train(cli, tmp_path / "file", "--noise-file", str(other)).code == 0
    assert len(run_dirs(tmp_path / "file")) == 2
    table = cli("table", "--runs-dir", str(tmp_path / "file"), "--format", "markdown")
    assert table.code == 0, table.err
    sha = hashlib.sha256(file.read_bytes()).hexdigest()[:8]
    assert f"file {sha} ({100 * result['noise']['realised_rate']:.1f}%)" in table.out


def test_a_damaged_or_incomplete_file_is_refused_and_nothing_is_trained(cli, tmp_path):
    file = tmp_path / "noise.csv"
    export(cli, file)
    lines = file.read_text().splitlines()
    edited = tmp_path / "edited.csv"
    edited.write_text("\n".join(lines[:5] + [lines[5].replace(",0,", ",1,", 1) if ",0," in lines[5] else
                                             lines[5].rsplit(",", 2)[0] + ",0,neutral"] + lines[6:]) + "\n")
    out = train(cli, tmp_path / "runs", "--noise-file", str(edited))
    assert out.code == 2 and "is damaged" in out.err and "Traceback" not in out.err
    short = tmp_path / "short.csv"
    body = [line for line in lines if not line.startswith("# labels-sha256")]
    short.write_text("\n".join(body[:-10]) + "\n")
    out = train(cli, tmp_path / "runs", "--noise-file", str(short))
    assert out.code == 2 and "has no label for 10 of the 96 training samples" in out.err
    out = train(cli, tmp_path / "runs", "--noise-file", str(tmp_path / "nope.csv"))
    assert out.code == 2 and "does not exist" in out.err
    assert not (tmp_path / "runs").exists() or not run_dirs(tmp_path / "runs")


def test_a_file_of_other_data_is_refused(cli, tmp_path):
    file = tmp_path / "noise.csv"
    export(cli, file)
    out = train(cli, tmp_path / "runs", "--noise-file", str(file), "--set", "datasets.synthfer.options.seed=5")
    assert out.code == 2 and "other options (seed differ)" in out.err


def test_name_label_lists_count_from_the_datasets_base_and_by_class_name(cli, tmp_path):
    lines = [f"{i} {1 + (i % 7)}" for i in range(96)]  # 1-based, as RAF-DB's published lists
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(lines) + "\n")
    out = train(cli, tmp_path / "runs", "--noise-file", str(listing))
    assert out.code == 2 and "give --noise-file-base 1" in out.err  # synthfer counts from 0: 7 is out of range
    assert train(cli, tmp_path / "runs", "--noise-file", str(listing), "--noise-file-base", "1").code == 0
    [run] = run_dirs(tmp_path / "runs")
    assert np.load(run / "noisy_labels.npy").tolist() == [i % 7 for i in range(96)]
    names = tmp_path / "names.txt"
    names.write_text("".join(f"{i} {'happiness' if i % 2 else 'Neutral'}\n" for i in range(100)))  # 4 extra rows
    preview = cli("noise", "preview", "--dataset", "synthfer", "--noise-file", str(names), *TINY)
    assert preview.code == 0, preview.err
    assert "4 of its rows name no training sample and were ignored" in " ".join(preview.out.split())


def test_official_raf_db_names_match_aligned_images_and_paths():
    samples = ["Image/aligned/train_00001_aligned.jpg", "Image/aligned/train_00002_aligned.jpg"]
    rows = [("train_00002.jpg", 3), ("/data/RAF/Image/aligned/train_00001_aligned.jpg", 5), ("test_0001.jpg", 1)]
    labels, unmatched = match_labels(Path("list.txt"), rows, samples)
    assert labels.tolist() == [5, 3] and unmatched == 1
    with pytest.raises(DataError, match="two different labels"):
        match_labels(Path("list.txt"), rows + [("train_00002_aligned.jpg", 4)], samples)


def test_list_rows_are_checked(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("a 1 2\n")
    with pytest.raises(DataError, match="expected '<name> <label>'"):
        read_rows(bad, ("x", "y"), 0)
    bad.write_text("a cat\n")
    with pytest.raises(DataError, match="neither a class number nor one of x, y"):
        read_rows(bad, ("x", "y"), 0)
    bad.write_bytes(b"\xff\xfe a 1\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_rows(bad, ("x", "y"), 0)


def test_a_sweep_trains_every_method_on_the_same_file(cli, tmp_path):
    file = tmp_path / "noise.csv"
    export(cli, file)
    out = cli("sweep", "--methods", "standard,coteaching", "--datasets", "synthfer", "--noise-file", str(file),
              "--epochs", "1", "--runs-dir", str(tmp_path / "runs"), "--jobs", "1", "-q", "--no-table", *TINY)
    assert out.code == 0, out.err
    runs = run_dirs(tmp_path / "runs")
    assert len(runs) == 2
    first, second = (np.load(r / "noisy_labels.npy") for r in runs)
    assert np.array_equal(first, second)
    assert {read_result(r)["noise"]["file"]["sha256"] for r in runs} == {read_result(runs[0])["noise"]["file"]["sha256"]}


def test_a_row_is_matched_at_its_own_level_only():
    samples = ["a/x.jpg", "b/x_aligned.jpg"]
    labels, _ = match_labels(Path("f"), [("x_aligned.jpg", 2), ("a/x.jpg", 1)], samples)
    assert labels.tolist() == [1, 2]


def test_a_file_exported_from_other_files_at_the_same_names_is_refused(cli, tmp_path):
    from PIL import Image

    for root, side in ((tmp_path / "a", 20), (tmp_path / "b", 24)):
        for cls in ("happy", "sad"):
            (root / cls).mkdir(parents=True)
            for i in range(6):
                Image.fromarray(np.full((side, side, 3), 40 * i, np.uint8)).save(root / cls / f"{i}.png")
    file = tmp_path / "a.csv"
    out = cli("noise", "export", "--dataset", "imagefolder", "--data-root", str(tmp_path / "a"), "--noise", "0.3",
              "--out", str(file))
    assert out.code == 0, out.err
    same = cli("noise", "preview", "--dataset", "imagefolder", "--data-root", str(tmp_path / "a"), "--noise-file",
               str(file))
    assert same.code == 0, same.err
    other = cli("noise", "preview", "--dataset", "imagefolder", "--data-root", str(tmp_path / "b"), "--noise-file",
                str(file))
    assert other.code == 2 and "exported from other training samples" in other.err
