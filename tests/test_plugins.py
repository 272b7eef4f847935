"""Plugins: folder plugins, entry-point packages, broken plugins and duplicate names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY, read_result, run_dirs
from nlbench.errors import PluginError
from nlbench.plugins import build_registry

REPO = Path(__file__).resolve().parents[1]

GOOD = '''
import torch.nn.functional as F
import nlbench

class Tiny(nlbench.Method):
    """A folder-plugin method."""
    name = "{name}"
    summary = "folder plugin"

    def build(self, ctx):
        super().build(ctx)
        self.net = ctx.backbone()
        self.opt = ctx.optimizer([self.net])

    def train_step(self, batch, phase, epoch):
        loss = F.cross_entropy(self.net(batch.x).float(), batch.y)
        self.opt.zero_grad()
        self.ctx.backward(loss)
        self.opt.step()
        return {{"loss": loss.detach()}}

    def predict(self, x):
        return self.net(x)

@nlbench.hookimpl
def register_methods(register):
    register(Tiny)
'''


def _folder(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_builtin_plugins_register_standard_cct_and_synthfer():
    registry = build_registry(autoload=False)
    assert {"standard", "cct"} <= set(registry.methods)
    assert "synthfer" in registry.datasets
    assert all(p.ok for p in registry.plugins), [p.error for p in registry.plugins if not p.ok]
    assert registry.methods["cct"].plugin.kind == "built-in"


def test_folder_plugin_from_benchmark_toml_runs_like_a_builtin(cli, tmp_path):
    folder = _folder(tmp_path, {"tiny.py": GOOD.format(name="tinyfolder")})
    config = tmp_path / "benchmark.toml"
    config.write_text(f'[plugins]\npaths = ["{folder.name}"]\n')  # relative to the config file
    listed = cli("methods", "--config", str(config))
    assert listed.code == 0 and "tinyfolder" in listed.out
    ran = cli("run", "--config", str(config), "--method", "tinyfolder", "--epochs", "1",
              "--runs-dir", str(tmp_path / "runs"), *TINY)
    assert ran.code == 0, ran.err
    assert read_result(run_dirs(tmp_path / "runs")[0])["method"] == "tinyfolder"


def test_a_broken_plugin_is_reported_and_the_others_still_work(cli, tmp_path):
    folder = _folder(tmp_path, {
        "broken.py": "raise RuntimeError('this plugin is broken on purpose')\n",
        "good.py": GOOD.format(name="stillworks"),
    })
    registry = build_registry([folder], autoload=False)
    assert "stillworks" in registry.methods and "cct" in registry.methods
    [broken] = [p for p in registry.plugins if p.name.endswith("broken")]
    assert not broken.ok and "broken on purpose" in broken.error
    config = tmp_path / "benchmark.toml"
    config.write_text(f'[plugins]\npaths = ["{folder}"]\n')
    shown = cli("plugins", "--config", str(config))
    assert shown.code == 0 and "FAILED" in shown.out and "broken on purpose" in shown.out
    unknown = cli("run", "--config", str(config), "--method", "nosuchmethod")
    assert unknown.code == 2 and "failed to load" in unknown.err


def test_duplicate_names_are_rejected_naming_both_sources(tmp_path):
    folder = _folder(tmp_path, {"a_one.py": GOOD.format(name="twin"), "b_two.py": GOOD.format(name="twin")})
    registry = build_registry([folder], autoload=False)
    with pytest.raises(PluginError) as err:
        registry.method("twin")
    assert "a_one" in str(err.value) and "b_two" in str(err.value)
    assert "cct" in registry.methods


def test_plugin_folders_are_not_importable_packages():
    code = "import importlib.util, sys; sys.exit(importlib.util.find_spec('datasets') is not None and "\
           "importlib.util.find_spec('datasets').origin and 'nlbench' in str(importlib.util.find_spec('datasets').origin))"
    done = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True)
    assert done.returncode == 0


def _install(target: Path, source: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "--target", str(target), str(source)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_example_package_installs_registers_and_runs(tmp_path):
    target = tmp_path / "site"
    _install(target, REPO / "examples" / "nlbench-bootstrap")
    env = dict(os.environ, PYTHONPATH=str(target), NLBENCH_CACHE=str(tmp_path / "cache"))
    env.pop("NLBENCH_DISABLE_PLUGIN_AUTOLOAD", None)
    listed = subprocess.run([sys.executable, "-m", "nlbench.cli", "methods"], env=env, capture_output=True,
                            text=True, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "bootstrap" in listed.stdout and "nlbench-bootstrap" in listed.stdout
    ran = subprocess.run(
        [sys.executable, "-m", "nlbench.cli", "run", "--method", "bootstrap", "--epochs", "1",
         "--set", "methods.bootstrap.mode=hard", "--runs-dir", str(tmp_path / "runs"), "-q", *TINY],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    result = read_result(run_dirs(tmp_path / "runs")[0])
    assert result["method"] == "bootstrap" and result["hp_mode"] == "hard"
    disabled = subprocess.run([sys.executable, "-m", "nlbench.cli", "methods"], capture_output=True, text=True,
                              env=dict(env, NLBENCH_DISABLE_PLUGIN_AUTOLOAD="1"), cwd=tmp_path)
    assert "bootstrap" not in disabled.stdout


def test_a_misspelt_hook_fails_its_plugin_with_the_reason(cli, tmp_path):
    misspelt = GOOD.format(name="typo").replace("def register_methods(", "def register_method(")
    folder = _folder(tmp_path, {"typo.py": misspelt, "fine.py": GOOD.format(name="fine")})
    registry = build_registry([folder], autoload=False)
    info = next(p for p in registry.plugins if p.name == "plugins/typo")
    assert not info.ok and "register_method" in info.error and "not an nlbench hook" in info.error
    assert "typo" not in registry.methods and "fine" in registry.methods  # the other plugin still registers
    assert registry.methods["fine"].plugin.name == "plugins/fine"  # attribution from the hook implementation
    config = tmp_path / "benchmark.toml"
    config.write_text(f'[plugins]\npaths = ["{folder.name}"]\n')
    listed = cli("plugins", "--config", str(config))
    assert "FAILED plugins/typo" in listed.out and "register_method" in listed.out


def test_a_plugin_whose_hook_raises_does_not_stop_the_others(tmp_path):
    broken = GOOD.format(name="broken").replace("    register(Tiny)", "    raise RuntimeError('boom')")
    folder = _folder(tmp_path, {"a_broken.py": broken, "b_fine.py": GOOD.format(name="fine2")})
    registry = build_registry([folder], autoload=False)
    info = next(p for p in registry.plugins if p.name == "plugins/a_broken")
    assert not info.ok and "boom" in info.error
    assert "fine2" in registry.methods


def test_methods_name_lists_every_option_with_default_type_and_doc(cli):
    result = cli("methods", "cct")
    assert result.code == 0, result.err
    out = " ".join(result.out.split())
    assert "lambda_max" in out and "0.9" in out and "float [0, 1]" in out
    assert "one of equal, mean, code" in out  # a Literal's choices
    assert "Number of co-trained networks" in out  # the #: doc comment of the field
    shown = cli("datasets", "synthfer")
    assert shown.code == 0 and "nuisance" in shown.out and "int [16, 256]" in " ".join(shown.out.split())
    assert cli("methods", "nosuch").code == 2


@pytest.mark.parametrize("fault,expected", [
    ("raise ValueError('boom in the plugin')",
     "train_step raised ValueError: boom in the plugin (in phase train, epoch 1, batch 2)"),
    ("return {'loss': torch.ones(3)}", "'loss' is a scalar tensor, got loss = Tensor of shape (3,) (in phase train, "
                                       "epoch 1, batch 2)"),
])
def test_a_failing_method_plugin_names_itself_the_phase_epoch_and_batch(cli, tmp_path, fault, expected):
    # the second training step of the first epoch fails
    text = "import torch\n" + GOOD.format(name="faulty").replace(
        "    def train_step(self, batch, phase, epoch):\n",
        "    def train_step(self, batch, phase, epoch):\n"
        "        self.steps = getattr(self, 'steps', 0) + 1\n"
        f"        if self.steps == 2:\n            {fault}\n")
    folder = _folder(tmp_path, {"faulty.py": text})
    config = tmp_path / "benchmark.toml"
    config.write_text(f'[plugins]\npaths = ["{folder}"]\n')
    ran = cli("run", "--config", str(config), "--method", "faulty", "--epochs", "1", "--runs-dir", str(tmp_path / "r"),
              *TINY)
    assert ran.code == 1, ran.err
    assert "method 'faulty'" in ran.err and "faulty.py" in ran.err and expected in ran.err
    assert "internal error" not in ran.err and "Traceback" not in ran.err


def test_a_method_whose_predict_returns_the_wrong_shape_is_named(cli, tmp_path):
    text = GOOD.format(name="badshape").replace("        return self.net(x)", "        return self.net(x)[:, :2]")
    config = tmp_path / "benchmark.toml"
    config.write_text(f'[plugins]\npaths = ["{_folder(tmp_path, {"badshape.py": text})}"]\n')
    ran = cli("run", "--config", str(config), "--method", "badshape", "--epochs", "1", "--runs-dir", str(tmp_path / "r"),
              *TINY)
    assert ran.code == 1
    assert "method 'badshape'" in ran.err and "member 'model' must be a" in ran.err and "x 7 tensor" in ran.err


def test_run_reports_a_missing_or_broken_plugin_folder_once(cli, tmp_path):
    config = tmp_path / "benchmark.toml"
    config.write_text(f'[plugins]\npaths = ["{tmp_path / "nowhere"}"]\n')
    ran = cli("run", "--config", str(config), "--method", "standard", "--epochs", "1",
              "--runs-dir", str(tmp_path / "r"), *TINY)
    assert ran.code == 0
    assert ran.err.count("does not exist") == 1 and "warning: plugin" in ran.err and "nlbench plugins" in ran.err


def _misbehaving(tmp_path: Path, name: str, edit) -> Path:
    """A benchmark.toml whose plugin folder holds a good method and one edited to misbehave."""
    folder = _folder(tmp_path, {"good.py": GOOD.format(name="good"), f"{name}.py": edit(GOOD.format(name=name))})
    config = tmp_path / "benchmark.toml"
    config.write_text(f'[plugins]\npaths = ["{folder}"]\n')
    return config


def test_a_plugin_calling_sys_exit_at_import_fails_alone(cli, tmp_path):
    config = _misbehaving(tmp_path, "quitter", lambda text: "import sys\nsys.exit(7)\n" + text)
    listed = cli("methods", "--config", str(config))
    assert listed.code == 0 and "good" in listed.out
    plugins = cli("plugins", "--config", str(config))
    assert plugins.code == 0 and "SystemExit" in " ".join(plugins.out.split())
    ran = cli("run", "-m", "good", "-e", "1", "--config", str(config), "--runs-dir", str(tmp_path / "runs"), "-q",
              *TINY)
    assert ran.code == 0, ran.err


@pytest.mark.parametrize(("where", "edit", "message"), [
    ("train_step", lambda t: t.replace("        loss = F.cross_entropy", "        raise SystemExit(0)\n        loss ="),
     "train_step raised SystemExit"),
    ("build", lambda t: t.replace("        self.net = ctx.backbone()", "        raise ValueError('no GPU here')"),
     "build raised ValueError: no GPU here"),
    ("on_epoch_end", lambda t: t.replace("    def predict(self, x):",
                                         "    def on_epoch_end(self, phase, epoch):\n        raise SystemExit(3)\n\n"
                                         "    def predict(self, x):"),
     "called sys.exit(3) while training"),
])
def test_a_plugin_that_exits_or_raises_fails_its_run_named(cli, tmp_path, where, edit, message):
    config = _misbehaving(tmp_path, "broken", edit)
    ran = cli("run", "-m", "broken", "-e", "1", "--config", str(config), "--runs-dir", str(tmp_path / "runs"), "-q",
              *TINY)
    assert ran.code == 1, (ran.code, ran.err)
    assert message in ran.err and "internal error" not in ran.err
    if where != "build":
        assert "broken" in ran.err
