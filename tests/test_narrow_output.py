"""At 80 columns (COLUMNS in a pipe too) no listing cuts a name mid-word: it wraps or abbreviates
deliberately, and says so."""

from __future__ import annotations

import re

import pytest

from tests.conftest import TINY


@pytest.fixture
def narrow(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")


def _fits(text: str, width: int = 80) -> None:
    too_wide = [line for line in text.splitlines() if len(line.rstrip()) > width]
    assert not too_wide, too_wide
    assert "…" not in text


def test_methods_and_datasets_fit_80_columns_with_every_name_whole(cli, narrow):
    methods = cli("methods")
    assert methods.code == 0
    _fits(methods.out)
    for name in ("coteaching_plus", "dividemix", "standard"):
        assert any(line.split("│")[1].strip() == name for line in methods.out.splitlines() if "│" in line), name
    datasets = cli("datasets")
    assert datasets.code == 0
    _fits(datasets.out)
    assert "EmoLabel/list_patition_label.txt" in datasets.out  # the longest word of a summary, whole


def test_status_and_show_fit_80_columns(cli, narrow, tmp_path):
    runs = tmp_path / "runs"
    done = cli("run", "--method", "coteaching_plus", "--epochs", "1", "--runs-dir", str(runs), *TINY)
    assert done.code == 0, done.err
    status = cli("status", "--runs-dir", str(runs))
    _fits(status.out)
    assert "coteaching_plus" in status.out and "synthfer" in status.out
    assert "int = interrupted" in status.out  # the short headers are spelled out
    show = cli("show", "--runs-dir", str(runs), done.out.split("seed1-")[1][:6])
    assert show.code == 0, show.err
    _fits(show.out)
    assert "│ happiness" in show.out  # rows keep the full names
    assert "hap = happiness" in show.out and re.search(r"┃\s+hap\s+┃", show.out)


def test_columns_is_honoured_in_a_pipe(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    methods = cli("methods")
    assert max(len(line) for line in methods.out.splitlines()) <= 60
    monkeypatch.delenv("COLUMNS")
    wide = cli("methods")
    assert max(len(line) for line in wide.out.splitlines()) > 80  # a pipe without COLUMNS: no squeeze
