"""Named dataset instances: ``[datasets.NAME]`` with ``plugin = "csvlabels"`` is a dataset of its own.

Two CSV datasets are two instances of the csvlabels plugin: runs are stored, tabulated and
reported under their names, each with its own options and classes; the built-in names stay
instances of themselves, with the run ids they always had.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from test_datasets_csvlabels import make

from conftest import read_result, run_dirs
from nlbench.errors import ConfigError, UsageError
from nlbench.plugins import get_registry
from nlbench.result import parse_result
from nlbench.spec import RunRequest, RunSpec, resolve_spec
from nlbench.spec.config import Config, load_config

#: Small enough that a one-epoch run on 45 faces of 24 px takes a few seconds on a CPU.
TRAIN = {"image_size": 16, "batch_size": 8, "val_fraction": 0, "epochs": 1, "last_k": 1,
         "checkpoint_interval": 600}

TWO_INSTANCES = """
[datasets.threeway]
plugin = "csvlabels"
[datasets.threeway.options]
split_column = "split"

[datasets.twoway]
plugin = "csvlabels"
epochs = 1
[datasets.twoway.options]
csv = "pairs.csv"
split_column = "split"
"""


def two_datasets(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A benchmark.toml with two csvlabels instances, and their data: 3 classes in labels.csv, 2 in pairs.csv."""
    three = make(tmp_path / "three")
    two = make(tmp_path / "two", label=lambda i: ("happy", "sad")[i % 2])
    (two / "labels.csv").rename(two / "pairs.csv")
    train = "\n".join(f"{k} = {v}" for k, v in TRAIN.items())
    config = tmp_path / "benchmark.toml"
    config.write_text(f"[train]\n{train}\n{TWO_INSTANCES}")
    return config, three, two


def instances_config(tmp_path: Path, extra: str = "") -> tuple[Config, Path, Path]:
    config, three, two = two_datasets(tmp_path)
    if extra:
        config.write_text(config.read_text() + extra)
    return load_config(config), three, two


def test_two_csv_instances_are_swept_stored_and_tabulated_apart(cli, tmp_path):
    config, three, two = two_datasets(tmp_path)
    runs = tmp_path / "runs"
    out = cli("sweep", "--config", str(config), "--datasets", "threeway,twoway", "--methods", "standard",
              "--noise", "0.2", "--seeds", "1", "--data-root", f"threeway={three}", "--data-root", f"twoway={two}",
              "--jobs", "1", "--runs-dir", str(runs), "--quiet", "--no-table")
    assert out.code == 0, out.err
    results = {read_result(run)["dataset"]: (run, read_result(run)) for run in run_dirs(runs)}
    assert set(results) == {"threeway", "twoway"}
    for name, classes in (("threeway", ["happy", "neutral", "sad"]), ("twoway", ["happy", "sad"])):
        run, result = results[name]
        assert run.relative_to(runs).parts[0] == name  # stored under the instance's name
        assert result["dataset_plugin"] == "csvlabels"
        assert result["final"]["model"]["class_names"] == classes
        spec = json.loads((run / "spec.json").read_text())
        assert spec["data"]["name"] == name and spec["data"]["plugin"] == "csvlabels"
    assert results["twoway"][1]["dataset_options"]["csv"] == "pairs.csv"
    assert results["threeway"][1]["dataset_options"]["csv"] == "labels.csv"

    table = cli("table", "--config", str(config), "--runs-dir", str(runs), "--format", "csv")
    assert table.code == 0, table.err
    rows = list(csv.DictReader(io.StringIO(table.out)))
    runs_rows = [r for r in rows if not r["method"].startswith("reference")]
    # Two columns of one row, not one column with a row per variant of the options.
    assert sorted(r["column"] for r in runs_rows) == ["threeway", "twoway"]
    assert {r["method"] for r in runs_rows} == {"standard"}
    chance = {r["column"]: float(r["mean"]) for r in rows if r["method"].startswith("reference: chance")}
    assert chance == {"threeway": pytest.approx(100 / 3, abs=1e-3), "twoway": 50}  # each its own classes


