"""Shared fixtures: a tiny synthfer configuration and a CLI runner that captures exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nlbench.cli import main
from nlbench.testing import tiny_sets

#: Flags that shrink synthfer so an end-to-end run takes a few seconds on a CPU: nlbench.testing's
#: tiny run, smaller still.
TINY = [flag for item in tiny_sets({"train_size": 96, "test_size": 48}, {"eval_batch_size": 64, "last_k": None})
        for flag in ("--set", item)]


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep caches out of the home folder and ignore any benchmark.toml of the working directory."""
    monkeypatch.setenv("NLBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.chdir(tmp_path_factory.getbasetemp())


class CliResult:
    """Exit code and captured output of one CLI call."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Call ``nlbench`` in-process: ``cli("run", "--epochs", "1")`` -> CliResult."""

    def call(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return call


def run_dirs(root: Path) -> list[Path]:
    """Every run directory (holding spec.json) under ``root``."""
    return sorted(p.parent for p in root.rglob("spec.json"))


def read_result(run: Path) -> dict:
    """The parsed result.json of a run directory."""
    return json.loads((run / "result.json").read_text())


def totals(status_out: str) -> list[int]:
    """The counts of the "all" row of `nlbench status`: done, running, interrupted, failed, todo, total."""
    import re

    match = re.search(r"^\W*all\b(.*)$", status_out, re.MULTILINE)
    assert match, status_out
    return [int(n) for n in re.findall(r"\d+", match.group(1))]


def whole_and_resumed(cli, tmp_path: Path, args: list[str], stop_after: int = 1) -> tuple[dict, dict]:
    """Train ``args`` (an ``nlbench run`` command line) once whole and once interrupted after
    ``stop_after`` epochs and resumed; returns both results (the resume must say "resuming")."""
    import nlbench
    from nlbench.plugins import get_registry

    class StopAfter:
        seen = 0

        @nlbench.hookimpl
        def on_epoch_end(self, run, record):
            StopAfter.seen += 1
            if StopAfter.seen == stop_after:
                raise KeyboardInterrupt

    whole = cli(*args, "--runs-dir", str(tmp_path / "whole"))
    assert whole.code == 0, whole.err
    manager = get_registry().manager
    observer = StopAfter()
    manager.register(observer)
    try:
        assert cli(*args, "--runs-dir", str(tmp_path / "resumed")).code == 130
    finally:
        manager.unregister(observer)
    final = cli(*args, "--runs-dir", str(tmp_path / "resumed"))
    assert final.code == 0 and "resuming" in final.err, final.err
    return read_result(run_dirs(tmp_path / "whole")[0]), read_result(run_dirs(tmp_path / "resumed")[0])
