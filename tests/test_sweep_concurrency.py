"""Concurrency: a sweep of 8 runs with 4 workers into one store and one cold cache, read while it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import read_result, run_dirs, totals

COUNTING = '''
import os
import nlbench
from nlbench.plugins import get_registry


def _imagefolder():
    return get_registry().datasets["imagefolder"].cls


class Counting(_imagefolder()):
    """imagefolder that logs every image it decodes (one line per read, with the process id)."""

    name = "counting"

    def read_image(self, ref):
        with open(os.environ["NLBENCH_TEST_READ_LOG"], "a") as log:
            log.write(f"{os.getpid()} {ref}\\n")
        return super().read_image(ref)


@nlbench.hookimpl
def register_datasets(register):
    register(Counting)
'''


def _images(root: Path) -> int:
    count = 0
    for split in ("train", "test"):
        for c, cls in enumerate(("anger", "happy", "sad")):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(12 if split == "train" else 6):
                rng = np.random.default_rng([c, i, split == "train"])
                pixels = np.clip(rng.normal(60 + 70 * c, 30, (20, 20, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
                count += 1
    return count


@pytest.mark.slow
def test_a_parallel_sweep_trains_every_run_once_and_readers_never_see_a_torn_file(tmp_path, cli):
    data, runs, cache, log = tmp_path / "data", tmp_path / "runs", tmp_path / "cold-cache", tmp_path / "reads.log"
    images = _images(data)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "counting.py").write_text(COUNTING)
    config = tmp_path / "benchmark.toml"
    config.write_text(f'[plugins]\npaths = ["{plugins}"]\n')
    env = {**os.environ, "NLBENCH_TEST_READ_LOG": str(log), "NLBENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}
    args = [sys.executable, "-P", "-m", "nlbench", "sweep", "--config", str(config), "--dataset", "counting",
            "--methods", "standard", "--noise", "0,0.4", "--seeds", "1,2,3,4", "--epochs", "2", "--jobs", "4",
            "--data-root", str(data), "--cache-dir", str(cache), "--runs-dir", str(runs), "--no-table",
            "--set", "datasets.counting.options.size=16", "--set", "train.image_size=16",
            "--set", "train.batch_size=8", "--device", "cpu"]
    args[args.index("--dataset")] = "--datasets"
    sweep = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reads = 0
    try:
        while sweep.poll() is None:  # read the store while it is written: never a torn file, never a crash
            if not runs.exists():  # not created yet: readers say so (exit 2); wait for the first run folder
                time.sleep(0.05)
                continue
            for command in (("table", "--runs-dir", str(runs), "--format", "csv"), ("status", "--runs-dir", str(runs))):
                result = cli(*command, "--config", str(config))
                assert result.code in (0, 1) and "Traceback" not in result.err and "internal error" not in result.err
            for path in runs.rglob("*.json"):
                text = path.read_text()
                if text:
                    json.loads(text)  # atomic writes: complete or absent
                    reads += 1
            time.sleep(0.2)
        out, err = sweep.communicate(timeout=60)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, err[-3000:]
    assert "trained 8" in err and "failed 0" in err, err[-2000:]
    done = [p for p in run_dirs(runs) if (p / "result.json").is_file()]
    assert len(done) == 8
    assert len({read_result(p)["run_id"] for p in done}) == 8
    # Every image of the cold cache was decoded exactly once, by one process, for all 8 runs.
    lines = log.read_text().splitlines()
    assert len(lines) == images, (len(lines), images)
    assert len(list(cache.glob("*.u8"))) == 2 and not list(cache.glob("*.partial-*"))
    status = cli("status", "--runs-dir", str(runs), "--config", str(config))
    assert status.code == 0 and totals(status.out)[:2] == [8, 0]
    assert reads > 0
