"""A catalogue of bad inputs: each gets one clear message, exit code 2, no traceback, and loses nothing stored.

Every case runs against a store that already holds a finished run; after the case, every file of
that store is byte-identical and no new run folder exists.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from conftest import TINY
from nlbench.cli import main

#: (id, arguments, text the message must contain). {tmp} is a folder of helper files, {store} the runs.
CASES = [
    # flags
    ("unknown method", ["run", "--method", "nosuch"], "unknown method 'nosuch'. Known methods:"),
    ("unknown dataset", ["run", "--dataset", "nosuch"], "unknown dataset 'nosuch'. Known datasets:"),
    ("noise 1.0", ["run", "--noise", "1.0"], "noise rate must be in [0, 1)"),
    ("negative noise", ["run", "--noise", "-0.1"], "noise rate must be in [0, 1)"),
    ("noise nan", ["run", "--noise", "nan"], "noise rate must be in [0, 1)"),
    ("noise not a number", ["run", "--noise", "abc"], "Invalid value for '--noise'"),
    ("zero epochs", ["run", "--epochs", "0"], "--epochs must be at least 1"),
    ("negative seed", ["run", "--seed", "-1"], "--seed must be in [0, 2147483647]"),
    ("unknown noise mode", ["run", "--noise-mode", "sideways"], "unknown noise mode 'sideways'"),
    ("unknown noise source", ["run", "--noise-source", "magic"], "--noise-source must be one of"),
    ("unknown device", ["run", "--device", "tpu"], "unknown device 'tpu'"),
    ("unknown device in the file", ["run", "--config", "{tmp}/device.toml"],
     "[run] device in {tmp}/device.toml: unknown device 'tpu'"),
    ("cuda without a GPU", ["run", "--device", "cuda"], "no CUDA GPU is available"),
    ("unknown option", ["run", "--bogus"], "No such option: --bogus"),
    ("unknown command", ["frobnicate"], "No such command 'frobnicate'"),
    # --set
    ("set without =", ["run", "--set", "nonsense"], "--set expects key=value"),
    ("bool as int", ["run", "--set", "train.batch_size=true"], "train.batch_size must be an int, got True"),
    ("batch size 0", ["run", "--set", "train.batch_size=0"], "train.batch_size must be in [1, 65536]"),
    ("nan lr", ["run", "--set", "train.backbone_lr=nan"], "train.backbone_lr must be a finite number"),
    ("negative lr", ["run", "--set", "train.backbone_lr=-1"], "train.backbone_lr must be > 0"),
    ("negative weight decay", ["run", "--set", "train.weight_decay=-0.1"], "train.weight_decay must be >= 0"),
    ("negative step cap", ["run", "--set", "train.max_steps_per_epoch=-1"], "train.max_steps_per_epoch must be >= 0"),
    ("eval batch 0", ["run", "--set", "train.eval_batch_size=0"], "train.eval_batch_size must be in [1, 65536]"),
    ("epochs unbounded", ["run", "--set", "train.epochs=100000"], "train.epochs must be in [1, 10000]"),
    ("unknown augmentation", ["run", "--set", "train.augmentation=blur"], "train.augmentation must be one of"),
    ("unknown train key", ["run", "--set", "train.batchsize=3"], "unknown key train.batchsize"),
    ("hparam not a number", ["run", "--set", "methods.cct.lambda_max=high"], "methods.cct.lambda_max must be a float"),
    ("hparam out of range", ["run", "--set", "methods.cct.lambda_max=1.5"], "methods.cct.lambda_max must be in [0, 1]"),
    ("unknown hparam", ["run", "--set", "methods.cct.lambda_maxx=0.8"], "unknown key methods.cct.lambda_maxx"),
    ("unknown method table", ["run", "--set", "methods.nosuch.x=1"], "no method is called 'nosuch'"),
    ("unknown dataset table", ["run", "--set", "datasets.nosuch.options.x=1"], "no dataset is called 'nosuch'"),
    ("unknown dataset option", ["run", "--set", "datasets.synthfer.options.colour=1"],
     "unknown key datasets.synthfer.options.colour"),
    ("impossible combination", ["run", "--set", "methods.cct.networks=1", "--set", "methods.cct.supervision=false"],
     "one network with the supervision loss off"),
    ("plugins by --set", ["run", "--set", "plugins.paths=[]"], "plugin folders are set in benchmark.toml"),
    ("unknown run key", ["run", "--set", "run.bogus=1"], "unknown key run.bogus"),
    # benchmark.toml
    ("invalid toml", ["run", "--config", "{tmp}/broken.toml"], "is not valid TOML"),
    ("not utf-8", ["run", "--config", "{tmp}/latin1.toml"], "is not UTF-8 text"),
    ("unknown section", ["run", "--config", "{tmp}/section.toml"], "unknown section or key 'trian'"),
    ("unknown toml key", ["run", "--config", "{tmp}/key.toml"], "unknown key train.epoch"),
    ("config is a folder", ["run", "--config", "{tmp}"], "is a folder"),
    ("config missing", ["run", "--config", "{tmp}/nope.toml"], "does not exist"),
    ("plugin paths not a list", ["run", "--config", "{tmp}/paths.toml"], "plugins.paths must be a list"),
    ("method table not a table", ["run", "--config", "{tmp}/table.toml"], "[methods.cct] must be a table"),
    ("bad preset key", ["sweep", "--config", "{tmp}/preset.toml", "--preset", "x"], "unknown key sweeps.x.method"),
    # data roots
    ("root missing", ["run", "--dataset", "rafdb"], "reads files from disk"),
    ("root not a folder", ["run", "--dataset", "rafdb", "--data-root", "{tmp}/broken.toml"], "is not a folder"),
    ("root does not exist", ["run", "--dataset", "rafdb", "--data-root", "{tmp}/nowhere"], "is not a folder"),
    ("empty imagefolder", ["run", "--dataset", "imagefolder", "--data-root", "{tmp}/empty"], "at least 2"),
    # pretrained files
    ("pretrained missing", ["run", "--pretrained", "{tmp}/weights.pth"], "does not exist"),
    ("pretrained is a folder", ["run", "--pretrained", "{tmp}"], "is a folder"),
    ("pretrained garbage", ["run", "--pretrained", "{tmp}/garbage.pth"], "cannot read pretrained file"),
    ("pretrained malicious pickle", ["run", "--pretrained", "{tmp}/evil.pth"],
     "holds objects other than tensors and plain data"),
    # other commands
    ("table format", ["table", "--format", "pdf"], "unknown format 'pdf'"),
    ("table metric", ["table", "--metric", "worst"], "unknown metric 'worst'"),
    ("sweep jobs 0", ["sweep", "--jobs", "0"], "--jobs must be at least 1"),
    ("sweep executor", ["sweep", "--executor", "pbs"], "unknown executor 'pbs'"),
    ("sweep preset", ["sweep", "--preset", "nope"], "no sweep preset 'nope'"),
    ("sweep noise list", ["sweep", "--noise", "a,b"], "--noise takes a comma-separated list of numbers"),
    ("export format", ["export", "--format", "xls"], "unknown format 'xls'"),
    ("table layout", ["table", "--layout", "table9"], "unknown layout 'table9'"),
    ("table score", ["table", "--score", "auc"], "unknown score 'auc'"),
    ("table compare on table8", ["table", "--layout", "table8", "--compare", "standard"], "has no method rows"),
    ("table compare unknown", ["table", "--compare", "nosuch"], "--compare nosuch: no runs of that method"),
    ("show unknown run", ["show", "--runs-dir", "{tmp}", "zzzz"], "no run id starting with 'zzzz'"),
    ("show damaged folder", ["show", "{tmp}/empty"], "spec.json is missing or damaged"),
    ("show missing store", ["show", "--runs-dir", "{tmp}/typo", "abc"], "the runs folder"),
    ("table missing store", ["table", "--runs-dir", "{tmp}/typo"], "/typo does not exist; check --runs-dir"),
    ("export missing store", ["export", "--runs-dir", "{tmp}/typo"], "/typo does not exist; check --runs-dir"),
    ("status missing store", ["status", "--runs-dir", "{tmp}/typo"], "/typo does not exist; check --runs-dir"),
    ("plot missing store", ["plot", "curves", "--runs-dir", "{tmp}/typo"], "/typo does not exist; check --runs-dir"),
    ("empty runs dir", ["table", "--runs-dir", ""], "--runs-dir is empty"),
    ("runs dir link loop", ["run", "--runs-dir", "{tmp}/loop"], "is a symbolic link to nowhere (or a link loop)"),
    ("runs dir link loop table", ["table", "--runs-dir", "{tmp}/loop"], "is a symbolic link to nowhere"),
    ("lambda epochs huge", ["plot", "lambda", "--epochs", "100000000", "--out", "{tmp}/figs"],
     "--epochs must be between 2 and 10,000"),
    ("crowd simulate huge", ["crowd", "simulate", "--items", "10000000000", "--out", "{tmp}/votes.csv"],
     "--items x --votes-per-item must be between 1 and"),
    ("crowd infer a device", ["crowd", "infer", "/dev/zero", "--out", "{tmp}/labels.csv"], "is not a regular file"),
    ("crowd infer a folder", ["crowd", "infer", "{tmp}", "--out", "{tmp}/labels.csv"], "is not a regular file"),
    ("empty method", ["run", "--method", ""], "--method is empty"),
    ("empty dataset", ["run", "--dataset", ""], "--dataset is empty"),
    ("dataset without real noisy labels", ["run", "--method", "jocor", "--dataset", "imagefolder", "--data-root",
                                 "{tmp}/twoclasses", "--noise-source", "dataset"], "ships no noisy training labels"),
    ("ferplus real noise in folders", ["run", "--dataset", "ferplus", "--data-root", "{tmp}/ferfolders",
                                       "--noise-source", "dataset", "--set",
                                       'datasets.ferplus.options.real_noise="fer2013"'], "only fer2013.csv carries"),
    ("noise file missing", ["run", "--noise-file", "{tmp}/nope.csv"], "nope.csv' does not exist"),
    ("noise file is a folder", ["run", "--noise-file", "{tmp}"], "is a folder"),
    ("noise file not utf-8", ["run", "--noise-file", "{tmp}/latin1.toml"], "is not UTF-8 text"),
    ("noise file garbage", ["run", "--noise-file", "{tmp}/broken.toml"], "expected '<name> <label>'"),
    ("noise file with noise source", ["run", "--noise-file", "{tmp}/broken.toml", "--noise-source", "dataset"],
     "leave out --noise-source"),
    ("fer-confusion on unknown classes", ["run", "--dataset", "imagefolder", "--data-root", "{tmp}/pets",
                                          "--noise-mode", "fer-confusion"], "fer-confusion knows the eight"),
    ("votes file missing", ["crowd", "infer", "{tmp}/nope.csv", "--out", "{tmp}/x.csv"], "does not exist"),
    ("crowd method unknown", ["crowd", "infer", "{tmp}/broken.toml", "--method", "em", "--out", "{tmp}/x.csv"],
     "needs a header with the columns item, annotator and label"),
    ("describe unknown method", ["methods", "nosuch"], "unknown method 'nosuch'"),
    ("prepare without dataset", ["prepare"], "Missing option '--dataset'"),
]

STORE_COMMANDS = {"run", "sweep", "table", "status", "export"}


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder holding one finished run, made once for the whole catalogue."""
    root = tmp_path_factory.mktemp("store") / "runs"
    try:
        main(["run", "--method", "standard", "--epochs", "1", "--runs-dir", str(root), "--quiet", *TINY])
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    return root


