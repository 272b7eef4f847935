"""The papers' published numbers (nlbench/report/published/*_paper.toml) and `table --with-paper --paper`."""

from __future__ import annotations

import re
import tomllib

import pytest
from test_tables import _markdown, _result

from nlbench.plugins import get_registry
from nlbench.report.published import PUBLISHED_DIR, SUFFIX, load_paper, paper_names
from nlbench.report.tables import build_table

#: Methods the papers compare with that nlbench does not implement (printed rows, never shown).
OTHER_METHODS = {
    # the CCT paper's Tables 2 and 4-7
    "ran", "gacnn", "oadn", "gcn", "georgescu_et_al", "ipa2lt", "thin", "esr_9", "covariance_pooling",
    "mahmoudi_et_al", "liu_et_al", "annotators_agreement", "kollias_et_al", "hero", "yongjian_et_al", "fmpn",
    # LA-Net's Table 3 (and its ResNet-50 row, kept apart from `lanet`, the ResNet-18 row)
    "dacl", "ktn", "fdrl", "arm", "ldlva", "transfer", "lanet_resnet50",
}
ENTRY_KEYS = {"table", "method", "dataset", "noise", "value"}


def _raw(name):
    with open(PUBLISHED_DIR / f"{name}{SUFFIX}", "rb") as handle:
        return tomllib.load(handle)


def test_there_are_the_cct_and_lanet_papers():
    assert {"cct", "lanet"} <= set(paper_names())


@pytest.mark.parametrize("name", paper_names())
def test_every_published_file_loads_and_is_well_formed(name):
    data = _raw(name)
    registry = get_registry()
    assert data["source"]["paper"] and data["source"]["note"]
    entries = data["results"]
    assert entries
    for entry in entries:
        assert ENTRY_KEYS <= set(entry), entry
        assert re.fullmatch(r"table\d+", entry["table"]), entry
        assert entry["method"] in set(registry.methods) | OTHER_METHODS, entry
        assert entry["dataset"] in registry.datasets, entry
        assert 0 <= entry["value"] <= 100, entry
        noise = entry["noise"]
        assert noise == "real" or (isinstance(noise, float) and 0 <= noise < 1), entry
        assert 0 <= entry.get("std", 0) < 10, entry
    published = load_paper(name)
    assert published.name == name
    assert len(published.cells) == len(entries)  # no two entries for one cell
    assert set(published.caveats) <= set(registry.datasets)


@pytest.mark.parametrize("name", [n for n in paper_names() if n != "cct"])
def test_the_newer_files_name_the_repository_commit_and_image_of_every_number(name):
    source = _raw(name)["source"]
    assert re.fullmatch(r"[\w.-]+/[\w.-]+", source["repository"]) and re.fullmatch(r"[0-9a-f]{40}", source["commit"])
    for entry in _raw(name)["results"]:
        assert entry["image"] in source["note"], entry  # the note lists each image with its table
        assert entry.get("label"), entry  # the row as printed


@pytest.mark.parametrize(("table", "method", "dataset", "noise", "value"), [
    ("table1", "lanet", "rafdb", 0.3, 85.33),  # printed 85.33±0.18
    ("table1", "lanet", "affectnet8", 0.1, 62.85),
    ("table1", "standard", "rafdb", 0.1, 81.01),  # "Baseline"
    ("table1", "scn", "rafdb", 0.2, 80.10),  # the CCT paper prints 80.01 for the same cell
    ("table1", "rul", "ferplus", 0.3, 83.90),
    ("table1", "eac", "affectnet8", 0.2, 60.29),
    ("table3", "lanet", "rafdb", 0.0, 90.81),  # the ResNet-18 row
    ("table3", "lanet_resnet50", "rafdb", 0.0, 91.56),
    ("table3", "dmue", "affectnet8", 0.0, 62.84),
    ("table3", "eac", "affectnet7", 0.0, 65.32),
])
def test_lanet_cells_as_printed(table, method, dataset, noise, value):
    assert load_paper("lanet").value(table, method, dataset, noise) == value


