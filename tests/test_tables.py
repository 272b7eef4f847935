"""nlbench table: the paper's layout from stored results, mean ± std over seeds, missing cells."""

from __future__ import annotations

import csv
import io
import json
import statistics

from nlbench.tables import build_table, render


def _result(root, method, dataset, rate, seed, last, best, hparams=None, train=None, data=None):
    tag = abs(hash(json.dumps([hparams, data], sort_keys=True))) % 10**6
    run = root / dataset / method / f"noise{rate:.2f}-flip" / f"seed{seed}-{method}{tag}"
    run.mkdir(parents=True)
    summary = {"last": last, "lastk": last - 0.5, "k": 10, "best": best, "best_epoch": 3, "curve": [best, last]}
    (run / "result.json").write_text(json.dumps({
        "method": method, "dataset": dataset, "seed": seed,
        "noise": {"rate": rate, "mode": "flip", "source": "injected", "realised_rate": rate},
        "metrics": {"model": summary, "members": {"train/model": summary}},
        "hparams": hparams or {}, "train": train or {"epochs": 40},
        **(data or {}),
    }))


def _fill(root):
    for seed, (a, b) in enumerate([(80.0, 70.0), (82.0, 71.0), (84.0, 72.0)]):
        _result(root, "cct", "rafdb", 0.2, seed, a, a + 2)
        _result(root, "standard", "rafdb", 0.2, seed, b, b + 5)
    _result(root, "cct", "ferplus", 0.2, 0, 88.0, 89.0)
    _result(root, "standard", "rafdb", 0.4, 0, 60.0, 66.0)
    # a running (unfinished) run has no result.json and must not count
    (root / "rafdb" / "cct" / "noise0.40-flip" / "seed9-x").mkdir(parents=True)


def test_cells_are_mean_std_and_count_over_seeds(tmp_path):
    _fill(tmp_path)
    table = build_table(tmp_path, "last")
    cells = {(r.noise, r.method, r.dataset): r for r in table.cells.itertuples()}
    cct = cells[("20", "cct", "rafdb")]
    assert cct.mean == 82.0 and cct.n == 3
    assert abs(cct.std - statistics.stdev([80.0, 82.0, 84.0])) < 1e-9
    assert table.columns == ["rafdb", "ferplus"]  # the paper's dataset order
    assert table.rows == [("20", "standard"), ("20", "cct"), ("40", "standard"), ("40", "cct")]
    assert "test set" not in table.caption


def test_best_metric_says_it_is_selected_on_the_test_set(tmp_path):
    _fill(tmp_path)
    table = build_table(tmp_path, "best")
    assert "selected on the test set" in table.caption
    cells = {(r.noise, r.method, r.dataset): r.mean for r in table.cells.itertuples()}
    assert cells[("20", "standard", "rafdb")] == 76.0


def test_missing_cells_are_shown_and_best_is_bold(tmp_path):
    _fill(tmp_path)
    out = io.StringIO()
    render(build_table(tmp_path, "last"), "markdown", out)
    text = out.getvalue()
    assert "| 40 | cct | – | – |" in text
    assert "| 20 | cct | **82.00 ± 2.00 (3)** | **88.00 ± 0.00 (1)** |" in text
    assert "| 20 | standard | 71.00 ± 1.00 (3) | – |" in text


def test_csv_and_latex_formats(tmp_path):
    _fill(tmp_path)
    out = io.StringIO()
    render(build_table(tmp_path, "lastk"), "csv", out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    row = next(r for r in rows if r["method"] == "cct" and r["dataset"] == "rafdb" and r["noise"] == "20")
    assert float(row["mean"]) == 81.5 and row["n"] == "3" and row["seeds"] == "0 1 2"
    missing = next(r for r in rows if r["method"] == "cct" and r["noise"] == "40" and r["dataset"] == "rafdb")
    assert missing["n"] == "0" and missing["mean"] == ""
    latex = io.StringIO()
    render(build_table(tmp_path, "last"), "latex", latex)
    assert "\\toprule" in latex.getvalue() and "\\textbf{82.00 $\\pm$ 2.00 (3)}" in latex.getvalue()


def test_runs_with_other_hyperparameters_get_their_own_row(tmp_path):
    _result(tmp_path, "cct", "rafdb", 0.2, 0, 80.0, 81.0, hparams={"lambda_max": 0.9})
    _result(tmp_path, "cct", "rafdb", 0.2, 1, 82.0, 83.0, hparams={"lambda_max": 0.9})
    _result(tmp_path, "cct", "rafdb", 0.2, 0, 50.0, 51.0, hparams={"lambda_max": 0.5})
    table = build_table(tmp_path, "last")
    methods = [m for _, m in table.rows]
    assert methods == ["cct", "cct [lambda_max=0.5]"]


def test_runs_on_other_dataset_options_or_versions_get_their_own_row(tmp_path):
    small = {"dataset_version": "2", "dataset_options": {"train_size": 600}}
    _result(tmp_path, "standard", "synthfer", 0.4, 0, 80.0, 81.0, data=small)
    _result(tmp_path, "standard", "synthfer", 0.4, 1, 82.0, 83.0, data=small)
    _result(tmp_path, "standard", "synthfer", 0.4, 0, 60.0, 61.0,
            data={"dataset_version": "2", "dataset_options": {"train_size": 2000}})
    _result(tmp_path, "standard", "synthfer", 0.4, 0, 40.0, 41.0,
            data={"dataset_version": "1", "dataset_options": {"train_size": 600}})
    cells = {r.method: r for r in build_table(tmp_path, "last").cells.itertuples()}
    assert set(cells) == {"standard", "standard [train_size=2000]", "standard [version=1]"}
    assert cells["standard"].mean == 81.0 and cells["standard"].n == 2


def test_table_command_on_real_runs(cli, tmp_path):
    from conftest import TINY

    for seed in ("1", "2"):
        assert cli("run", "--method", "standard", "--epochs", "1", "--seed", seed, "--runs-dir", str(tmp_path),
                   *TINY).code == 0
    shown = cli("table", "--runs-dir", str(tmp_path), "--format", "markdown")
    assert shown.code == 0
    assert "| 20 | standard | **" in shown.out and "(2)**" in shown.out
    empty = cli("table", "--runs-dir", str(tmp_path / "none"))
    assert empty.code == 0 and "no finished runs" in empty.out
