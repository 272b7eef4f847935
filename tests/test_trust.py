"""Numbers a reviewer can trust: real-noise forget rates, model selection, metrics, statistics."""

from __future__ import annotations

from pathlib import Path

import pytest

from nlbench.plugins import get_registry
from nlbench.spec import RunRequest, resolve_spec
from nlbench.spec.config import Config
from tests.test_datasets_rafdb import make_rafdb


def _rafdb_with_real_noise(root: Path) -> Path:
    make_rafdb(root)
    # 8 training images: train_00001..7 of clean classes 0..6 and train_00010 of class 2; three
    # of them (4, 6 and 7) get a wrong noisy label.
    noisy = {1: 0, 2: 1, 3: 2, 4: 4, 5: 4, 6: 0, 7: 0, 8: 0, 10: 2}
    lines = [f"train_{i:05d}.jpg {label}" for i, label in noisy.items()]
    (root / "noisy.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("method", ["coteaching", "coteaching_plus", "jocor"])
def test_real_noise_forget_rate_is_the_realised_rate_not_the_run_default(tmp_path, method):
    root = _rafdb_with_real_noise(tmp_path)
    config = Config(datasets={"rafdb": {"options": {"noisy_list": "noisy.txt", "noisy_label_base": 0}}})

    def spec(**request):
        return resolve_spec(RunRequest(method=method, dataset="rafdb", data_root=str(root), noise_source="dataset",
                                       **request), config, get_registry())

    default = spec()
    assert default.noise.rate == pytest.approx(3 / 8)
    assert spec(noise=0.35).run_id == default.run_id  # the requested rate means nothing for real noise
    assert default.hparams["forget_rate"] == -1.0
    from nlbench.testing import stub_context

    cls = get_registry().method(method)
    instance = cls(cls.HParams(**dict(default.hparams)))
    instance.build(stub_context(noise_rate=default.noise.rate, epochs=default.train.epochs))
    assert instance.tau == pytest.approx(3 / 8)


def test_result_records_where_the_forget_rate_came_from():
    from nlbench.train.result import forget_rate_source

    class Spec:  # the two fields the function reads
        def __init__(self, forget, source):
            self.hparams = {"forget_rate": forget}
            self.noise = type("N", (), {"source": source})()

    assert forget_rate_source(Spec(-1.0, "dataset")) == "the realised rate of the dataset's own noisy labels"
    assert forget_rate_source(Spec(-1.0, "injected")) == "the injected noise rate"
    assert forget_rate_source(Spec(0.3, "dataset")) == "the forget_rate option"


# -- model selection -----------------------------------------------------------------------
def test_summarise_curve_by_hand():
    from nlbench.train.model_selection import summarise_curve

    test = [50.0, 62.0, 58.0, 61.0, 57.0]
    val = [40.0, 45.0, 52.0, 52.0, 47.0]  # highest first at epoch 3 (tie with 4: the first wins)
    s = summarise_curve(test, 3, val)
    assert s["last"] == 57.0
    assert s["lastk"] == pytest.approx((58.0 + 61.0 + 57.0) / 3)
    assert (s["best"], s["best_epoch"]) == (62.0, 2)
    assert (s["val"], s["val_epoch"]) == (58.0, 3)
    assert summarise_curve(test, 10)["k"] == 5 and "val" not in summarise_curve(test, 10)


def test_summarise_history_scores_follow_each_selection_rule():
    from nlbench.train.model_selection import summarise_history

    history = [
        {"phase": "train", "test": {"model": acc}, "val": {"model": v},
         "test_scores": {"model": {"balanced_accuracy": acc - 1, "macro_f1": acc - 2, "ece": e}}}
        for acc, v, e in ((50.0, 10.0, 9.0), (70.0, 30.0, 5.0), (60.0, 20.0, 7.0))
    ]
    model = summarise_history(history, 2)["model"]
    assert model["val"] == 70.0 and model["scores"]["val"]["ece"] == 5.0
    assert model["scores"]["last"] == {"balanced_accuracy": 59.0, "macro_f1": 58.0, "ece": 7.0}
    assert model["scores"]["lastk"]["balanced_accuracy"] == pytest.approx((69.0 + 59.0) / 2)


def test_validation_split_is_stratified_seeded_and_disjoint():
    import numpy as np

    from nlbench.data.validation import validation_split

    noisy = np.array([0] * 50 + [1] * 30 + [2] * 20 + [3] * 4)
    fit, held = validation_split(noisy, 0.1, seed=1, dataset="x")
    assert sorted(np.bincount(noisy[held], minlength=4).tolist()) == sorted([5, 3, 2, 0])
    assert np.bincount(noisy[held], minlength=4).tolist() == [5, 3, 2, 0]
    assert np.intersect1d(fit, held).size == 0 and fit.size + held.size == noisy.size
    again = validation_split(noisy, 0.1, seed=1, dataset="x")[1]
    assert np.array_equal(held, again)
    assert not np.array_equal(held, validation_split(noisy, 0.1, seed=2, dataset="x")[1])
    assert validation_split(noisy, 0.0, seed=1, dataset="x")[1].size == 0


def test_every_method_of_a_seed_holds_out_the_same_images_with_the_same_noisy_labels():
    import numpy as np
    import torch

    from nlbench.train.assemble import assemble

    runs = []
    for method in ("standard", "coteaching"):
        spec = resolve_spec(RunRequest(method=method, dataset="synthfer", noise=0.4, seed=3,
                                       sets=["datasets.synthfer.options.train_size=200",
                                             "datasets.synthfer.options.test_size=40",
                                             "datasets.synthfer.options.size=16", "train.image_size=16"]),
                            Config(), get_registry())
        runs.append(assemble(spec, get_registry(), device=torch.device("cpu")))
    a, b = runs
    assert a.val_index.size == 20 and np.array_equal(a.val_index, b.val_index)
    assert torch.equal(a.val_labels, b.val_labels)
    assert torch.equal(a.val_labels, torch.as_tensor(a.noisy[a.val_index]))  # noisy, as trained on
    assert (a.val_labels != a.val_clean).any()  # 40% noise reaches the validation labels too
    assert a.labels.given.numel() == 180 and a.train_images.images.shape[0] == 180


# -- metrics -------------------------------------------------------------------------------
def test_balanced_accuracy_macro_f1_and_ece_by_hand():
    import numpy as np
    import torch

    from nlbench.train.evaluate import class_scores, expected_calibration_error, scores

    # true 0 0 0 1 1 2 ; predicted 0 0 1 1 2 2
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    predicted = torch.tensor([0, 0, 1, 1, 2, 2])
    # recall: 2/3, 1/2, 1 -> balanced 13/18; precision: 1, 1/2, 1/2
    f1 = [2 * 1 * (2 / 3) / (1 + 2 / 3), 2 * 0.5 * 0.5 / 1.0, 2 * 0.5 * 1 / 1.5]
    got = scores({"model": predicted}, labels, 4)["model"]  # class 3 absent: left out of the means
    assert got["balanced_accuracy"] == pytest.approx(100 * 13 / 18)
    assert got["macro_f1"] == pytest.approx(100 * sum(f1) / 3)
    assert class_scores(np.zeros((3, 3)))["balanced_accuracy"] is None
    # ECE, 15 bins: confidences 0.95 (x2: one right, one wrong) share bin (14/15, 1];
    # 0.5 (right) is alone in (7/15, 8/15]: |0.5 - 0.95| * 2/3 + |1 - 0.5| * 1/3
    conf = torch.tensor([0.95, 0.95, 0.5])
    correct = torch.tensor([True, False, True])
    assert expected_calibration_error(conf, correct) == pytest.approx(100 * (0.45 * 2 / 3 + 0.5 / 3))
    assert expected_calibration_error(torch.tensor([1.0, 1.0]), torch.tensor([True, True])) == pytest.approx(0.0)


def test_ensemble_probabilities_are_not_softmaxed_twice():
    import torch

    from nlbench.train.evaluate import as_probabilities

    probs = torch.tensor([[0.7, 0.2, 0.1]])
    assert torch.equal(as_probabilities(probs), probs)
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    assert torch.allclose(as_probabilities(logits), torch.softmax(logits, 1))


def test_real_noise_without_a_known_rate_needs_an_explicit_forget_rate(tmp_path):
    make_rafdb(tmp_path)
    labels = {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6, 8: 0, 10: 2}  # the clean labels: the rate looks like 0
    (tmp_path / "noisy.txt").write_text("\n".join(f"train_{i:05d}.jpg {c}" for i, c in labels.items()) + "\n")
    config = Config(datasets={"rafdb": {"options": {"noisy_list": "noisy.txt", "noisy_label_base": 0}}})
    request = dict(method="jocor", dataset="rafdb", data_root=str(tmp_path), noise_source="dataset")
    from nlbench.errors import UsageError

    with pytest.raises(UsageError, match="methods.jocor.forget_rate"):
        resolve_spec(RunRequest(**request), config, get_registry())
    spec = resolve_spec(RunRequest(**request, sets=["methods.jocor.forget_rate=0.3"]), config, get_registry())
    assert spec.hparams["forget_rate"] == 0.3
    assert resolve_spec(RunRequest(**{**request, "method": "standard"}), config, get_registry()).noise.rate == 0


def test_train_size_trains_on_a_seeded_subset_whose_faces_keep_their_noisy_labels():
    """train.train_size: the same noise as the whole split, the same subset for every method of a seed."""
    import numpy as np
    import torch

    from nlbench.train.assemble import assemble

    sets = ["datasets.synthfer.options.train_size=200", "datasets.synthfer.options.test_size=40",
            "datasets.synthfer.options.size=16", "train.image_size=16"]

    def build(method: str, *extra: str, seed: int = 3):
        spec = resolve_spec(RunRequest(method=method, dataset="synthfer", noise=0.4, seed=seed, sets=[*sets, *extra]),
                            Config(), get_registry())
        return assemble(spec, get_registry(), device=torch.device("cpu"))

    whole, a, b = build("standard"), build("standard", "train.train_size=50"), build("coteaching", "train.train_size=50")
    assert np.array_equal(a.noisy, whole.noisy)  # drawn before the subset: a face's noisy label never moves
    assert np.array_equal(a.val_index, whole.val_index)  # the validation split is the whole run's
    assert a.train_index.size == 50 and np.array_equal(a.train_index, b.train_index)
    assert set(a.train_index) <= set(whole.train_index) and np.all(np.diff(a.train_index) > 0)
    assert torch.equal(a.labels.given, torch.as_tensor(whole.noisy[a.train_index]))
    assert torch.equal(a.clean, torch.as_tensor(whole.train.table.labels[a.train_index]))
    assert torch.equal(a.train_images.images, whole.train.images[torch.as_tensor(a.train_index)])
    assert a.ctx.train_size == 50
    other_seed = build("standard", "train.train_size=50", seed=4)
    assert not np.array_equal(other_seed.train_index, a.train_index)
    assert build("standard", "train.train_size=1000").train_index.size == whole.train_index.size  # all of it