def test_lanet_has_no_cell_its_tables_leave_out():
    lanet = load_paper("lanet")
    assert lanet.value("table1", "lanet", "rafdb", 0.4) is None  # Table 1 stops at 30 %
    assert lanet.value("table3", "dmue", "affectnet7", 0.0) is None  # printed "-"
    assert lanet.value("table1", "lanet", "affectnet7", 0.1) is None  # Table 1's AffectNet is stored as affectnet8
    stds = {(e["method"], e["dataset"], e["noise"]): e["std"] for e in _raw("lanet")["results"] if "std" in e}
    assert len(stds) == 9 and stds[("lanet", "rafdb", 0.3)] == 0.18  # printed ± only in LA-Net's own Table 1 row


def test_unknown_paper_names_the_known_ones():
    with pytest.raises(KeyError, match="known papers: cct, lanet"):
        load_paper("nosuch")


def _runs(root):
    _result(root, "standard", "rafdb", 0.1, 0, 80.0, 81.0)
    _result(root, "lanet", "rafdb", 0.3, 0, 84.0, 85.0)


def test_with_paper_shows_the_cct_paper_by_default(tmp_path):
    _runs(tmp_path)
    table = build_table(tmp_path, "last", with_paper=True)
    # table1 gives each plain method every noise row: the empty cells get the paper's value too
    assert table.paper == {(("10", "standard"), "rafdb"): 81.74, (("30", "standard"), "rafdb"): 74.31}
    assert "Consensual Collaborative Training" in table.caption and "LA-Net" not in table.caption
    assert build_table(tmp_path, "last", with_paper=True, paper="cct").paper == table.paper


def test_paper_lanet_shows_lanets_values_only_and_names_it(tmp_path):
    _runs(tmp_path)
    table = build_table(tmp_path, "last", with_paper=True, paper="lanet")
    # the Standard cell now shows LA-Net's "Baseline", never the CCT paper's 81.74
    assert table.paper == {(("10", "standard"), "rafdb"): 81.01, (("30", "standard"), "rafdb"): 75.50,
                           (("10", "lanet"), "rafdb"): 88.75, (("30", "lanet"), "rafdb"): 85.33}
    assert "LA-Net: Landmark-Aware Learning" in table.caption and "Consensual" not in table.caption
    assert "84.00 (1); paper 85.33 (Δ -1.33)" in _markdown(table)
    assert "affectnet8" not in table.caption  # a dataset's caveat only where its column has a paper value


def test_a_columns_caveat_follows_its_paper_values(tmp_path):
    _result(tmp_path, "eac", "affectnet8", 0.2, 0, 59.0, 60.0)
    table = build_table(tmp_path, "last", with_paper=True, paper="lanet")
    assert table.paper == {(("20", "eac"), "affectnet8"): 60.29}
    assert "without a class count" in table.caption and "shown under affectnet8" in table.caption


def test_a_paper_without_the_tables_cells_says_so(tmp_path):
    _result(tmp_path, "cct", "rafdb", 0.4, 0, 60.0, 61.0, hparams={"networks": 3, "consistency": True})
    table = build_table(tmp_path, "last", layout="table8", with_paper=True, paper="lanet")
    assert not table.paper
    assert any("paper 'lanet' prints none of this table's cells" in note for note in table.notes)


def test_cli_paper_option_implies_with_paper_and_checks_the_name(cli, tmp_path):
    _runs(tmp_path)
    shown = cli("table", "--runs-dir", str(tmp_path), "--paper", "lanet", "--format", "markdown")
    assert shown.code == 0, shown.err
    assert "paper 85.33" in shown.out and "paper 81.01" in shown.out
    wrong = cli("table", "--runs-dir", str(tmp_path), "--paper", "nosuch")
    assert wrong.code == 2 and "unknown paper 'nosuch' for --paper; choose one of cct, lanet" in wrong.err
