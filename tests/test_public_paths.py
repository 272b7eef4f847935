"""The import paths plugin authors and queued jobs rely on stay stable across the layout's moves."""

from __future__ import annotations

import importlib
import pickle
import tomllib
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_facade_and_the_plugin_api_paths_import() -> None:
    import nlbench

    for name in nlbench.__all__:
        assert getattr(nlbench, name) is not None, name
    from nlbench.executors import Executor, ExecutorOptions, RunReport  # noqa: F401
    from nlbench.hookspecs import hookimpl, register_methods  # noqa: F401
    from nlbench.options import Range
    from nlbench.seeding import derive_seed  # noqa: F401
    from nlbench.testing import ConformanceError, check_method, stub_context  # noqa: F401

    assert Range is nlbench.Range


def test_spec_and_sweep_keep_their_public_names() -> None:
    import nlbench.spec
    import nlbench.sweep

    for name in nlbench.spec.__all__:
        assert getattr(nlbench.spec, name) is not None, name
    for name in nlbench.sweep.__all__:
        assert getattr(nlbench.sweep, name) is not None, name
    from nlbench.spec import RunSpec, resolve_spec  # noqa: F401
    from nlbench.sweep import SweepRequest, expand  # noqa: F401


@pytest.mark.parametrize(("old", "new", "name"), [
    ("nlbench.selection", "nlbench.lib.selection", "Relabeller"),
    ("nlbench.losses", "nlbench.lib.losses", "kl_divergence"),
    ("nlbench.schedules", "nlbench.lib.schedules", "cct_lambda"),
    ("nlbench.synthface", "nlbench.lib.synthface", "render_faces"),
    ("nlbench.augment", "nlbench.data.augment", "random_erasing"),
])
def test_moved_modules_still_import_for_one_release_with_a_deprecation_warning(old: str, new: str, name: str) -> None:
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.import_module(old)  # importing alone does not warn: only using a name does


def test_queued_slurm_jobs_pickled_under_the_old_class_path_still_unpickle() -> None:
    from nlbench.executors import ExecutorOptions, TrainTask
    from nlbench.sweep.slurm import TrainTask as Moved

    assert TrainTask is Moved
    task = Moved(ExecutorOptions(runs_dir="somewhere"))
    # Protocol 0 names classes as text lines, so the old path can be written in as 0.3.0 wrote it.
    old = pickle.dumps(task, protocol=0).replace(b"nlbench.sweep.slurm", b"nlbench.executors")
    assert b"nlbench.executors" in old
    again = pickle.loads(old)
    assert isinstance(again, Moved) and again.options.runs_dir == "somewhere"


def test_pyproject_lists_every_subpackage() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "nlbench").rglob("__init__.py")}
    assert found <= listed, f"subpackages missing from pyproject.toml: {sorted(found - listed)}"
