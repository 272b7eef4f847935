"""The run spec: typed and frozen, one precedence, and a run id that covers exactly what changes results."""

from __future__ import annotations

import dataclasses
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nlbench.errors import ConfigError, UsageError
from nlbench.plugins import get_registry
from nlbench.spec import RunRequest, RunSpec, resolve_spec
from nlbench.spec.config import Config, load_config

TINY_SETS = ["datasets.synthfer.options.train_size=21", "datasets.synthfer.options.test_size=14",
             "datasets.synthfer.options.size=16"]


def _spec(*sets: str, config: Config | None = None, **request) -> RunSpec:
    return resolve_spec(RunRequest(sets=[*TINY_SETS, *sets], **request), config or Config(), get_registry())


def test_run_id_ignores_runtime_fields_and_tracks_every_identity_field():
    base = _spec()
    runtime = [
        _spec(device="cpu"), _spec(cache_dir="/elsewhere"), _spec("train.compile=true"),
        _spec("train.eval_batch_size=7"), _spec('train.cache_on_device="no"'),
    ]
    assert {s.run_id for s in runtime} == {base.run_id}
    changed = [
        _spec(seed=2), _spec(noise=0.3), _spec(noise_mode="exact"), _spec(method="standard"),
        _spec("train.backbone_lr=0.002"), _spec("train.epochs=4"), _spec("methods.cct.lambda_max=0.8"),
        _spec("datasets.synthfer.options.nuisance=0.3"), _spec("train.augmentation=\"none\""),
    ]
    ids = [s.run_id for s in changed]
    assert base.run_id not in ids and len(set(ids)) == len(ids)


def test_spec_is_frozen_and_round_trips_through_json_and_pickle():
    spec = _spec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.train.epochs = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.hparams["lambda_max"] = 0.1
    again = RunSpec.from_json(spec.to_json())
    assert again == spec and again.run_id == spec.run_id
    assert pickle.loads(pickle.dumps(spec)) == spec  # executors send specs to worker processes
    tampered = {**spec.to_json(), "seed": 99}
    with pytest.raises(ConfigError, match="hashes to"):
        RunSpec.from_json(tampered)


def test_train_sets_rank_above_the_dataset_table_and_the_others_change_their_table(tmp_path):
    config_file = tmp_path / "benchmark.toml"
    config_file.write_text("[train]\nbatch_size = 100\n[datasets.synthfer]\nbatch_size = 50\n"
                           "[methods.cct]\nlambda_max = 0.7\n")
    config = load_config(config_file)
    assert _spec(config=config).train.batch_size == 50
    assert _spec("train.batch_size=8", config=config).train.batch_size == 8  # a flag beats [datasets.synthfer]
    assert _spec(config=config).hparams["lambda_max"] == 0.7
    assert _spec("methods.cct.lambda_max=0.6", config=config).hparams["lambda_max"] == 0.6
    assert _spec("train.epochs=9", epochs=4, config=config).train.epochs == 4  # --epochs beats --set train.epochs


@pytest.mark.parametrize(("item", "message"), [
    ("methods.nosuch.x=1", "no method is called 'nosuch'; known: "),
    ("datasets.nosuch.options.x=1", "no dataset is called 'nosuch'; known: "),
    ("methods.standard.bogus=1", "unknown key methods.standard.bogus"),
    ("datasets.rafdb.options.bogus=1", "unknown key datasets.rafdb.options.bogus"),
    ("train.batch_size=true", "train.batch_size must be an int, got True"),
    ("train.backbone_lr=nan", "train.backbone_lr must be a finite number"),
    ("train.backbone_lr=inf", "train.backbone_lr must be a finite number"),
    ("train.lr_decay=false", "train.lr_decay must be a float"),
    ("train.max_steps_per_epoch=-1", "train.max_steps_per_epoch must be >= 0"),
    ("train.eval_batch_size=0", "train.eval_batch_size must be in [1, 65536]"),
    ("train.weight_decay=-0.1", "train.weight_decay must be >= 0"),
    ("train.epochs=1000000", "train.epochs must be in [1, 10000]"),
    ('train.augmentation="blur"', "train.augmentation must be one of '', 'cct'"),
    ("methods.cct.term_weights=\"half\"", "methods.cct.term_weights must be one of 'equal', 'mean', 'code'"),
    ("datasets.synthfer.options.size=8", "datasets.synthfer.options.size must be in [16, 256]"),
    ("train.a.b=1", "training settings are train.<name>"),
    ("train.lr_milestones=9", "train.lr_milestones must be a list, got 9"),
    ("train.lr_milestones=[0]", "train.lr_milestones must be a list of epochs >= 1"),
    ("train.lr_milestones=[8, 4]", "train.lr_milestones must be increasing without repeats"),
])
def test_bad_settings_are_refused_by_name(item, message):
    with pytest.raises(ConfigError) as info:
        _spec(item)
    assert message in str(info.value)


def _write_folder_dataset(root: Path, shade: int = 0) -> None:
    for cls in ("happy", "sad"):
        for split in ("train", "test"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                value = (40 * i + shade + (100 if cls == "sad" else 0)) % 255
                Image.fromarray(np.full((20, 20, 3), value, np.uint8)).save(folder / f"{i}.png")


def test_the_data_enters_the_run_id_by_content_not_by_path(tmp_path):
    first, second, copy = tmp_path / "a", tmp_path / "b", tmp_path / "copy"
    _write_folder_dataset(first)
    _write_folder_dataset(second)
    (second / "train" / "sad" / "2.png").unlink()  # different files: one image fewer
    shutil.copytree(first, copy)

    def spec(root: Path) -> RunSpec:
        return resolve_spec(RunRequest(method="standard", dataset="imagefolder", data_root=str(root)), Config(),
                            get_registry())

    a, b, c = spec(first), spec(second), spec(copy)
    assert a.run_id != b.run_id
    assert a.run_id == c.run_id and a.data.root != c.data.root  # the same files elsewhere: the same experiment
    # Different files under the same root: an image replaced by a larger one changes the id.
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        copy / "train" / "happy" / "0.png")
    assert spec(copy).run_id != a.run_id


def test_a_data_root_that_is_wrong_is_a_usage_error_before_anything_is_stored(tmp_path):
    with pytest.raises(UsageError, match="not a folder"):
        resolve_spec(RunRequest(dataset="imagefolder", data_root=str(tmp_path / "missing")), Config(), get_registry())


def test_fields_added_later_enter_the_run_id_only_when_set():
    """train_size and cpu_amp arrived after runs were stored: at their defaults the old ids hold."""
    base = _spec()
    assert "train_size" not in base.identity()["train"] and "cpu_amp" not in base.identity()["train"]
    assert _spec("train.train_size=0").run_id == base.run_id
    ids = {_spec("train.train_size=10").run_id, _spec("train.cpu_amp=true").run_id, base.run_id}
    assert len(ids) == 3
    again = RunSpec.from_json(_spec("train.train_size=10").to_json())
    assert again.train.train_size == 10 and again.run_id == _spec("train.train_size=10").run_id
    # lr_milestones is a tuple; spec.json holds a list, which must hash as the tuple did
    stepped = _spec("train.lr_milestones=[3, 6]")
    assert "lr_milestones" not in base.identity()["train"] and stepped.run_id != base.run_id
    again = RunSpec.from_json(stepped.to_json())
    assert again.train.lr_milestones == (3, 6) and again.run_id == stepped.run_id
