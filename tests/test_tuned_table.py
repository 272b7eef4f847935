"""The tuned-vs-default table read back from the store: terminal, Markdown, CSV, and the report."""

from __future__ import annotations

import json

from nlbench.report.document import tuned_sections
from nlbench.report.tuned import markdown, tuned_table
from nlbench.tuned import OUTCOMES, MethodOutcome, load_outcomes, store_outcomes

CONTEXT = {"budget": 8, "unit": "trials", "sampler": "tpe", "pruner": "median", "tune_seeds": [101],
           "seeds": [1, 2, 3], "dataset": "ferplus", "noise": 0.4, "noise_mode": None, "epochs": 6, "sets": []}


def _outcomes() -> list[MethodOutcome]:
    return [MethodOutcome("standard", "standard-aaaa", trials=8, failed=0, spent=8, pruned=3, saved=9.0,
                          chosen={"train.backbone_lr": 0.000312, "train.weight_decay": 0.0}, val=41.25,
                          default={1: 30.0, 2: 32.0, 3: 34.0}, tuned={1: 33.0, 2: 34.0, 3: 38.0}),
            MethodOutcome("cct", "cct-bbbb", trials=8, failed=1, spent=8, chosen=None, val=None,
                          default={1: 40.0, 2: 41.0, 3: 42.0})]


def test_stored_outcomes_come_back_with_integer_seeds_and_damaged_files_are_skipped(tmp_path):
    store_outcomes(tmp_path, _outcomes(), CONTEXT)
    (tmp_path / OUTCOMES / "broken.json").write_text("{not json")
    (tmp_path / OUTCOMES / "odd.json").write_text(json.dumps({"outcome": {"method": "x"}, "context": CONTEXT}))
    [(context, outcomes)] = load_outcomes(tmp_path)
    assert context == CONTEXT and sorted(o.method for o in outcomes) == ["cct", "standard"]
    standard = next(o for o in outcomes if o.method == "standard")
    assert standard.tuned == {1: 33.0, 2: 34.0, 3: 38.0} and standard.saved == 9.0
    assert [o.method for _, found in load_outcomes(tmp_path, ["cct"]) for o in found] == ["cct"]


def test_the_table_pairs_tuned_with_default_and_names_the_choice():
    table = tuned_table(_outcomes(), CONTEXT)
    standard, cct = table.rows
    # differences 3, 2, 4: mean +3, sd 1, t = 3 / (1 / sqrt 3) = 5.196 with 2 df: p = 0.0351
    assert standard == ("standard", "8, 3 pruned", "32.00 ± 2.00", "35.00 ± 2.65", "+3.00 p=0.035",
                        "backbone_lr=0.000312, weight_decay=0 (41.25)")
    assert cct[1:] == ("8, 1 failed", "41.00 ± 1.00", "–", "–", "none scored")
    assert "noise 0.4" in table.title and "seeds 1, 2, 3" in table.title
    assert "pruning saved about 9 network-epochs" in table.note and "never the test set" in table.note


def test_table_tuned_prints_markdown_and_csv_and_refuses_latex(cli, tmp_path):
    store_outcomes(tmp_path, _outcomes(), CONTEXT)
    shown = cli("table", "--tuned", "--format", "markdown", "--runs-dir", str(tmp_path))
    assert shown.code == 0, shown.err
    assert "| standard | 8, 3 pruned | 32.00 ± 2.00 | 35.00 ± 2.65 | +3.00 p=0.035 |" in shown.out
    rows = cli("table", "--tuned", "--format", "csv", "--runs-dir", str(tmp_path)).out.splitlines()
    assert rows[0] == "table,method,trials,default,tuned,tuned - default,chosen (val %)" and len(rows) == 3
    refused = cli("table", "--tuned", "--format", "latex", "--runs-dir", str(tmp_path))
    assert refused.code == 2 and "rich, markdown or csv" in refused.err


def test_the_report_has_a_tuned_section_only_where_tune_stored_outcomes(tmp_path):
    assert tuned_sections(tmp_path) == []
    store_outcomes(tmp_path, _outcomes(), CONTEXT)
    [section] = tuned_sections(tmp_path)
    assert section.title == "Tuned vs default"
    assert markdown(tuned_table(_outcomes(), CONTEXT)) in section.blocks
    assert tuned_sections(tmp_path, ["standard"])[0].blocks[1].count("| standard |") == 1
    assert "| cct |" not in tuned_sections(tmp_path, ["standard"])[0].blocks[1]