def test_run_prepare_and_noise_preview_take_the_instance_name_and_its_options(cli, tmp_path):
    config, three, two = two_datasets(tmp_path)
    prepared = cli("prepare", "--config", str(config), "-d", "twoway", "--data-root", str(two))
    assert prepared.code == 0, prepared.err
    assert "twoway (plugin csvlabels)" in prepared.out and "twoway: samples per class and split" in prepared.out
    preview = cli("noise", "preview", "--config", str(config), "-d", "twoway", "--data-root", str(two),
                  "--noise", "0.4")
    assert preview.code == 0, preview.err
    assert preview.out.startswith("twoway, seed 1: 45 training samples")
    # --set reaches the instance's options, and the plugin's message names the instance's key.
    wrong = cli("run", "--config", str(config), "-d", "twoway", "--data-root", str(two),
                "--set", "datasets.twoway.options.csv=missing.csv")
    assert wrong.code == 2 and "set datasets.twoway.options.csv" in wrong.err
    unknown = cli("run", "--config", str(config), "-d", "fourway", "--data-root", str(two))
    assert unknown.code == 2 and "twoway (csvlabels)" in unknown.err and "threeway (csvlabels)" in unknown.err


def test_the_built_in_names_are_instances_of_themselves_with_unchanged_run_ids():
    sets = ["datasets.synthfer.options.train_size=21", "datasets.synthfer.options.test_size=14"]
    registry = get_registry()
    plain = resolve_spec(RunRequest(sets=sets), Config(), registry)
    itself = resolve_spec(RunRequest(sets=sets), Config(datasets={"synthfer": {"plugin": "synthfer"}}), registry)
    assert plain.data.plugin is None and itself.data.plugin is None
    assert "plugin" not in plain.to_json()["data"] and itself.run_id == plain.run_id
    other = resolve_spec(RunRequest(dataset="synth2", sets=[s.replace("synthfer", "synth2") for s in sets]),
                         Config(datasets={"synth2": {"plugin": "synthfer"}}), registry)
    assert other.data.name == "synth2" and other.data.plugin_name == "synthfer"
    assert other.identity()["data"]["plugin"] == "synthfer" and other.run_id != plain.run_id


def test_the_spec_round_trips_and_a_worker_opens_the_plugin_from_the_spec_alone(tmp_path):
    from nlbench.train.assemble import make_dataset

    config, _, two = instances_config(tmp_path)
    spec = resolve_spec(RunRequest(dataset="twoway", data_root=str(two)), config, get_registry())
    again = RunSpec.from_json(json.loads(json.dumps(spec.to_json())))
    assert again == spec and again.run_id == spec.run_id and again.data.plugin == "csvlabels"
    # What the engine of a worker does: no benchmark.toml, only the spec.
    dataset = make_dataset(get_registry(), again)
    assert type(dataset).name == "csvlabels" and dataset.instance == "twoway"
    assert dataset.class_names == ("happy", "sad") and dataset.options.csv == "pairs.csv"


@pytest.mark.parametrize(("extra", "error", "message"), [
    ('[datasets.bad]\nplugin = "nope"\n', ConfigError,
     r"datasets\.bad\.plugin: no dataset plugin is called 'nope'; known plugins: .*csvlabels, fec"),
    ("[datasets.bad]\nplugin = 3\n", ConfigError,
     r"datasets\.bad\.plugin must be the name of a dataset plugin \(a string\), got 3; known plugins: .*csvlabels"),
    ('[datasets.rafdb]\nplugin = "csvlabels"\n', ConfigError,
     r"datasets\.rafdb\.plugin = 'csvlabels': 'rafdb' is the name of another dataset plugin.*known plugins: .*fec"),
    ('[methods.cct]\nplugin = "standard"\n', ConfigError, r"methods\.cct\.plugin: only a dataset can be an instance"),
    ("[datasets.bad]\nepochs = 2\n", ConfigError,
     r"datasets\.bad: no dataset is called 'bad'; known: .*threeway \(csvlabels\).*plugin = "),
])
def test_wrong_instances_are_config_errors_naming_the_key(tmp_path, extra, error, message):
    config, _, two = instances_config(tmp_path, extra)
    with pytest.raises(error, match=message):
        resolve_spec(RunRequest(dataset="twoway", data_root=str(two)), config, get_registry())


