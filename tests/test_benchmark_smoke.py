"""Smoke test of benchmarks/throughput (run as ``python benchmarks/throughput``) on the CPU: it runs,
exits 0 and prints its rows.

No timing is asserted: the figures only mean something on a GPU (benchmarks/gpu_check.sh). The
quick run exercises every code path the GPU measurement relies on that a CPU can run: the JPEG
data set and nlbench's decode cache, the reference DataLoader loop, the engine loop on the
engine's own pieces, the patched "fewer-syncs" path, the prefetching host cache, evaluation, the
AffectNet-scale memmap, the JSON and ``--show``. nlbench comes from its installation: nothing puts the
repository root on ``sys.path`` (where ``import datasets`` would find the plugin folder).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "throughput"  # a folder with __main__.py

#: Rows the quick CPU run must print, each with status ok (except the CUDA-only one).
TRAINED = (
    "reference",
    "nlbench cct/train",
    "nlbench cct/distill",
    "lever fewer-syncs",
    "lever host-prefetch",
    "affectnet S=16 host",
)
OTHER_OK = (
    "probe matmul",
    "reference loader-only",
    "eval cct/train bs=48 host",
    "eval cct/train bs=48 device",
    "eval cct/distill bs=48 host",
    "affectnet S=16 build",
)
CUDA_ONLY = ("affectnet S=16 device",)


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["NLBENCH_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_help_explains_the_options() -> None:
    done = _run("--help", timeout=60)
    assert done.returncode == 0, done.stderr
    for text in ("--device", "--quick", "--scale", "--time-budget", "--json", "--levers",
                 "probe matmul", "reference", "lever compile", "x ref", "syncs/step"):
        assert text in done.stdout, text


def test_quick_cpu_run_of_gpu_check_prints_every_row(tmp_path: Path) -> None:
    """benchmarks/gpu_check.sh --quick: the GPU script's own command line, on the CPU at tiny sizes."""
    out = tmp_path / "throughput.json"
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "BENCH_ARGS": f"--scratch {tmp_path}"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert (tmp_path / "env.txt").is_file() and "nlbench" in (tmp_path / "env.txt").read_text()
    done.stdout = done.stdout[: done.stdout.rindex("================ results")]  # the table before the replay
    table = done.stdout[done.stdout.rindex("\nrow ") :]  # the final table
    for name in TRAINED + OTHER_OK + CUDA_ONLY:
        assert re.search(rf"^{re.escape(name)}\s", table, re.MULTILINE), f"row {name!r} missing:\n{table}"

    rows = {row["name"]: row for row in json.loads(out.read_text())["rows"]}
    for name in TRAINED + OTHER_OK:
        assert rows[name]["status"] == "ok", (name, rows[name]["status"])
    for name in TRAINED:
        assert rows[name]["img_s"] > 0 and rows[name]["step_ms"] > 0, name
    assert rows["reference"]["x_ref"] == 1.0
    assert rows["nlbench cct/train"]["x_ref"] > 0
    assert rows["nlbench cct/train"]["flops_per_img_g"] > 0  # FlopCounterMode counted the CCT step
    assert rows["eval cct/train bs=48 host"]["eval_s"] > 0
    assert rows[CUDA_ONLY[0]]["status"].startswith("skipped")
    assert not [name for name, row in rows.items() if row["status"].startswith("failed")]

    shown = _run("--show", str(out), timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "nlbench cct/train" in shown.stdout and "reference_img_s" in shown.stdout
    assert not list(tmp_path.glob("nlbench-affectnet-*")), "the AffectNet memmap must be deleted"


def test_cpu_protocol_mode_compares_each_method_with_its_own_reference_and_runs_the_cpu_levers(tmp_path: Path) -> None:
    """The fer-cpu comparison: no augmentation on both sides, Standard's and CCT's reference loops, bf16 rows."""
    out = tmp_path / "cpu.json"
    done = _run("--device", "cpu", "--quick", "--augmentation", "none", "--reference-methods", "cct,standard",
                "--methods", "cct,standard", "--levers", "cpu-bf16,cpu-bf16-nchw", "--only", "reference,methods,levers,eval",
                "--json", str(out), timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    rows = {row["name"]: row for row in json.loads(out.read_text())["rows"]}
    for name in ("reference", "reference standard", "nlbench cct/train", "nlbench standard/train",
                 "lever cpu-bf16", "lever cpu-bf16-nchw", "eval cct/train bs=48 host cpu-bf16"):
        assert rows[name]["status"] == "ok", (name, rows[name]["status"])
    assert rows["reference"]["x_ref"] == 1.0 and rows["reference standard"]["x_ref"] == 1.0
    # Each method's ratio is over its own reference loop.
    standard_ref = rows["reference standard"]["img_s"]
    assert abs(rows["nlbench standard/train"]["x_ref"] - rows["nlbench standard/train"]["img_s"] / standard_ref) < 1e-6
    assert abs(rows["nlbench cct/train"]["x_ref"] - rows["nlbench cct/train"]["img_s"] / rows["reference"]["img_s"]) < 1e-6
    assert "resize + normalise" in rows["reference standard"]["notes"] and "1 ResNet-18" in rows["reference standard"]["notes"]


def test_a_timing_row_keeps_its_time_when_the_loss_goes_non_finite(monkeypatch) -> None:
    """EngineLoop records the engine's non-finite-loss failure instead of aborting; other failures propagate."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks" / "throughput"))
    from measure import EngineLoop

    from nlbench.errors import RunFailed

    class Runner:
        device, settings, steps, step_index = None, None, 2, 0

        def __init__(self, error: str) -> None:
            self.error, self.finished = error, 0

        def start(self, epoch: int) -> None:
            self.step_index = 0

        def step(self) -> None:
            self.step_index += 1

        def finish(self) -> dict:
            self.finished += 1
            raise RunFailed(self.error)

    nan = Runner("the loss became nan in phase train, epoch 1, batch 2; the run is marked failed")
    loop = EngineLoop(nan)  # type: ignore[arg-type]
    loop.run(5)  # crosses two epoch boundaries
    loop.end_epoch()
    assert nan.finished == 3 and loop.nonfinite is not None and loop.nonfinite.startswith("the loss became nan")
    other = EngineLoop(Runner("train_step raised KeyError"))  # type: ignore[arg-type]
    other.run(2)
    with pytest.raises(RunFailed, match="KeyError"):
        other.end_epoch()
