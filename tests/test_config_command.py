"""`nlbench config`: the resolved spec as TOML with each value's source, and benchmark.toml paths relative to the file."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

from conftest import TINY, run_dirs
from nlbench.cli.common import load
from nlbench.spec.resolve import RunRequest, resolve_spec

RUNTIME = "; not in the run id"


def sources_of(text: str) -> list[dict[str, str]]:
    """dotted key -> the source comment, per run of `nlbench config`'s output."""
    runs: list[dict[str, str]] = [{}]
    table = ""
    for line in text.splitlines():
        if line == "[[runs]]":
            runs.append({})
            table = ""
        elif line.startswith("["):
            table = line.strip("[]").removeprefix("runs").lstrip(".")
        elif line and not line.startswith("#"):
            assignment, _, source = line.rpartition("  # ")
            key = assignment.split(" = ", 1)[0].strip()
            runs[-1][f"{table}.{key}" if table else key] = source
    return [run for run in runs if run]


def without_none(tree: dict) -> dict:
    return {k: without_none(v) if isinstance(v, dict) else v for k, v in tree.items() if v is not None}


FILE = """
[run]
method = "cct"
noise_mode = "exact"
cache_dir = "cache"

[train]
batch_size = 16            # below the dataset plugin's default: shadowed
lr_decay = 0.9
weight_decay = 0.001

[methods.cct]
lambda_max = 0.7
beta = 0.5

[datasets.synthfer]
image_size = 40
last_k = 2

[datasets.synthfer.options]
train_size = 96
"""
SETS = ["methods.cct.beta=0.6", "train.weight_decay=0.002", "datasets.synthfer.last_k=1",
        "datasets.synthfer.options.test_size=48"]


def test_every_value_is_the_specs_and_names_its_true_source(cli, tmp_path):
    (tmp_path / "proj").mkdir()
    config = tmp_path / "proj" / "benchmark.toml"
    config.write_text(FILE)
    flags = ["--epochs", "2", "--seed", "3", "--noise", "0.4"] + [f for s in SETS for f in ("--set", s)]
    out = cli("config", "--config", str(config), *flags)
    assert out.code == 0, out.err
    cfg, registry = load(str(config))
    spec = resolve_spec(RunRequest(epochs=2, seed=3, noise=0.4, sets=SETS), cfg, registry)
    parsed = tomllib.loads(out.out)
    assert parsed.pop("state") == "todo" and parsed.pop("folder").endswith(spec.run_id)
    assert parsed == without_none(spec.to_json())
    assert parsed["cache_dir"] == str(tmp_path / "proj" / "cache")  # relative to the file, not the cwd

    # What each layer gave, worked out by hand from FILE, SETS and the flags.
    expected = {
        "method": "[run]", "seed": "--seed", "cache_dir": "[run]" + RUNTIME, "noise.rate": "--noise",
        "noise.mode": "[run]", "data.version": "the synthfer plugin",
        "data.options.train_size": "[datasets.synthfer.options]",
        "data.options.test_size": "--set datasets.synthfer.options.test_size",
        "hparams.lambda_max": "[methods.cct]", "hparams.beta": "--set methods.cct.beta",
        "train.epochs": "--epochs", "train.lr_decay": "[train]", "train.weight_decay": "--set train.weight_decay",
        "train.image_size": "[datasets.synthfer]", "train.last_k": "--set datasets.synthfer.last_k",
    }
    plugin_defaults = registry.dataset("synthfer").train_defaults
    assert parsed["train"]["batch_size"] == plugin_defaults["batch_size"] != 16
    [sources] = sources_of(out.out)
    runtime = {"device", "cache_dir", "train.eval_batch_size", "train.pretrained", "train.compile",
               "train.cache_on_device", "train.fused_adam", "train.checkpoint_interval"}
    wrong = {}
    for key, source in sources.items():
        if key in ("run_id", "folder", "state"):
            continue
        want = expected.get(key) or ("dataset default" if key.removeprefix("train.") in plugin_defaults
                                     and key.startswith("train.") else "default")
        want = want if want.endswith(RUNTIME) or key not in runtime else want + RUNTIME
        if source != want:
            wrong[key] = (source, want)
    assert not wrong, wrong
    assert set(expected) <= set(sources)


def test_a_setting_without_effect_says_it_was_reset(cli, tmp_path):
    out = cli("config", "--set", "methods.cct.networks=1", "--set", "methods.cct.lambda_max=0.5")
    assert out.code == 0, out.err
    assert tomllib.loads(out.out)["hparams"]["lambda_max"] == 0.9  # CCT with one network ignores it
    [sources] = sources_of(out.out)
    assert sources["hparams.lambda_max"] == "reset: no effect in this run (was 0.5, --set methods.cct.lambda_max)"
    assert sources["hparams.networks"] == "--set methods.cct.networks"


