"""Data are identified by content: images rewritten with other pixels of the same size change the
run id and are decoded again, a damaged cache entry is rebuilt, and a full disk is a message."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
from PIL import Image

from nlbench.data.cache import load_split
from nlbench.plugins import get_registry
from nlbench.spec.config import Config
from nlbench.spec.resolve import RunRequest, resolve_spec


def make_folder(root: Path, shade: int = 0) -> Path:
    """Two classes of 8 BMP images (a BMP's size depends on its dimensions only)."""
    for c, name in enumerate(("happy", "sad")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(8):
            pixels = np.full((12, 12, 3), (40 * c + 10 * i + shade) % 256, np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.bmp")
    return root


def spec_of(root: Path):
    return resolve_spec(RunRequest(method="standard", dataset="imagefolder", data_root=str(root)), Config(),
                        get_registry())


def dataset(root: Path):
    return get_registry().dataset("imagefolder")(root, {})


def rewrite_same_size(path: Path, value: int) -> None:
    size = path.stat().st_size
    Image.fromarray(np.full((12, 12, 3), value, np.uint8)).save(path)
    assert path.stat().st_size == size


def test_same_size_images_with_other_pixels_get_another_run_id_and_are_decoded_again(tmp_path):
    root = make_folder(tmp_path / "data")
    before = spec_of(root)
    assert spec_of(root).run_id == before.run_id  # unchanged files: the same id, from remembered digests
    old = load_split(dataset(root), "train", tmp_path / "cache").images.clone()
    rewrite_same_size(root / "happy" / "0.bmp", 250)
    after = spec_of(root)
    assert after.data.fingerprint != before.data.fingerprint and after.run_id != before.run_id
    new = load_split(dataset(root), "train", tmp_path / "cache").images
    assert not np.array_equal(old.numpy(), new.numpy())  # not the old entry's pixels
    assert np.isin(250, new.numpy())


def test_unchanged_files_are_not_read_again(tmp_path, monkeypatch):
    import nlbench.identity as identity

    root = make_folder(tmp_path / "data")
    first = dataset(root).fingerprint()
    reads = []
    real = identity.file_sha256
    monkeypatch.setattr(identity, "file_sha256", lambda path: reads.append(path) or real(path))
    assert dataset(root).fingerprint() == first and reads == []
    rewrite_same_size(root / "sad" / "3.bmp", 7)
    assert dataset(root).fingerprint() != first and [p.name for p in reads] == ["3.bmp"]


def test_a_cache_entry_replaced_by_other_bytes_of_the_same_size_is_rebuilt(tmp_path, capsys):
    root = make_folder(tmp_path / "data")
    cache = tmp_path / "cache"
    good = load_split(dataset(root), "train", cache).images.clone()
    [entry] = cache.glob("imagefolder-train-*.u8")
    entry.write_bytes(bytes(entry.stat().st_size))  # zeros, same size, a new mtime
    again = load_split(dataset(root), "train", cache).images
    assert np.array_equal(good.numpy(), again.numpy())
    assert "do not match their record; decoding them again" in capsys.readouterr().err


def test_a_full_disk_under_the_cache_is_one_message_and_leaves_no_partial_file(cli, tmp_path, monkeypatch):
    root = make_folder(tmp_path / "data")

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    out = cli("run", "-m", "standard", "-d", "imagefolder", "--data-root", str(root), "-e", "1", "--cache-dir",
              str(tmp_path / "cache"), "--runs-dir", str(tmp_path / "runs"))
    assert out.code == 2 and "the disk (or quota) is full" in out.err and "internal error" not in out.err
    assert not list((tmp_path / "cache").glob("*partial*"))


def test_the_same_files_elsewhere_keep_their_run_id(tmp_path):
    import shutil

    root = make_folder(tmp_path / "laptop" / "data")
    copy = tmp_path / "cluster" / "data"
    shutil.copytree(root, copy)  # new paths and modification times, the same bytes
    assert spec_of(root).run_id == spec_of(copy).run_id