@pytest.fixture(scope="module")
def helpers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("helpers")
    (folder / "loop").symlink_to("loop")  # a link to itself
    (folder / "device.toml").write_text('[run]\ndevice = "tpu"\n')
    (folder / "broken.toml").write_text("[train\nepochs = 3\n")
    (folder / "latin1.toml").write_bytes("[run]\nmethod = 'caf\xe9'\n".encode("latin-1"))
    (folder / "section.toml").write_text("[trian]\nepochs = 3\n")
    (folder / "key.toml").write_text("[train]\nepoch = 3\n")
    (folder / "paths.toml").write_text('[plugins]\npaths = "mine"\n')
    (folder / "table.toml").write_text("[methods]\ncct = 3\n")
    (folder / "preset.toml").write_text('[sweeps.x]\nmethod = ["standard"]\n')
    (folder / "garbage.pth").write_bytes(b"not a checkpoint" * 100)
    import torch

    class Evil:  # unpickling calls os.system: the safe loader must refuse it before it runs
        def __reduce__(self):
            return (os.system, (f"touch {folder / 'pwned'}",))

    torch.save({"state_dict": Evil()}, folder / "evil.pth")
    (folder / "empty").mkdir()
    import numpy as np
    from PIL import Image

    for where, cls in (("twoclasses", "happy"), ("twoclasses", "sad"), ("pets", "cat"), ("pets", "dog")):
        (folder / where / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8, 3), 50 * i, np.uint8)).save(folder / where / cls / f"{i}.png")
    from tests.test_datasets_ferplus import make_folder_layout

    make_folder_layout(folder / "ferfolders")
    return folder


