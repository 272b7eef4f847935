"""The CLI's contract: usage errors exit 2 with typer's message, Ctrl-C exits 130, start-up stays light."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("args", "message"), [
    ([], "Usage: nlbench"),
    (["frobnicate"], "No such command 'frobnicate'"),
    (["run", "--bogus"], "No such option: --bogus"),
    (["run", "--noise", "abc"], "Invalid value for '--noise'"),
    (["run", "--seed", "1.5"], "Invalid value for '--seed'"),
    (["prepare"], "Missing option '--dataset'"),
])
def test_usage_errors_exit_2_with_typers_message(cli, args, message):
    result = cli(*args)
    assert result.code == 2, (result.code, result.err)
    assert message in result.err
    assert "internal error" not in result.err and "Traceback" not in result.err


def test_help_exits_0(cli):
    result = cli("--help")
    assert result.code == 0 and "run" in result.out and "table" in result.out


def test_ctrl_c_prints_the_resume_hint_and_exits_130(cli, monkeypatch):
    from nlbench.train.engine import Engine

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Engine, "execute", interrupted)
    result = cli("run", "--set", "datasets.synthfer.options.train_size=14", "--set",
                 "datasets.synthfer.options.test_size=7")
    assert result.code == 130
    assert "run the same command again to resume" in result.err


def test_an_nlbench_error_is_one_paragraph_with_its_exit_code(cli):
    result = cli("run", "--method", "nosuch")
    assert result.code == 2
    assert result.err.startswith("error: unknown method 'nosuch'") and "Traceback" not in result.err


def _modules_after(code: str) -> set[str]:
    env = {**os.environ, "NLBENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}
    done = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_help_imports_neither_torch_nor_timm_nor_pandas():
    loaded = _modules_after("import nlbench.cli\nfrom nlbench.cli import app")
    assert not {"torch", "timm", "pandas", "numpy", "click"} & loaded


def test_table_and_plugins_do_not_import_timm(tmp_path):
    table = _modules_after(
        f"from nlbench.cli import main\ntry:\n    main(['table', '--runs-dir', {str(tmp_path)!r}])\nexcept SystemExit:\n    pass")
    assert "torch" not in table and "timm" not in table
    plugins = _modules_after("from nlbench.cli import main\ntry:\n    main(['plugins'])\nexcept SystemExit:\n    pass")
    assert "timm" not in plugins  # the method plugins import torch; building a network is what needs timm


def test_no_source_imports_click():
    for path in (ROOT / "nlbench").rglob("*.py"):
        text = path.read_text()
        assert "import click" not in text and "from click" not in text, path


@pytest.mark.slow
def test_a_wheel_carries_every_module_and_the_builtin_plugins(tmp_path):
    """A built wheel, installed on its own, holds every module of nlbench/, the built-in plugins and
    the paper's values, and imports each module (a subpackage missing from pyproject.toml fails here)."""
    source = tmp_path / "src"  # a copy: building writes build/ and egg-info next to the sources
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "runs",
                                                                "__pycache__", ".pytest_cache", ".ruff_cache"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("nlbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "nlbench").rglob("*.py"))
    assert [m for m in modules if m not in names] == []
    assert "nlbench/report/published/cct_paper.toml" in names
    for plugin in ("methods/standard.py", "methods/cct.py", "datasets/synthfer.py", "datasets/ferplus.py",
                   "executors/local.py", "executors/slurm.py"):
        assert f"nlbench/_builtin/{plugin}" in names, plugin
    assert not any(n.startswith(("datasets/", "methods/", "executors/", "tests/", "benchmarks/")) for n in names)
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    dotted = [m.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for m in modules
              if not m.endswith("__main__.py")]
    code = ("import importlib, warnings, nlbench\nwarnings.simplefilter('ignore')\n"
            f"for name in {dotted!r}:\n    importlib.import_module(name)\n"
            "from nlbench.plugins import get_registry\nregistry = get_registry()\n"
            "print(nlbench.__file__, sorted(registry.methods), sorted(registry.datasets), sorted(registry.executors))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(site)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith(str(site)) and "'cct'" in run.stdout and "'synthfer'" in run.stdout, run.stdout
    assert "'local'" in run.stdout and "'slurm'" in run.stdout, run.stdout


@pytest.mark.slow
def test_sigterm_leaves_a_run_interrupted_and_resumable(tmp_path):
    import json
    import signal
    import time

    runs = tmp_path / "runs"
    args = [sys.executable, "-P", "-m", "nlbench", "run", "--method", "standard", "--epochs", "50", "--device", "cpu",
            "--runs-dir", str(runs), "--set", "datasets.synthfer.options.train_size=64",
            "--set", "datasets.synthfer.options.test_size=32", "--set", "datasets.synthfer.options.size=16",
            "--set", "train.image_size=16"]
    env = {**os.environ, "NLBENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}
    run = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.read_text().strip() for p in runs.rglob("metrics.jsonl")):
        time.sleep(0.3)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130 and "resume" in err, err[-2000:]
    [status] = list(runs.rglob("status.json"))
    assert json.loads(status.read_text())["state"] == "interrupted"


def test_version_prints_the_package_version(cli):
    import nlbench

    shown = cli("--version")
    assert shown.code == 0 and shown.out.startswith(f"nlbench {nlbench.__version__}")


def test_settings_lists_every_training_setting_with_its_default_and_the_configured_value(cli, tmp_path):
    config = tmp_path / "benchmark.toml"
    config.write_text("[train]\nepochs = 12\n")
    shown = cli("settings", "--config", str(config))
    out = " ".join(shown.out.split())
    assert shown.code == 0 and "train_size" in out and "val_fraction" in out and "float [0, 0.5]" in out
    assert "│ epochs │ 40 │ 12 │" in out and "run defaults" in out


@pytest.mark.parametrize("group", [[], ["noise"], ["crowd"]])
def test_help_at_80_columns_cuts_no_summary(cli, monkeypatch, group):
    # click cuts a command's first docstring sentence to fit, mid-word, with "...": each command
    # has a summary written to fit instead.
    monkeypatch.setenv("COLUMNS", "80")
    result = cli(*group, "--help")
    assert result.code == 0
    commands = result.out.split("Commands:")[1].splitlines()
    assert len([line for line in commands if line.strip()]) >= 2
    for line in commands:
        assert len(line) <= 80 and not line.rstrip().endswith(("...", "…")), line