def test_a_wrong_instance_exits_2_from_the_cli(cli, tmp_path):
    config, three, _ = two_datasets(tmp_path)
    out = cli("run", "--config", str(config), "-d", "threeway", "--data-root", str(three),
              "--set", "datasets.threeway.plugin=nope")
    assert out.code == 2 and "datasets.threeway.plugin: no dataset plugin is called 'nope'" in out.err


def test_datasets_lists_the_instances_beside_the_plugins(cli, tmp_path):
    config, _, _ = two_datasets(tmp_path)
    listing = cli("datasets", "--config", str(config))
    assert listing.code == 0, listing.err
    instances = listing.out[listing.out.index("dataset instances"):]
    assert "csvlabels" in listing.out[:listing.out.index("dataset instances")]
    lines = {line.split("│")[1].strip(): line for line in instances.splitlines() if line.count("│") > 2}
    assert set(lines) >= {"threeway", "twoway"} and "csvlabels" in lines["twoway"] and "pairs.csv" in lines["twoway"]
    one = cli("datasets", "twoway", "--config", str(config))
    assert one.code == 0, one.err
    assert "instance of the dataset plugin csvlabels" in one.out and "datasets.twoway.options" in one.out


def test_configured_settings_cover_the_instances_by_name(tmp_path):
    from nlbench.report.runs import configured_settings

    config, _, _ = instances_config(tmp_path)
    usual = configured_settings(config, get_registry())
    assert usual.data["twoway"]["csv"] == "pairs.csv" and usual.data["csvlabels"]["csv"] == "labels.csv"
    assert usual.train["twoway"]["epochs"] == 1


def test_a_noise_file_exported_for_an_instance_is_accepted_by_it(cli, tmp_path):
    config, _, two = two_datasets(tmp_path)
    path = tmp_path / "noise.csv"
    out = cli("noise", "export", "--config", str(config), "-d", "twoway", "--data-root", str(two), "--noise", "0.4",
              "--out", str(path))
    assert out.code == 0, out.err
    spec = resolve_spec(RunRequest(dataset="twoway", data_root=str(two), noise_file=str(path)), load_config(config),
                        get_registry())
    assert spec.noise.source == "file" and spec.noise.rate > 0
    with pytest.raises(UsageError, match="exported for dataset 'twoway', not 'threeway'"):
        resolve_spec(RunRequest(dataset="threeway", data_root=str(two), noise_file=str(path),
                                sets=['datasets.threeway.options.csv="pairs.csv"']), load_config(config),
                     get_registry())


def test_result_json_records_the_plugin_and_older_results_still_read():
    base = {"run_id": "x", "method": "standard", "dataset": "twoway", "seed": 1, "noise": {"rate": 0.2},
            "metrics": {"model": {"last": 0.5, "lastk": 0.5, "k": 1, "best": 0.5, "best_epoch": 1, "curve": [0.5]}}}
    assert parse_result({**base, "dataset_plugin": "csvlabels"}).dataset_plugin == "csvlabels"
    assert parse_result(dict(base, dataset="rafdb")).dataset_plugin == "rafdb"
    with pytest.raises(UsageError, match="dataset_plugin should be a string"):
        parse_result({**base, "dataset_plugin": 3})
