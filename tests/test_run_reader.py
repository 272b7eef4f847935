"""One reader of finished runs: typed results, damaged files skipped with a warning by every
command, a run stored twice counted once everywhere, and figures that average exactly what a
table cell averages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nlbench.report.runs import read_runs, seeds_text, variant_labels
from nlbench.result import DamagedResult, parse_metrics, parse_result, problems

CLASSES = ["neutral", "happy", "sad"]


def fake_run(root: Path, method: str = "standard", seed: int = 1, *, run_id: str | None = None, last: float = 70.0,
             epochs: int = 3, train: dict | None = None, hparams: dict | None = None, finished: float = 1.0,
             options: dict | None = None, folder: str | None = None) -> Path:
    """A finished run as the engine writes it: spec.json, result.json and metrics.jsonl."""
    run_id = run_id or f"{method[:4]}{seed}{abs(hash(json.dumps([train, hparams, options], sort_keys=True))) % 10**6:06d}"
    path = root / "synthfer" / method / "noise0.40-flip" / (folder or f"seed{seed}-{run_id}")
    path.mkdir(parents=True)
    curve = [last - 2.0 * (epochs - 1 - e) for e in range(epochs)]
    summary = {"last": curve[-1], "lastk": curve[-1], "k": 1, "best": max(curve), "best_epoch": epochs,
               "curve": curve}
    train = {"epochs": epochs, "image_size": 16, "batch_size": 32, **(train or {})}
    result = {
        "run_id": run_id, "method": method, "dataset": "synthfer", "seed": seed, "finished": finished,
        "noise": {"rate": 0.4, "mode": "flip", "source": "injected", "realised_rate": 0.4,
                  "transitions": [[4, 1, 1], [1, 4, 1], [1, 1, 4]]},
        "metrics": {"model": summary, "members": {"train/model": summary}},
        "hparams": hparams or {}, "train": train, "dataset_version": "2", "dataset_options": options or {"size": 16},
        "final": {"model": {"confusion_matrix": [[5, 1, 0], [1, 4, 1], [0, 2, 4]], "class_names": CLASSES,
                            "per_class_accuracy": {c: 50.0 for c in CLASSES}}, "members": {}},
        "deployment": {"deploys": "one network", "single": "train/model", "beside": {}},
        "cost": {"network_epochs": epochs, "seconds": 10.0, "train_images_per_s": 100.0},
        "test_size": 18,
    }
    (path / "result.json").write_text(json.dumps(result))
    (path / "spec.json").write_text(json.dumps({"run_id": run_id, "method": method, "seed": seed, "hparams": {},
                                                "data": {"name": "synthfer", "options": {}},
                                                "noise": {"rate": 0.4, "mode": "flip", "source": "injected"},
                                                "train": train}))
    lines = [{"phase": "train", "epoch": e, "epochs": epochs, "test": {"model": curve[e]},
              "train": {"loss": 1.0, "acc_clean": 50.0 + e, "acc_noisy": 10.0 + e}} for e in range(epochs)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def damage(path: Path, edit) -> None:
    result = json.loads((path / "result.json").read_text())
    (path / "result.json").write_text(json.dumps(edit(result)))


# -- the typed result --------------------------------------------------------------------------
def test_the_schema_checks_types_not_only_syntax(tmp_path):
    good = json.loads((fake_run(tmp_path) / "result.json").read_text())
    assert problems(good, __import__("nlbench.result", fromlist=["RESULT_SCHEMA"]).RESULT_SCHEMA) == []
    assert parse_result(good).seed == 1
    cases = {
        "seed should be an integer, not the string 'one'": {**good, "seed": "one"},
        "seed should be an integer, not true/false": {**good, "seed": True},
        "noise should be an object, not a list": {**good, "noise": [0.4]},
        "metrics.model should be an object, not null": {**good, "metrics": {"model": None}},
        "metrics.model.last should be a number, not the string '70'": {
            **good, "metrics": {"model": {**good["metrics"]["model"], "last": "70"}}},
        "final.model.confusion_matrix[1][0] should be a number": {
            **good, "final": {"model": {"confusion_matrix": [[1], ["x"]], "class_names": ["a"]}}},
        "method is missing": {k: v for k, v in good.items() if k != "method"},
    }
    for message, value in cases.items():
        with pytest.raises(DamagedResult, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_result(value, "x/result.json")
    with pytest.raises(DamagedResult, match="the file should be an object, not a list"):
        parse_result([good])


def test_damaged_metrics_lines_are_skipped_and_counted():
    text = "\n".join([json.dumps({"phase": "train", "epoch": 0, "test": {"model": 50.0}}), "null",
                      json.dumps({"phase": "train", "epoch": 1, "test": "high"}), '{"phase": "tr'])
    records, skipped = parse_metrics(text)
    assert [r["epoch"] for r in records] == [0] and skipped == 3


# -- every reader skips what is damaged, says so, and never fails inside -------------------------
@pytest.fixture
def damaged_store(tmp_path):
    root = tmp_path / "runs"
    for seed in (1, 2):
        fake_run(root, "standard", seed)
        fake_run(root, "cct", seed, last=75.0)
    damage(fake_run(root, "jocor", 1), lambda r: {**r, "seed": "one"})
    damage(fake_run(root, "jocor", 2), lambda r: {**r, "noise": [0.4]})
    damage(fake_run(root, "nct", 1), lambda r: {**r, "metrics": {"model": None, "members": None}})
    damage(fake_run(root, "scn", 1), lambda r: [r])
    torn = root / "synthfer" / "cct" / "noise0.40-flip"
    with open(next(torn.glob("seed1-*")) / "metrics.jsonl", "a") as handle:
        handle.write("null\n{\"phase\": \"train\", \"epoch\": 9, \"test\": \"x\"}\n")
    return root


@pytest.mark.parametrize("command", [
    ["table"], ["table", "--format", "csv"], ["export"], ["export", "--format", "jsonl"],
    ["plot", "curves"], ["plot", "confusion"], ["plot", "memorisation"],
])
def test_every_reader_skips_damaged_results_with_a_warning(cli, damaged_store, tmp_path, command):
    extra = ["--out", str(tmp_path / "out")] if command[0] == "plot" else []
    result = cli(*command, "--runs-dir", str(damaged_store), *extra)
    assert result.code == 0, result.err
    assert "internal error" not in result.err and "Traceback" not in result.err
    assert "skipped 4 damaged result file(s)" in result.err
    assert "jocor" not in result.out and "scn" not in result.out


def test_report_skips_damaged_results_with_a_warning(cli, damaged_store, tmp_path):
    result = cli("report", "--runs-dir", str(damaged_store), "--out", str(tmp_path / "report"), "--gradcam", "0")
    assert result.code == 0, result.err
    assert "internal error" not in result.err and "skipped 4 damaged result file(s)" in result.err


def test_show_names_a_damaged_result_and_a_damaged_history(cli, damaged_store):
    [jocor] = [p for p in (damaged_store / "synthfer" / "jocor" / "noise0.40-flip").iterdir() if p.name.startswith("seed1")]
    shown = cli("show", str(jocor))
    assert shown.code == 0, shown.err
    assert "seed should be an integer" in " ".join(shown.out.split()) and "internal error" not in shown.err
    [cct] = (damaged_store / "synthfer" / "cct" / "noise0.40-flip").glob("seed1-*")
    shown = cli("show", str(cct))
    assert shown.code == 0 and "2 damaged line(s)" in " ".join(shown.out.split())


# -- one copy per run id -----------------------------------------------------------------------
def test_a_run_stored_twice_counts_once_in_table_and_export(cli, tmp_path):
    root = tmp_path / "runs"
    fake_run(root, "standard", 1, run_id="abc123", last=60.0, finished=1.0, folder="seed1-abc123")
    fake_run(root / "copy", "standard", 1, run_id="abc123", last=70.0, finished=2.0, folder="seed1-abc123")
    fake_run(root, "standard", 2, last=80.0)
    found = read_runs(root)
    assert len(found.runs) == 2 and found.duplicates == 1
    assert {r.result["metrics"]["model"]["last"] for r in found.runs} == {70.0, 80.0}  # the latest copy
    export = cli("export", "--runs-dir", str(root))
    assert export.code == 0 and len(export.out.strip().splitlines()) == 1 + 2
    table = cli("table", "--runs-dir", str(root), "--format", "csv")
    assert "75.00" in table.out or "75.0" in table.out, table.out  # mean of 70 and 80, not of 60, 70, 80


# -- one definition of a cell ------------------------------------------------------------------
def test_figures_keep_apart_what_tables_keep_apart(tmp_path):
    root = tmp_path / "runs"
    for seed in (1, 2, 3):
        fake_run(root, "standard", seed, last=60.0, epochs=3)
        fake_run(root, "standard", seed, last=80.0, epochs=5, train={"epochs": 5})  # another protocol
    fake_run(root, "standard", 1, last=50.0, epochs=3, options={"size": 16, "test_size": 99})  # another test split
    runs = read_runs(root).runs
    labels = variant_labels(runs)
    assert sorted(set(labels.values())) == ["standard [epochs=3, test_size=99]", "standard [epochs=3]",
                                            "standard [epochs=5]"]
    from nlbench.report.figures import plot_curves

    figure = plot_curves(runs, tmp_path / "out")
    assert figure.data["synthfer|40|standard [epochs=3]"] == [56.0, 58.0, 60.0]
    assert figure.data["synthfer|40|standard [epochs=5]"] == [72.0, 74.0, 76.0, 78.0, 80.0]  # not cut to 3
    assert figure.data["synthfer|40|standard [epochs=3, test_size=99]"] == [46.0, 48.0, 50.0]
    cells = {label: [r for r in runs if labels[r.path] == label] for label in set(labels.values())}
    assert seeds_text(cells["standard [epochs=3]"]) == "3 seeds (1, 2, 3)"
    assert seeds_text(cells["standard [epochs=3, test_size=99]"]) == "seed 1"


def test_a_history_that_lost_lines_does_not_cut_the_others(tmp_path):
    root = tmp_path / "runs"
    fake_run(root, "standard", 1, epochs=4)
    short = fake_run(root, "standard", 2, epochs=4)
    lines = (short / "metrics.jsonl").read_text().splitlines()
    (short / "metrics.jsonl").write_text("\n".join(lines[:2]) + "\n")
    from nlbench.report.figures import plot_curves

    figure = plot_curves(read_runs(root).runs, tmp_path / "out")
    assert len(figure.data["synthfer|40|standard"]) == 4


def test_a_named_variant_is_labelled_even_where_nothing_beside_it_differs(tmp_path, cli):
    """LA-Net without landmarks is an ablation, not LA-Net: its row says so in every table."""
    root = tmp_path / "runs"
    for seed in (1, 2):
        ablation = fake_run(root, "lanet", seed, hparams={"landmarks": "none", "lambda_kl": 1.0})
        damage(ablation, lambda r: {**r, "deployment": {**r["deployment"], "variant": ["landmarks"]}})
        fake_run(root, "standard", seed)
    labels = variant_labels(read_runs(root).runs)
    assert sorted(set(labels.values())) == ["lanet [landmarks=none]", "standard"]
    # Beside real LA-Net runs the setting also differs: named once, not twice.
    fake_run(root, "lanet", 3, hparams={"landmarks": "dataset", "lambda_kl": 1.0})
    labels = variant_labels(read_runs(root).runs)
    assert sorted(set(labels.values())) == ["lanet [landmarks=dataset]", "lanet [landmarks=none]", "standard"]
    table = cli("table", "--runs-dir", str(root), "--format", "csv")
    assert "lanet [landmarks=none]" in table.out, table.out