def test_the_malicious_pretrained_file_never_ran(cli, store, helpers):
    result = cli("run", "--pretrained", str(helpers / "evil.pth"), "--runs-dir", str(store))
    assert result.code == 2 and not (helpers / "pwned").exists()


def test_the_catalogue_has_at_least_40_inputs():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("name", "args", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_message_and_exit_2(cli, store, helpers, name, args, message):
    before = _digest(store)
    argv = [a.replace("{tmp}", str(helpers)) for a in args]
    if argv[0] in STORE_COMMANDS and "--runs-dir" not in argv:
        argv += ["--runs-dir", str(store)]
    result = cli(*argv)
    assert result.code == 2, (result.code, result.err)
    assert message.replace("{tmp}", str(helpers)) in " ".join(result.err.split()), result.err
    assert "Traceback" not in result.err and "internal error" not in result.err
    assert "weights_only" not in result.err  # never torch's advice to switch off the safe loader
    assert _digest(store) == before  # nothing stored before is changed, and no run folder appeared


def test_an_empty_class_folder_is_an_error_not_an_extra_class(cli, store, tmp_path):
    import numpy as np
    from PIL import Image

    for cls in ("happy", "sad"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / "data" / cls / f"{i}.png")
    (tmp_path / "data" / "angry").mkdir()
    before = _digest(store)
    result = cli("run", "--dataset", "imagefolder", "--data-root", str(tmp_path / "data"), "--runs-dir", str(store))
    assert result.code == 2 and "'angry'" in result.err and "hold no training images" in result.err
    assert _digest(store) == before


@pytest.mark.parametrize("command", [["run", "--method", "standard", "--epochs", "1", *TINY], ["table"], ["status"]])
def test_a_runs_folder_that_is_a_file_is_one_clear_message(cli, tmp_path, command):
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    result = cli(*command, "--runs-dir", str(blocker))
    assert result.code == 2 and "is a file, not a folder" in result.err and "Traceback" not in result.err
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("code,text", [("ENOSPC", "the disk (or quota) is full"), ("EROFS", "read-only file system"),
                                       ("EACCES", "permission denied")])
def test_a_full_or_read_only_disk_is_one_clear_message_and_keeps_what_was_stored(cli, store, monkeypatch, code, text):
    import errno

    import nlbench.fileio

    before = _digest(store)

    def refuse(path, data):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), str(path))

    monkeypatch.setattr(nlbench.fileio, "atomic_write_bytes", refuse)
    result = cli("run", "--method", "standard", "--epochs", "1", "--seed", "5", "--runs-dir", str(store), *TINY)
    assert result.code == 2, result.err
    assert text in result.err and "Nothing stored before is lost" in result.err and "Traceback" not in result.err
    assert {k: v for k, v in _digest(store).items() if k in before} == before