def test_the_run_id_folder_and_state_are_those_of_the_run_stored_next_to_the_file(cli, tmp_path, monkeypatch):
    # [run] runs_dir = "runs" in a file elsewhere: the runs go next to the file, not into ./runs.
    (tmp_path / "project").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "project" / "benchmark.toml").write_text('[run]\nruns_dir = "runs"\n')
    monkeypatch.chdir(tmp_path / "elsewhere")
    args = ["-m", "standard", "-e", "1", "--config", "../project/benchmark.toml", *TINY]
    before = tomllib.loads(cli("config", *args).out)
    assert before["state"] == "todo" and not (tmp_path / "project" / "runs").exists()  # nothing written
    out = cli("run", "-q", *args)
    assert out.code == 0, out.err
    [run] = run_dirs(tmp_path / "project" / "runs")
    assert not (tmp_path / "elsewhere" / "runs").exists()
    after = tomllib.loads(cli("config", *args).out)
    assert after["state"] == "done" and Path(after["folder"]) == run
    assert after["run_id"] == before["run_id"] == run.name.rsplit("-", 1)[1]


def test_a_sweep_lists_every_run_of_its_grid_with_preset_and_flag_sources(cli, tmp_path):
    from nlbench.sweep.grid import SweepRequest, apply_preset, expand

    config = tmp_path / "benchmark.toml"
    config.write_text('[sweeps.mini]\nmethods = ["standard", "cct"]\nnoise = [0.0, 0.4]\n'
                      'set = ["train.epochs=2", "methods.cct.lambda_max=0.5,0.8"]\n')
    out = cli("config", "--config", str(config), "--preset", "mini", "--seeds", "1,2")
    assert out.code == 0, out.err
    cfg, registry = load(str(config))
    specs = expand(apply_preset(SweepRequest(seeds=[1, 2]), cfg, "mini"), cfg, registry)
    runs = tomllib.loads(out.out)["runs"]
    assert [r["run_id"] for r in runs] == [s.run_id for s in specs] and len(runs) == 12  # standard 4 + cct 8
    for run, spec in zip(runs, specs):
        assert {k: v for k, v in run.items() if k not in ("folder", "state")} == without_none(spec.to_json())
    for sources, run in zip(sources_of(out.out), runs):
        assert sources["method"] == sources["noise.rate"] == "[sweeps.mini]"
        assert sources["seed"] == "--seeds" and sources["train.epochs"] == "[sweeps.mini] set"
        if run["method"] == "cct":
            assert sources["hparams.lambda_max"] == "[sweeps.mini] set"
    # A command-line --set comes after the preset's, so it wins and is named.
    out = cli("config", "--config", str(config), "--preset", "mini", "--set", "methods.cct.lambda_max=0.6")
    cct = [(s, r) for s, r in zip(sources_of(out.out), tomllib.loads(out.out)["runs"]) if r["method"] == "cct"]
    assert len(cct) == 2 and all(r["hparams"]["lambda_max"] == 0.6 for _, r in cct)
    assert all(s["hparams.lambda_max"] == "--set methods.cct.lambda_max" for s, _ in cct)
    out = cli("config", "--method", "cct", "--methods", "standard")
    assert out.code == 2 and "give --method or --methods, not both" in out.err


def test_paths_in_benchmark_toml_are_relative_to_the_file(cli, tmp_path, monkeypatch):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "weights.pth").write_bytes(b"not really weights")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = project / "benchmark.toml"
    config.write_text('[run]\nruns_dir = "runs"\ncache_dir = "~/cache"\n[train]\npretrained = "weights.pth"\n')
    ids = set()
    for cwd in (elsewhere, project):
        monkeypatch.chdir(cwd)
        out = cli("config", "--config", str(Path("..") / "project" / "benchmark.toml"))
        assert out.code == 0, out.err
        parsed = tomllib.loads(out.out)
        assert parsed["train"]["pretrained"] == str(project / "weights.pth")
        assert parsed["pretrained_sha256"] == hashlib.sha256(b"not really weights").hexdigest()
        assert parsed["cache_dir"] == str(tmp_path / "home" / "cache")
        assert Path(parsed["folder"]).is_relative_to(project / "runs")
        ids.add(parsed["run_id"])
    assert len(ids) == 1  # where the user stands changes no run id
    # A command-line path stays relative to the working directory.
    out = cli("config", "--config", str(config), "--runs-dir", "mine", "--pretrained", "weights.pth")
    assert tomllib.loads(out.out)["folder"].startswith("mine/")
    monkeypatch.chdir(elsewhere)
    out = cli("config", "--config", str(config), "--pretrained", "weights.pth")
    assert out.code == 2 and "does not exist" in out.err
