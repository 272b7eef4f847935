"""Output files: nothing a user wrote is overwritten unless asked, and no path is guessed."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TINY


@pytest.fixture
def store(cli, tmp_path) -> Path:
    root = tmp_path / "runs"
    assert cli("run", "-m", "standard", "-e", "1", "--runs-dir", str(root), "-q", *TINY).code == 0
    return root


def test_export_never_overwrites_a_users_file_unless_asked(cli, store, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    refused = cli("export", "--runs-dir", str(store), "--out", str(notes))
    assert refused.code == 2 and "was not written by this nlbench command; pass --overwrite" in refused.err
    assert notes.read_text() == "my notes\n"
    assert cli("export", "--runs-dir", str(store), "--out", str(notes), "--overwrite").code == 0
    assert notes.read_text().startswith("path,run_id,")
    again = cli("export", "--runs-dir", str(store), "--out", str(notes))  # its own earlier export: replaced
    assert again.code == 0, again.err


@pytest.mark.parametrize(("args", "message"), [
    (["export", "--out", ""], "--out is empty"),
    (["export", "--out", "{tmp}"], "is a folder; give the path of a file in it"),
    (["export", "--out", "{tmp}/missing/x.csv"], "does not exist; create it first"),
    (["noise", "export", "--dataset", "synthfer", "--out", "{tmp}/missing/x.csv"], "does not exist; create it first"),
    (["noise", "export", "--dataset", "synthfer", "--out", "{tmp}/notes.txt"], "pass --overwrite"),
    (["crowd", "simulate", "--out", "{tmp}/notes.txt"], "pass --overwrite"),
])
def test_output_paths_that_would_lose_something_are_refused(cli, store, tmp_path, args, message):
    (tmp_path / "notes.txt").write_text("mine\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if argv[0] == "export":
        argv += ["--runs-dir", str(store)]
    out = cli(*argv)
    assert out.code == 2 and message in out.err and "internal error" not in out.err, out.err
    assert not (tmp_path / "missing").exists() and (tmp_path / "notes.txt").read_text() == "mine\n"


def test_a_noise_file_can_be_exported_again_to_the_same_path(cli, tmp_path):
    path = tmp_path / "noise.csv"
    for _ in range(2):
        out = cli("noise", "export", "--dataset", "synthfer", "--noise", "0.2", "--out", str(path), *TINY)
        assert out.code == 0, out.err
