"""``nlbench new method NAME``: the plugin it writes is listed, configurable and conformant, its
test passes, and bad names or existing files are refused without writing anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from nlbench.cli.new import class_name
from nlbench.plugins import load_module_from_path
from nlbench.testing import check_method


def write(cli, folder: Path, name: str = "smooth_ce", *extra: str):
    """``nlbench new method NAME --out FOLDER``."""
    return cli("new", "method", name, "--out", str(folder), *extra)


def test_the_written_plugin_is_listed_and_configurable_from_a_plugin_folder(cli, tmp_path):
    folder = tmp_path / "my_plugins"  # created by the command
    made = write(cli, folder)
    assert made.code == 0, made.err
    assert (folder / "smooth_ce.py").is_file() and (folder / "test_smooth_ce.py").is_file()
    assert "pytest" in made.out and 'paths = ["' in made.out  # says how to check and register it
    config = tmp_path / "benchmark.toml"
    config.write_text('[plugins]\npaths = ["my_plugins"]\n')
    listed = cli("methods", "--config", str(config))
    assert listed.code == 0 and "smooth_ce" in listed.out, listed.err
    described = cli("methods", "smooth_ce", "--config", str(config))
    assert described.code == 0 and "label_smoothing" in described.out
    plugins = cli("plugins", "--config", str(config))
    assert "my_plugins/smooth_ce" in plugins.out and "test_smooth_ce" not in plugins.out  # tests are no plugins
    assert "already registered" not in write(cli, folder, "smooth_ce", "--force").err  # its own file: --force


def test_the_written_plugin_passes_check_method(cli, tmp_path):
    assert write(cli, tmp_path).code == 0
    plugin = load_module_from_path(tmp_path / "smooth_ce.py", "generated")
    assert plugin.SmoothCe.name == "smooth_ce" and plugin.SmoothCe.HParams().label_smoothing == 0.0
    # test_resnet: timm's small ResNet, so the check takes seconds; the written test uses ResNet-18.
    report = check_method(plugin.SmoothCe, plugin.SmoothCe.HParams(label_smoothing=0.1), tmp_path=tmp_path / "run",
                          backbone="test_resnet", quiet=True)
    assert "8 checks passed" in str(report)


@pytest.mark.slow
def test_the_written_test_passes(cli, tmp_path):
    assert write(cli, tmp_path / "plugins").code == 0
    written = load_module_from_path(tmp_path / "plugins" / "test_smooth_ce.py", "generated_tests")
    written.test_smooth_ce_conforms(tmp_path / "check")  # raises ConformanceError on a failed check


@pytest.mark.parametrize(("name", "says"), [
    ("2fast", "not a valid method name"), ("my-method", "not a valid method name"), ("class", "not a valid"),
    ("gce", "already registered by methods/gce"), ("_hidden", "does not load such plugin files"),
    ("test_me", "does not load such plugin files"),
])
def test_bad_names_are_refused_and_nothing_is_written(cli, tmp_path, name, says):
    refused = write(cli, tmp_path, name)
    assert refused.code == 2 and says in refused.err, refused.err
    assert list(tmp_path.iterdir()) == []


def test_existing_files_are_kept_without_force(cli, tmp_path):
    assert write(cli, tmp_path).code == 0
    (tmp_path / "smooth_ce.py").write_text("# my edits\n")
    again = write(cli, tmp_path)
    assert again.code == 2 and "already exist" in again.err and "--force" in again.err
    assert (tmp_path / "smooth_ce.py").read_text() == "# my edits\n"
    assert write(cli, tmp_path, "smooth_ce", "--force").code == 0
    assert "class SmoothCe(nlbench.Method)" in (tmp_path / "smooth_ce.py").read_text()
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    assert write(cli, a_file, "other").code == 2


def test_class_names_never_hide_the_templates_imports():
    assert class_name("my_loss") == "MyLoss" and class_name("gce2") == "Gce2"
    assert class_name("f") == "FMethod" and class_name("tensor") == "TensorMethod"
