"""nlbench table: the paper's layouts from stored results, mean ± std over seeds, statistics."""

from __future__ import annotations

import csv
import io
import json
import statistics

import numpy as np
import pytest

from nlbench.report.render import render
from nlbench.report.tables import build_table, compare, cost_rows, ranks


def _result(root, method, dataset, rate, seed, last, best, hparams=None, train=None, data=None, val=None,
            run_id=None, source="injected", realised=None, deployment=None, members=None, finished=1.0):
    tag = run_id or f"{abs(hash(json.dumps([method, dataset, rate, seed, hparams, data, train], sort_keys=True))) % 10**8}"
    run = root / dataset / method / f"noise{rate:.2f}-flip" / f"seed{seed}-{tag}-{finished}"
    run.mkdir(parents=True)
    summary = {"last": last, "lastk": last - 0.5, "k": 10, "best": best, "best_epoch": 3, "curve": [best, last],
               "scores": {"last": {"balanced_accuracy": last - 10, "macro_f1": last - 20, "ece": 100 - last}}}
    if val is not None:
        summary.update({"val": val, "val_epoch": 2})
    (run / "result.json").write_text(json.dumps({
        "run_id": tag, "method": method, "dataset": dataset, "seed": seed, "finished": finished,
        "noise": {"rate": rate, "mode": "flip", "source": source, "realised_rate": realised if realised else rate},
        "metrics": {"model": summary, "members": {"train/model": summary, **(members or {})}},
        "hparams": hparams or {}, "train": train or {"epochs": 40, "image_size": 224, "batch_size": 256},
        "deployment": deployment or {"deploys": "one network", "single": "train/model", "beside": {}},
        "cost": {"network_epochs": 40, "seconds": 100.0 + seed, "train_images_per_s": 50.0},
        **(data or {}),
    }))


def _fill(root):
    for seed, (a, b) in enumerate([(80.0, 70.0), (82.0, 71.0), (84.0, 72.0)]):
        _result(root, "cct", "rafdb", 0.2, seed, a, a + 2, val=a - 1)
        _result(root, "standard", "rafdb", 0.2, seed, b, b + 5, val=b - 1)
    _result(root, "cct", "ferplus", 0.2, 0, 88.0, 89.0)
    _result(root, "standard", "rafdb", 0.4, 0, 60.0, 66.0)
    # a running (unfinished) run has no result.json and must not count
    (root / "rafdb" / "cct" / "noise0.40-flip" / "seed9-x").mkdir(parents=True)


def _cells(table):
    return {(*r.row, r.column): r for r in table.cells.itertuples()}


def _markdown(table, **extra):
    out = io.StringIO()
    render(table, "markdown", out, **extra)
    return out.getvalue()


def test_cells_are_mean_sample_std_and_count_over_seeds(tmp_path):
    _fill(tmp_path)
    table = build_table(tmp_path, "last")
    cct = _cells(table)[("20", "cct", "rafdb")]
    assert cct.mean == 82.0 and cct.n == 3
    assert cct.std == pytest.approx(statistics.stdev([80.0, 82.0, 84.0]))  # ddof = 1
    assert table.columns == ["rafdb", "ferplus"]  # the paper's dataset order
    assert table.rows == [("20", "standard"), ("20", "cct"), ("40", "standard"), ("40", "cct")]
    assert "ddof = 1" in table.caption and "ORACLE" not in table.caption
    assert "Initialisation: random; epochs 40; image 224 px; batch 256." in table.caption


def test_best_metric_is_flagged_as_an_oracle_and_val_is_not(tmp_path):
    _fill(tmp_path)
    best = build_table(tmp_path, "best")
    assert "ORACLE" in best.caption and "selected on the test set" in best.caption
    assert _cells(best)[("20", "standard", "rafdb")].mean == 76.0
    val = build_table(tmp_path, "val")
    assert "held-out noisy validation split" in val.caption and "ORACLE" not in val.caption
    assert _cells(val)[("20", "cct", "rafdb")].mean == 81.0
    assert any("2 finished run(s) lack the val metric" in note for note in val.notes)


def test_missing_cells_one_seed_without_std_and_best_in_bold(tmp_path):
    _fill(tmp_path)
    text = _markdown(build_table(tmp_path, "last"))
    assert "|  | cct | – | – |" in text  # 40%: cct never ran there
    assert "|  | cct | **82.00 ± 2.00 (3)** | **88.00 (1)** |" in text  # one seed: no "± 0.00"
    assert "| 20 | standard | 71.00 ± 1.00 (3) | – |" in text


