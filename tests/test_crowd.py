"""Crowd truth inference: PM by hand, its edge cases, Dawid-Skene and PM against majority on simulated crowds, the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nlbench.data.crowd import (
    CrowdDesign,
    accuracy,
    dawid_skene,
    from_triples,
    infer,
    kept_items,
    majority,
    pm,
    pm_expertise,
    simulate,
)


def votes_of(table: dict[str, str], annotators: str = "abc", labels=("0", "1", "2")):
    return from_triples([(item, a, v) for item, row in table.items() for a, v in zip(annotators, row)], labels)


def test_pm_on_a_hand_computed_example():
    # Round 1 (e = 1): majority 0, 1, 2, 1, 2. Errors: a 1 (item 4), b 0, c 3 (items 1, 2, 5).
    # e_a = -log(1/3) = log 3; e_b: no error, counted as half an error: -log(0.5/3) = log 6; e_c = -log(3/3) = 0.
    # Round 2: item 4: label 0 weighs log 3 (a), label 1 weighs log 6 + 0 (b, c): still 1. Fixed point.
    votes = votes_of({"i1": "001", "i2": "110", "i3": "222", "i4": "011", "i5": "220"})
    result = pm(votes)
    assert result.labels.tolist() == [0, 1, 2, 1, 2]
    np.testing.assert_allclose(result.expertise, [math.log(3), math.log(6), 0.0], atol=1e-12)
    assert result.errors.tolist() == [1, 0, 3]
    # item 4: b's weight over the item's total weight
    assert result.confidence[3] == pytest.approx(math.log(6) / (math.log(3) + math.log(6)))


def test_pm_weighs_experts_over_a_plain_majority():
    # Two annotators who agree with the crowd everywhere else outvote three who err often.
    table = {f"e{i}": "00000" for i in range(6)} | {"x": "00111"}
    table |= {f"n{i}": "00" + v for i, v in enumerate(["120", "201", "012", "102"])}
    votes = votes_of(table, "abcde")
    assert majority(votes).labels[list(table).index("x")] == 1
    assert pm(votes).labels[list(table).index("x")] == 0


def test_pm_edge_cases():
    np.testing.assert_allclose(pm_expertise(np.array([0, 0])), [1.0, 1.0])  # nobody erred: unchanged
    np.testing.assert_allclose(pm_expertise(np.array([2, 2])), [0.0, 0.0])  # all equal: all weights 0
    # All weights 0 then: the plain count decides, then the label order (ties).
    votes = votes_of({"i1": "01", "i2": "10", "i3": "11"}, "ab", ("0", "1"))
    assert pm(votes).labels.tolist() == [0, 0, 1]


def test_none_of_the_above_is_inferred_then_dropped():
    votes = from_triples([("i1", "a", "none"), ("i1", "b", "none"), ("i1", "c", "happy"),
                          ("i2", "a", "happy"), ("i2", "b", "happy"), ("i2", "c", "none")])
    result = pm(votes)
    assert [votes.item_names[i] for i in kept_items(votes, result)] == ["i2"]


@pytest.mark.parametrize("seed", [1, 2])
def test_pm_and_dawid_skene_beat_majority_when_skills_differ(seed):
    rows, truth, kinds = simulate(CrowdDesign(items=1500, seed=seed))
    votes = from_triples(rows)
    scores = {m: accuracy(votes, infer(votes, m), truth)[0] for m in ("majority", "pm", "dawid-skene")}
    assert scores["pm"] > scores["majority"] + 2 and scores["dawid-skene"] > scores["majority"] + 2, scores
    # Dawid-Skene's estimated accuracies rank the experts above the spammers and adversaries.
    estimate = dawid_skene(votes).expertise
    by_kind = {k: np.mean([estimate[votes.annotator_names.index(a)] for a, kk in kinds if kk == k])
               for k in ("expert", "spammer", "adversarial")}
    assert by_kind["expert"] > by_kind["spammer"] > by_kind["adversarial"]


def test_the_papers_max_normaliser_runs_away_on_equal_skills_and_sum_does_not():
    design = CrowdDesign(items=1000, experts=1.0, ordinary=0, spammers=0, adversarial=0, seed=3)
    rows, truth, _ = simulate(design)
    votes = from_triples(rows)
    plain = accuracy(votes, majority(votes), truth)[0]
    paper = pm(votes)
    # One annotator ends up without errors and outweighs the rest (documented in nlbench.data.crowd).
    assert accuracy(votes, paper, truth)[0] < plain - 5
    assert paper.expertise.max() > 2.5 * np.sort(paper.expertise)[-2]
    assert abs(accuracy(votes, pm(votes, normaliser="sum"), truth)[0] - plain) < 2
    np.testing.assert_allclose(pm_expertise(np.array([1, 3]), "sum"), [math.log(4), -math.log(0.75)])


def test_the_cli_round_trip(cli, tmp_path):
    made = cli("crowd", "simulate", "--out", str(tmp_path / "votes.csv"), "--items", "300", "--seed", "4")
    assert made.code == 0, made.err
    out = cli("crowd", "infer", str(tmp_path / "votes.csv"), "--method", "pm", "--out", str(tmp_path / "labels.csv"),
              "--truth", str(tmp_path / "votes.truth.csv"))
    assert out.code == 0, out.err
    lines = (tmp_path / "labels.csv").read_text().splitlines()
    assert lines[0] == "item,label,confidence" and len(lines) == 301
    annotators = (tmp_path / "labels.annotators.csv").read_text().splitlines()
    assert annotators[0] == "annotator,expertise,errors,votes" and len(annotators) == 17
    assert "accuracy against" in out.out
    compared = cli("crowd", "compare", str(tmp_path / "votes.csv"), "--truth", str(tmp_path / "votes.truth.csv"))
    assert compared.code == 0 and all(m in compared.out for m in ("pm", "majority", "dawid-skene"))


def test_bad_votes_files_get_one_clear_message(cli, tmp_path):
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("image,worker,answer\n1,a,happy\n")
    out = cli("crowd", "infer", str(wrong), "--out", str(tmp_path / "x.csv"))
    assert out.code == 2 and "needs a header with the columns item, annotator and label" in out.err
    out = cli("crowd", "infer", str(tmp_path / "none.csv"), "--out", str(tmp_path / "x.csv"))
    assert out.code == 2 and "does not exist" in out.err
    out = cli("crowd", "infer", str(wrong), "--method", "vote", "--out", str(tmp_path / "x.csv"))
    assert out.code == 2
    out = cli("crowd", "simulate", "--out", str(tmp_path / "v.csv"), "--votes-per-item", "20")
    assert out.code == 2 and "cannot exceed --annotators" in out.err


def test_awkward_names_and_truth_files(tmp_path):
    import csv

    from nlbench.data.crowd import read_truth, write_labels
    from nlbench.errors import DataError

    votes = from_triples([('a,"b"', "x", "happy"), ('a,"b"', "y", "happy"), ("c", "x", "sad")])
    write_labels(tmp_path / "l.csv", votes, majority(votes))
    with open(tmp_path / "l.csv", newline="") as handle:
        assert [row[0] for row in csv.reader(handle)] == ["item", 'a,"b"', "c"]
    (tmp_path / "t.csv").write_text("Item, Label\nc,sad\n")
    assert read_truth(tmp_path / "t.csv") == {"c": "sad"}
    (tmp_path / "t.csv").write_text("item,label\nc\n")
    with pytest.raises(DataError, match="line 2: 1 fields"):
        read_truth(tmp_path / "t.csv")


def test_simulate_refuses_a_degenerate_difficulty(cli, tmp_path):
    out = cli("crowd", "simulate", "--out", str(tmp_path / "v.csv"), "--difficulty", "0")
    assert out.code == 2 and "--difficulty must be in (0, 1)" in out.err


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    from nlbench.data.crowd import read_votes

    path = tmp_path / "votes.csv"
    path.write_bytes("item,annotator,label\n1,a,happy\n1,b,happy\n2,a,sad\n".encode("utf-8-sig"))
    assert read_votes(path).shape[0] == 2
