"""``nlbench new method NAME``: write a method plugin and its test from a template.

The plugin is the README's "Writing a method plugin" example made runnable: one network trained
with cross-entropy (label smoothing as its one option), so it passes
:func:`nlbench.testing.check_method` before its author changes anything, and the author edits
``train_step`` (and ``build``) into the method. The test loads the plugin file by path, as nlbench
loads a plugin folder, so the folder needs no ``__init__.py`` and nothing on ``sys.path``; files
named ``test_*.py`` are not loaded as plugins, so both files can live in a ``[plugins] paths``
folder.
"""

from __future__ import annotations

import keyword
from pathlib import Path
from string import Template

import typer

from nlbench.cli.common import ConfigOption

app = typer.Typer(help="Write a new plugin from a template.", no_args_is_help=True)

#: The method plugin (``$name``: the method's name, ``$cls``: its class).
METHOD_TEMPLATE = Template('''\
"""$cls: one line on what the method does and why it resists label noise.

Paper: authors, "title", venue year (the method this file implements).
Code: the official code's address, or "none".

As written, one ResNet-18 trained with cross-entropy on the noisy labels (optionally label
smoothed), so it runs and passes its test: make train_step (and build) the method.
Check: pytest test_$name.py; train: nlbench run --method $name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch.nn.functional as F
from torch import Tensor

import nlbench


@dataclass
class ${cls}Params:
    """$cls hyperparameters: --set methods.$name.FIELD=VALUE."""

    #: Label smoothing of the cross-entropy, in [0, 1): 0 is plain cross-entropy.
    label_smoothing: Annotated[float, nlbench.Range(0, 1, high_open=True)] = 0.0


class $cls(nlbench.Method):
    """One network trained with (label-smoothed) cross-entropy."""

    name = "$name"
    summary = "one network, cross-entropy with optional label smoothing"
    paper = "authors, venue year"
    HParams = ${cls}Params

    def build(self, ctx) -> None:
        super().build(ctx)
        self.net = ctx.backbone()                 # the shared ResNet-18, seeded per call
        self.optimizer = ctx.optimizer([self.net])

    def train_step(self, batch: nlbench.Batch, phase: nlbench.Phase, epoch: int) -> dict[str, Tensor]:
        logits = self.net(batch.x).float()        # batch.x augmented images, batch.y noisy labels
        loss = F.cross_entropy(logits, batch.y, label_smoothing=self.hp.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.ctx.backward(loss)
        self.optimizer.step()
        return {"loss": loss.detach(), "logits": logits.detach()}

    def predict(self, x: Tensor) -> Tensor:
        return self.net(x)


@nlbench.hookimpl
def register_methods(register) -> None:
    register($cls)
''')

#: Its test: nlbench's conformance check, two tiny epochs through the engine on the CPU.
TEST_TEMPLATE = Template('''\
"""The $name method plugin passes nlbench's conformance check (pytest test_$name.py)."""

from pathlib import Path

from nlbench.plugins import load_module_from_path
from nlbench.testing import check_method


def test_${name}_conforms(tmp_path):
    plugin = load_module_from_path(Path(__file__).with_name("$name.py"), "tests")
    check_method(plugin.$cls, tmp_path=tmp_path)
''')

#: Names the template imports: a class named like one of them would hide it.
TEMPLATE_NAMES = {"F", "Tensor", "Annotated", "dataclass", "Path", "nlbench"}


def class_name(name: str) -> str:
    """The class of method ``name``: its words capitalised (``my_loss`` -> ``MyLoss``)."""
    cls = "".join(part[:1].upper() + part[1:] for part in name.split("_"))
    return cls + "Method" if cls in TEMPLATE_NAMES else cls


def check_name(name: str, registered: dict, targets: list[Path]) -> None:
    """Refuse a name that is no usable method name or that a plugin other than ``targets`` registers."""
    from nlbench.errors import UsageError

    if not name.isidentifier() or keyword.iskeyword(name):
        what = "a Python keyword" if keyword.iskeyword(name) else "not a Python identifier"
        raise UsageError(f"{name!r} is not a valid method name ({what}): use a name such as my_method "
                         f"(letters, digits and _, not starting with a digit).")
    if name.startswith(("_", "test_")):
        raise UsageError(f"method name {name!r} starts with {'_' if name.startswith('_') else 'test_'}: nlbench "
                         f"does not load such plugin files. Choose another name.")
    entry = registered.get(name)
    if entry is not None and Path(entry.plugin.origin).resolve() not in [t.resolve() for t in targets]:
        raise UsageError(f"a method {name!r} is already registered by {entry.plugin.name} ({entry.plugin.origin}); "
                         f"choose another name (`nlbench methods` lists the taken ones).")


@app.command("method", short_help="Write a method plugin and its test from a template.")
def method(
    name: str = typer.Argument(..., help="The method's name, a Python identifier (e.g. my_method)."),
    out: str = typer.Option(".", "--out", "-o", help="Folder to write NAME.py and test_NAME.py into (created)."),
    force: bool = typer.Option(False, "--force", help="Replace the files if they exist."),
    config: ConfigOption = None,
) -> None:
    """Write a method plugin NAME.py and its test test_NAME.py from a template."""
    from nlbench.cli.common import load
    from nlbench.errors import UsageError

    cfg, registry = load(config)
    folder = Path(out).expanduser()
    plugin, test = folder / f"{name}.py", folder / f"test_{name}.py"
    # The name may be registered by this very file (a folder of [plugins] paths): then it is
    # the existing file below that needs --force.
    check_name(name, registry.methods, [plugin])
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder} is a file; give the folder to write the plugin into.")
    existing = [str(p) for p in (plugin, test) if p.exists()]
    if existing and not force:
        raise UsageError(f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; nothing "
                         f"was written. Pass --force to replace, or choose another name or --out.")
    folder.mkdir(parents=True, exist_ok=True)
    cls = class_name(name)
    plugin.write_text(METHOD_TEMPLATE.substitute(name=name, cls=cls), encoding="utf-8")
    test.write_text(TEST_TEMPLATE.substitute(name=name, cls=cls), encoding="utf-8")
    listed = any(Path(p).resolve() == folder.resolve() for p in cfg.plugin_paths)
    lines = [f"wrote {plugin} (method {name}: class {cls}, cross-entropy to edit)",
             f"wrote {test} (nlbench's conformance check)",
             f"check it:  pytest {test}"]
    if not listed:
        lines.append(f'register it: add the folder to benchmark.toml: [plugins] paths = ["{folder.as_posix()}"]')
    lines.append(f"train it:  nlbench run --method {name}")
    typer.echo("\n".join(lines))