def test_csv_and_latex_formats(tmp_path):
    _fill(tmp_path)
    out = io.StringIO()
    render(build_table(tmp_path, "lastk"), "csv", out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    row = next(r for r in rows if r["method"] == "cct" and r["column"] == "rafdb" and r["noise %"] == "20")
    assert float(row["mean"]) == 81.5 and row["n"] == "3" and row["seeds"] == "0 1 2"
    missing = next(r for r in rows if r["method"] == "cct" and r["noise %"] == "40" and r["column"] == "rafdb")
    assert missing["n"] == "0" and missing["mean"] == ""
    latex = io.StringIO()
    render(build_table(tmp_path, "last"), "latex", latex)
    assert "\\toprule" in latex.getvalue() and "\\textbf{82.00 $\\pm$ 2.00 (3)}" in latex.getvalue()


def test_variants_get_their_own_row_only_where_they_exist_and_every_value_is_labelled(tmp_path):
    for seed in (0, 1):
        _result(tmp_path, "cct", "rafdb", 0.2, seed, 80.0 + seed, 81.0, hparams={"lambda_max": 0.5})
        _result(tmp_path, "cct", "rafdb", 0.4, seed, 60.0 + seed, 61.0, hparams={"lambda_max": 0.5})
    _result(tmp_path, "cct", "rafdb", 0.2, 0, 50.0, 51.0, hparams={"lambda_max": 0.9})
    table = build_table(tmp_path, "last")  # never an unlabelled default beside a labelled value
    assert table.rows == [("20", "cct [lambda_max=0.5]"), ("20", "cct [lambda_max=0.9]"), ("40", "cct [lambda_max=0.5]")]
    only_20 = tmp_path / "b"
    _result(only_20, "cct", "rafdb", 0.4, 0, 40.0, 41.0, hparams={"lambda_max": 0.9})
    _result(only_20, "standard", "rafdb", 0.2, 0, 55.0, 51.0)
    rows = build_table(only_20, "last").rows
    assert rows == [("20", "standard"), ("20", "cct"), ("40", "standard"), ("40", "cct")]  # plain: every noise row


def test_a_setting_shared_by_every_run_is_not_a_variant(tmp_path):
    for seed in (0, 1):
        _result(tmp_path, "standard", "synthfer", 0.4, seed, 80.0, 81.0, train={"epochs": 5, "image_size": 48})
    table = build_table(tmp_path, "last")
    assert table.rows == [("40", "standard")]
    assert "epochs 5; image 48 px" in table.caption


def test_runs_on_other_dataset_options_or_versions_get_their_own_row(tmp_path):
    small = {"dataset_version": "2", "dataset_options": {"train_size": 600}}
    _result(tmp_path, "standard", "synthfer", 0.4, 0, 80.0, 81.0, data=small)
    _result(tmp_path, "standard", "synthfer", 0.4, 1, 82.0, 83.0, data=small)
    _result(tmp_path, "standard", "synthfer", 0.4, 0, 60.0, 61.0,
            data={"dataset_version": "2", "dataset_options": {"train_size": 2000}})
    _result(tmp_path, "standard", "synthfer", 0.4, 0, 40.0, 41.0,
            data={"dataset_version": "1", "dataset_options": {"train_size": 600}})
    cells = {r.row[1]: r for r in build_table(tmp_path, "last").cells.itertuples()}
    assert set(cells) == {"standard [train_size=600, version=2]", "standard [train_size=2000, version=2]",
                          "standard [train_size=600, version=1]"}
    assert cells["standard [train_size=600, version=2]"].mean == 81.0 and cells["standard [train_size=600, version=2]"].n == 2


def test_the_same_run_stored_twice_counts_once(tmp_path):
    _result(tmp_path, "standard", "rafdb", 0.2, 0, 70.0, 71.0, run_id="same", finished=1.0)
    _result(tmp_path, "standard", "rafdb", 0.2, 0, 72.0, 73.0, run_id="same", finished=2.0)  # a copy, retrained
    cell = _cells(build_table(tmp_path, "last"))[("20", "standard", "rafdb")]
    assert cell.n == 1 and cell.mean == 72.0


def test_member_single_and_the_teachers_ensemble_beside_the_student(tmp_path):
    student = {"last": 60.0, "lastk": 60.0, "k": 1, "best": 60.0, "best_epoch": 1, "curve": [60.0]}
    ensemble = dict(student, last=66.0)
    net1 = dict(student, last=63.0)
    _result(tmp_path, "cct", "rafdb", 0.2, 0, 60.0, 60.0,
            deployment={"deploys": "a distilled student", "single": "distill/student",
                        "beside": {"teachers' ensemble": "train/ensemble"}},
            members={"distill/student": student, "train/ensemble": ensemble, "train/net1": net1})
    _result(tmp_path, "nct", "rafdb", 0.2, 0, 70.0, 70.0,
            deployment={"deploys": "a two-network ensemble", "single": "train/net1", "beside": {}},
            members={"train/net1": dict(student, last=68.0)})
    model = build_table(tmp_path, "last")
    assert _cells(model)[("20", "cct: teachers' ensemble", "rafdb")].mean == 66.0
    assert "cct: a distilled student" in model.caption and "nct: a two-network ensemble" in model.caption
    assert "**70.00 (1)**" in _markdown(model)  # the teachers' ensemble never competes for bold
    single = build_table(tmp_path, "last", "single")
    assert {r[1] for r in single.rows} == {"cct", "nct"}
    assert _cells(single)[("20", "nct", "rafdb")].mean == 68.0 and _cells(single)[("20", "cct", "rafdb")].mean == 60.0


def test_table8_keeps_the_student_apart_from_its_teachers(tmp_path):
    ensemble = {"last": 90.0, "lastk": 90.0, "k": 1, "best": 90.0, "best_epoch": 1, "curve": [90.0]}
    _result(tmp_path, "cct", "rafdb", 0.2, 0, 80.0, 80.0, hparams={"networks": 3, "consistency": True},
            deployment={"deploys": "a distilled student", "single": "train/model",
                        "beside": {"teachers' ensemble": "train/ensemble"}},
            members={"train/ensemble": ensemble})
    _result(tmp_path, "cct", "rafdb", 0.2, 0, 70.0, 70.0, hparams={"networks": 3})  # stored before `consistency`
    cells = _cells(build_table(tmp_path, "last", layout="table8"))
    assert cells[("rafdb", "20", "cct", "3+")].mean == 75.0 and cells[("rafdb", "20", "cct", "3+")].n == 2
    assert cells[("rafdb", "20", "cct: teachers' ensemble", "3+")].mean == 90.0


def test_ranks_leave_out_the_models_shown_beside_the_deployed_one(tmp_path):
    ensemble = {"last": 99.0, "lastk": 99.0, "k": 1, "best": 99.0, "best_epoch": 1, "curve": [99.0]}
    for dataset in ("rafdb", "ferplus"):
        _result(tmp_path, "cct", dataset, 0.2, 0, 80.0, 80.0, members={"train/ensemble": ensemble},
                deployment={"deploys": "a distilled student", "single": "train/model",
                            "beside": {"teachers' ensemble": "train/ensemble"}})
        _result(tmp_path, "standard", dataset, 0.2, 0, 70.0, 70.0)
        _result(tmp_path, "nct", dataset, 0.2, 0, 75.0, 75.0)
    result = ranks(build_table(tmp_path, "last"))
    assert result.methods == ["cct", "nct", "standard"] and result.average == [1.0, 2.0, 3.0]
    assert result.cells == 2 and result.critical_difference == pytest.approx(2.343 * (3 * 4 / 12) ** 0.5, abs=1e-3)


def test_other_scores_and_ece_is_lower_is_better(tmp_path):
    _fill(tmp_path)
    f1 = build_table(tmp_path, "last", score="macro_f1")
    assert _cells(f1)[("20", "cct", "rafdb")].mean == 62.0
    ece = build_table(tmp_path, "last", score="ece")
    assert ece.lower_is_better and "lower is better" in ece.caption
    text = _markdown(ece)  # ECE = 100 - last here: cct 18 ± 2, standard 29 ± 1; the lower is bold
    assert "**18.00 ± 2.00 (3)**" in text and "**29.00" not in text


def test_layouts_table2_table3_and_table8(tmp_path):
    _result(tmp_path, "standard", "ferplus", 0.0, 0, 85.0, 86.0)
    _result(tmp_path, "cct", "ferplus", 0.0, 0, 88.0, 89.0, hparams={"networks": 3, "consistency": True})
    _result(tmp_path, "standard", "affectnet7", 0.2, 0, 55.0, 56.0, source="dataset", realised=0.31)
    for networks in (1, 2, 3, 4):
        for consistency in (False, True):
            if networks == 1 and consistency:
                continue
            _result(tmp_path, "cct", "rafdb", 0.4, 0, 60.0 + networks + 5 * consistency, 70.0,
                    hparams={"networks": networks, "consistency": consistency})
    t3 = build_table(tmp_path, "last", layout="table3")
    assert t3.rows == [("standard",), ("cct",)] and t3.columns == ["ferplus"]
    t2 = build_table(tmp_path, "last", layout="table2")
    assert t2.rows == [("standard",)] and t2.columns == ["affectnet7"]
    assert "affectnet7 31.0%" in t2.caption
    t8 = build_table(tmp_path, "last", layout="table8")
    assert t8.columns == ["1-", "1+", "2-", "2+", "3-", "3+", "4-", "4+"]
    assert t8.rows == [("rafdb", "40", "cct"), ("ferplus", "0", "cct")]  # networks/consistency: columns
    cells = _cells(t8)
    assert cells[("rafdb", "40", "cct", "1-")].mean == 61.0 and ("rafdb", "40", "cct", "1+") not in cells
    assert cells[("rafdb", "40", "cct", "3+")].mean == 68.0 and cells[("rafdb", "40", "cct", "3-")].mean == 63.0
    t1 = build_table(tmp_path, "last")
    assert ("real (31.0%)", "standard") in t1.rows


def test_with_paper_shows_the_published_value_and_the_difference(tmp_path):
    _result(tmp_path, "standard", "rafdb", 0.1, 0, 80.0, 81.0)
    _result(tmp_path, "cct", "rafdb", 0.4, 0, 60.0, 61.0, hparams={"networks": 3, "consistency": True})
    table = build_table(tmp_path, "last", with_paper=True)
    text = _markdown(table)
    assert "80.00 (1); paper 81.74 (Δ -1.74)" in text  # Table 1 prints 81.74 for Standard, RAF-DB, 10%
    assert "Consensual Collaborative Training" in table.caption
    _result(tmp_path, "cct", "rafdb", 0.4, 1, 62.0, 63.0, hparams={"lambda_max": 0.5})  # a variant: no paper value
    pair = tmp_path / "rafdb" / "cct" / "pair"
    _result(pair, "cct", "rafdb", 0.2, 0, 50.0, 51.0)
    result = json.loads(next(pair.rglob("result.json")).read_text())
    result["noise"]["mode"] = "pair"
    next(pair.rglob("result.json")).write_text(json.dumps(result))
    t8 = build_table(tmp_path, "last", layout="table8", with_paper=True)  # pair noise must not crash it
    assert t8.paper[(("rafdb", "40", "cct"), "3+")] == pytest.approx(_published("table8", "cct", "rafdb", 0.4, 3, True))
    assert not any(row[2] != "cct" for row, _ in t8.paper)


def _published(*key):
    from nlbench.report.published import load_published

    return load_published().value(*key)


def test_published_values_are_data_with_their_source():
    from nlbench.report.published import load_published

    published = load_published()
    assert published.value("table1", "cct", "rafdb", 0.1) is not None
    assert published.value("table1", "cct", "rafdb", 0.15) is None
    assert "arXiv:2107.04746" in published.source


def test_compare_gives_paired_differences_with_intervals_and_tests(tmp_path):
    _fill(tmp_path)
    table = build_table(tmp_path, "last")
    result = compare(table, "standard")
    diff = result.cells[(("20", "cct"), "rafdb")]
    assert diff.n == 3 and diff.mean == pytest.approx(11.0)  # 80-70, 82-71, 84-72
    from scipy import stats

    assert diff.p == pytest.approx(stats.ttest_rel([80, 82, 84], [70, 71, 72]).pvalue)
    half = stats.t.ppf(0.975, 2) * 1.0 / 3 ** 0.5  # differences 10, 11, 12: sample std 1
    assert diff.low == pytest.approx(11.0 - half) and diff.high == pytest.approx(11.0 + half)
    assert (("20", "cct"), "ferplus") not in result.cells  # no standard run to pair with
    text = _markdown(table, comparison=result, rank_result=ranks(table))
    assert "+11.00 [" in text and "Average rank" in text


def test_cost_table(tmp_path):
    _fill(tmp_path)
    rows = {r["method"]: r for r in cost_rows(build_table(tmp_path, "last")) if r["dataset"] == "rafdb"}
    assert rows["cct"]["runs"] == 3 and rows["cct"]["network_epochs"] == 40  # its ferplus run is its own row
    assert rows["standard"]["seconds"] == pytest.approx((100 + 101 + 102 + 100) / 4)


def test_table_command_on_real_runs(cli, tmp_path):
    from conftest import TINY

    for seed in ("1", "2"):
        assert cli("run", "--method", "standard", "--epochs", "1", "--seed", seed, "--runs-dir", str(tmp_path),
                   *TINY).code == 0
    shown = cli("table", "--runs-dir", str(tmp_path), "--format", "markdown")
    assert shown.code == 0
    assert "| 20 | standard | **" in shown.out and "(2)" in shown.out and "| reference | majority class |" in shown.out
    val = cli("table", "--runs-dir", str(tmp_path), "--format", "markdown", "--metric", "val", "--cost")
    assert val.code == 0 and "validation split" in val.out and "network-epochs" in val.out
    (tmp_path / "empty").mkdir()
    empty = cli("table", "--runs-dir", str(tmp_path / "empty"))
    assert empty.code == 0 and "no finished runs" in empty.out
    typo = cli("table", "--runs-dir", str(tmp_path / "none"))  # a folder that does not exist is a typo
    assert typo.code == 2 and "does not exist" in typo.err
    wrong = cli("table", "--runs-dir", str(tmp_path), "--layout", "table9")
    assert wrong.code == 2 and "unknown layout 'table9'" in wrong.err
    assert cli("table", "--runs-dir", str(tmp_path), "--layout", "table8", "--compare", "standard").code == 2


def test_show_prints_the_spec_curves_selection_and_confusion_matrix(cli, tmp_path):
    from conftest import TINY

    assert cli("run", "--method", "standard", "--epochs", "2", "--runs-dir", str(tmp_path), *TINY).code == 0
    run_dir = next(tmp_path.rglob("result.json")).parent
    run_id = json.loads((run_dir / "result.json").read_text())["run_id"]
    shown = cli("show", "--runs-dir", str(tmp_path), run_id[:6])
    assert shown.code == 0, shown.err
    for expected in ("method standard", "val_fraction=0.1", "Curves", "val-selected", "an oracle",
                     "Per-class test accuracy", "Confusion matrix"):
        assert expected in shown.out
    assert cli("show", str(run_dir)).code == 0
    missing = cli("show", "--runs-dir", str(tmp_path), "zzzz")
    assert missing.code == 2 and "no run id starting with 'zzzz'" in missing.err


def test_rank_column_and_pretrained_name_in_the_caption(tmp_path):
    for seed, (a, b, c) in enumerate([(80.0, 70.0, 75.0), (82.0, 71.0, 60.0)]):
        for dataset in ("rafdb", "ferplus"):
            _result(tmp_path, "cct", dataset, 0.2, seed, a, a)
            _result(tmp_path, "standard", dataset, 0.2, seed, b, b)
            _result(tmp_path, "nct", dataset, 0.2, seed, c, c)
    table = build_table(tmp_path, "last")
    text = _markdown(table, rank_result=ranks(table))
    assert "| noise % | method | rafdb | ferplus | avg rank |" in text
    assert text.count(" | 1.00 |") == 1 and " | 2.00 |" in text and " | 3.00 |" in text  # cct, nct, standard
    latex = io.StringIO()
    render(table, "latex", latex, rank_result=ranks(table))
    assert "avg rank" in latex.getvalue() and "& 1.00 \\\\" in latex.getvalue()
    result = json.loads(next(tmp_path.rglob("result.json")).read_text())
    result["pretrained"] = {"sha256": "ab" * 32, "path": "/somewhere/res18_naive.pth_MSceleb.tar"}
    next(tmp_path.rglob("result.json")).write_text(json.dumps(result))
    assert "pretrained file res18_naive.pth_MSceleb.tar (sha256 abababababab)" in build_table(tmp_path).caption


def test_configured_settings_come_from_the_configuration_and_the_plugins():
    from nlbench.plugins import get_registry
    from nlbench.report.runs import configured_settings
    from nlbench.spec.config import Config

    usual = configured_settings(Config(methods={"cct": {"lambda_max": 0.8}}), get_registry())
    assert usual.hparams["cct"]["lambda_max"] == 0.8 and usual.hparams["cct"]["networks"] == 3
    assert usual.data["ferplus"]["real_noise"] == "none" and usual.train["synthfer"]["val_fraction"] == 0.1


def test_two_seeds_give_no_interval_and_no_test():
    from nlbench.report.statistics import paired_comparison

    two = paired_comparison([80.0, 84.0], [70.0, 75.0])
    assert two.n == 2 and two.mean == pytest.approx(9.5) and two.low is None and two.p is None
    assert not two.significant


def test_modern_methods_follow_the_papers_and_count_their_passes(tmp_path):
    for seed in (1, 2, 3):
        _result(tmp_path, "rul", "rafdb", 0.2, seed, 75.0, 76.0)
        _result(tmp_path, "eac", "rafdb", 0.2, seed, 77.0, 78.0)
        _result(tmp_path, "standard", "rafdb", 0.2, seed, 70.0, 71.0)
        _result(tmp_path, "mine", "rafdb", 0.2, seed, 60.0, 61.0)
    table = build_table(tmp_path, "last")
    assert [row[1] for row in table.rows] == ["standard", "eac", "rul", "mine"]
    assert compare(table, "standard").cells[(("20", "eac"), "rafdb")].mean == pytest.approx(7.0)
    eac_dirs = list((tmp_path / "rafdb" / "eac").rglob("result.json"))
    for path in eac_dirs:  # EAC declares 2 passes per network-epoch
        data = json.loads(path.read_text())
        data["cost"]["pass_epochs"] = 80.0
        path.write_text(json.dumps(data))
    rows = {r["method"]: r for r in cost_rows(build_table(tmp_path, "last"))}
    assert rows["eac"]["pass_epochs"] == 80.0 and rows["standard"]["pass_epochs"] == 40.0  # old results: 1 pass


def test_the_interval_and_the_test_cannot_disagree():
    """The README once printed "+2.41 [+0.70, +4.47] n.s.": a bootstrap interval excluding 0
    beside p = 0.138. The t-interval excludes 0 exactly when the paired t-test gives p < 0.05."""
    from scipy import stats

    from nlbench.report.statistics import paired_comparison

    base = np.array([50.0, 51.0, 52.0])
    three = paired_comparison(base + [0.70, 2.06, 4.47], base)
    assert three.p == pytest.approx(stats.ttest_rel(base + [0.70, 2.06, 4.47], base).pvalue)
    assert three.p > 0.05 and not three.significant
    assert three.low < 0 < three.high  # the same verdict as the test
    half = stats.t.ppf(0.975, 2) * np.std([0.70, 2.06, 4.47], ddof=1) / np.sqrt(3)
    assert three.low == pytest.approx(2.41 - half) and three.high == pytest.approx(2.41 + half)
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(3, 8))
        diff = rng.normal(rng.normal(0, 2), rng.uniform(0.1, 3), n)
        c = paired_comparison(base[0] + diff, np.full(n, base[0]))
        assert c.significant == (c.low > 0 or c.high < 0)


def test_a_setting_left_out_at_its_default_is_labelled_with_the_default_where_another_run_sets_it(tmp_path):
    # train_size was added later: a run at the default does not record it (its id did not move)
    _result(tmp_path, "standard", "rafdb", 0.2, 0, 70.0, 71.0)
    _result(tmp_path, "standard", "rafdb", 0.2, 0, 60.0, 61.0, train={"epochs": 40, "image_size": 224,
                                                                     "batch_size": 256, "train_size": 200})
    _result(tmp_path, "cct", "ferplus", 0.2, 0, 80.0, 81.0)  # another dataset: its rows line up
    rows = [row[1] for row in build_table(tmp_path, "last").rows]
    assert rows == ["standard [train_size=0]", "standard [train_size=200]", "cct [train_size=0]"]


def test_a_narrow_tables_caption_is_a_paragraph_of_80_columns_not_of_the_tables_width(tmp_path):
    # rich wraps a caption to its table's width: one dataset's table (about 50 columns) had a
    # caption of twenty short lines.
    for seed in (1, 2):
        _result(tmp_path, "standard", "rafdb", 0.2, seed, 70.0 + seed, 75.0)
    out = io.StringIO()
    render(build_table(tmp_path, "last"), "rich", out)
    lines = out.getvalue().splitlines()
    bottom = max(i for i, line in enumerate(lines) if line.startswith("└"))
    width = len(lines[bottom])
    caption = [line.rstrip() for line in lines[bottom + 1:] if line.strip()]
    assert width < 60 and caption[0].startswith("Test accuracy")
    assert all(len(line) <= 80 for line in caption) and max(len(line) for line in caption) > width + 10
