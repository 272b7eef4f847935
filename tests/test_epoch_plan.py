"""Engine support for methods that plan their epochs: Segment plans, ctx.scan and ctx.fetch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from nlbench import Batch, Method, Phase, Segment
from nlbench.seeding import derive_seed
from nlbench.settings import TrainSettings
from nlbench.testing import stub_context
from nlbench.train.epoch import EpochRunner, ImageCache, epoch_order, planned_steps

PHASE = Phase("train", 3)
N = 10


class FakeAugmenter:
    """Images are N x 4 uint8 "feature" rows; the train transform adds seeded noise."""

    def test(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() / 100

    def train(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return images.float() / 100 + 0.01 * torch.randn(images.shape, generator=gen, device=images.device)


def images() -> torch.Tensor:
    return torch.arange(N * 4, dtype=torch.uint8).reshape(N, 4)


def context(labels=None, **kwargs):
    labels = np.arange(N) % 3 if labels is None else labels
    ctx = stub_context(num_classes=3, labels=labels, **kwargs)
    ctx.settings = dataclasses.replace(ctx.settings, drop_last=False, eval_batch_size=3)
    ctx.images = images()
    ctx.augmenters = lambda name: FakeAugmenter()
    return ctx


class Recorder(Method):
    """Trains nothing; records what the engine hands it and plans its epochs from ``plan``."""

    name = "recorder"

    def __init__(self, plan=None) -> None:
        super().__init__()
        self.plan = plan
        self.seen: list[tuple[str | None, list[int]]] = []

    def build(self, ctx) -> None:
        super().build(ctx)
        self.net = ctx.backbone()

    def epoch_plan(self, phase, epoch):
        return self.plan

    def train_step(self, batch: Batch, phase, epoch):
        self.seen.append((batch.segment, batch.index.tolist()))
        return {"loss": self.net(batch.x).sum().detach() * 0}


def run_epoch(method: Method, ctx, epoch: int = 0) -> dict:
    method.build(ctx)
    ctx.modules_of = method.modules
    runner = EpochRunner(method, ctx, PHASE, FakeAugmenter(), ImageCache(ctx.images, ctx.device), ctx.labels,
                         ctx.labels.given.clone(), ctx.settings)
    steps = runner.start(epoch)
    for _ in range(steps):
        runner.step()
    return runner.finish()


def settings(**changes) -> TrainSettings:
    return TrainSettings(**{"batch_size": 2, "drop_last": False, **changes})


def test_segments_run_in_order_each_in_its_own_seeded_permutation() -> None:
    plan = [Segment("a", torch.tensor([1, 2, 3])), Segment("b", torch.tensor([0, 1, 2]))]
    steps = planned_steps(plan, settings(), seed=5, phase="train", epoch=2)
    assert [s.segment for s in steps] == ["a", "a", "b", "b"]
    for name, members, got in (("a", [1, 2, 3], steps[:2]), ("b", [0, 1, 2], steps[2:])):
        gen = torch.Generator().manual_seed(derive_seed(5, "train", 2, "sampler", name))
        expected = torch.tensor(members)[torch.randperm(3, generator=gen)]
        assert torch.cat([s.index for s in got]).tolist() == expected.tolist()
    # drop_last: floor(3 / 2) = 1 step per segment; a segment smaller than B still gets one step.
    dropped = planned_steps(plan, settings(drop_last=True), 5, "train", 2)
    assert [(s.segment, s.index.numel()) for s in dropped] == [("a", 2), ("b", 2)]
    small = planned_steps([Segment("c", torch.tensor([4]))], settings(drop_last=True), 5, "train", 2)
    assert [s.index.tolist() for s in small] == [[4]]


def test_empty_segments_are_skipped_the_cap_holds_and_order_and_batch_size_are_kept() -> None:
    plan = [Segment("empty", torch.zeros(0, dtype=torch.long)),
            Segment("fixed", torch.tensor([7, 3, 3, 9, 1]), shuffle=False, batch_size=3),
            Segment("rest", torch.arange(N))]
    steps = planned_steps(plan, settings(), 0, "train", 0)
    assert [s.segment for s in steps] == ["fixed", "fixed"] + ["rest"] * 5
    assert [s.index.tolist() for s in steps[:2]] == [[7, 3, 3], [9, 1]]  # repeats allowed, order kept
    capped = planned_steps(plan, settings(max_steps_per_epoch=3), 0, "train", 0)
    assert [s.segment for s in capped] == ["fixed", "fixed", "rest"]
    assert planned_steps([Segment("empty", torch.zeros(0, dtype=torch.long))], settings(), 0, "train", 0) == []


def test_the_engine_trains_the_plan_and_batches_carry_their_segment() -> None:
    plan = [Segment("first", torch.tensor([8, 9])), Segment("none", torch.zeros(0, dtype=torch.long)),
            Segment("second", torch.tensor([0, 1, 2]), shuffle=False)]
    method = Recorder(plan)
    run_epoch(method, context(batch_size=2))
    assert [segment for segment, _ in method.seen] == ["first", "second", "second"]
    assert sorted(method.seen[0][1]) == [8, 9]
    assert [index for _, index in method.seen[1:]] == [[0, 1], [2]]


def test_without_a_plan_the_epoch_is_the_engines_permutation() -> None:
    method = Recorder(None)
    ctx = context(batch_size=4)
    run_epoch(method, ctx, epoch=1)
    gen = torch.Generator().manual_seed(derive_seed(ctx.seed, "train", 1, "sampler"))
    order, steps = epoch_order(N, ctx.settings, gen, None)
    assert [segment for segment, _ in method.seen] == [None] * steps
    assert [i for _, index in method.seen for i in index] == order.tolist()  # ceil(10 / 4) = 3 steps
    assert steps == 3


def test_fetch_gives_the_training_images_by_index() -> None:
    ctx = context()
    index = torch.tensor([3, 0, 3])
    assert torch.equal(ctx.fetch(index), images()[index])
    ctx.images = ImageCache(images(), ctx.device)  # the assembly's source
    assert torch.equal(ctx.fetch(index), images()[index]) and ctx.fetch(index).dtype == torch.uint8


class TwoPart(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 3)
        self.frozen = nn.Dropout(0.5)


def test_scan_visits_every_sample_in_index_order_in_eval_mode_and_restores_the_modes() -> None:
    ctx = context(labels=np.zeros(N, dtype=np.int64))
    net = TwoPart()
    net.frozen.eval()  # a submodule a method keeps in eval mode stays so
    ctx.modules_of = lambda: [net]
    calls: list[tuple[bool, bool, list[int]]] = []

    def fn(x, index, labels):
        calls.append((net.training, torch.is_grad_enabled(), index.tolist()))
        z = net.body(x)
        return {"value": x[:, 0] * 100, "logits": z, "pair": torch.stack([index, labels], dim=1)}

    out = ctx.scan(fn)
    assert [c[2] for c in calls] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert all(not training and not grad for training, grad, _ in calls)
    assert net.training and net.body.training and not net.frozen.training
    assert out["value"].tolist() == pytest.approx(images()[:, 0].float().tolist())  # test transform
    assert out["pair"][:, 0].tolist() == list(range(N)) and out["pair"].shape == (N, 2)
    # The logits leave the memorisation record (correct against the current labels).
    expected = net.body(images().float() / 100).argmax(1) == 0
    assert torch.equal(ctx.scan_correct, expected)


def test_an_epoch_that_scans_records_training_accuracy_on_clean_and_noisy_samples() -> None:
    class Scanner(Recorder):
        def on_epoch_start(self, phase, epoch):
            # Class 0 everywhere: right exactly where the label is 0.
            self.ctx.scan(lambda x, index, labels: {"logits": torch.tensor([[1.0, 0, 0]]).expand(len(index), 3)})

    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 0, 0])
    ctx = context(labels=labels)
    method = Scanner(None)
    method.build(ctx)
    ctx.modules_of = method.modules
    clean = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 1, 2])  # the last two given labels are wrong
    runner = EpochRunner(method, ctx, PHASE, FakeAugmenter(), ImageCache(ctx.images, ctx.device), ctx.labels,
                         clean, ctx.settings)
    for _ in range(runner.start(0)):
        runner.step()
    summary = runner.finish()
    assert summary["scan_acc_clean"] == pytest.approx(100 * 3 / 8)
    assert summary["scan_acc_noisy"] == pytest.approx(100.0)
    assert ctx.scan_correct is None  # taken by the engine
    assert "scan_acc_clean" not in run_epoch(Recorder(None), context())


def test_step_work_is_summed_and_scans_add_a_third_per_image_and_network() -> None:
    from nlbench.train.result import work_epochs

    class Worker(Recorder):
        def on_epoch_start(self, phase, epoch):
            self.ctx.scan(lambda x, index, labels: {"v": x[:, 0]})  # one network: N / 3
            self.ctx.scan(lambda x, index, labels: {"v": x[:, 0]}, networks=2)

        def train_step(self, batch, phase, epoch):
            out = super().train_step(batch, phase, epoch)
            return {**out, "work": torch.tensor(float(batch.index.numel()) * 1.5)}

    summary = run_epoch(Worker(None), context(batch_size=4))
    assert summary["work"] == pytest.approx(1.5 * N)  # summed over steps, not averaged
    assert summary["scan_work"] == pytest.approx(N / 3 + 2 * N / 3)
    assert work_epochs([{"train": summary}, {"train": summary}], N) == {"work_epochs": pytest.approx(2 * (1.5 + 1))}
    plain = run_epoch(Recorder(None), context())
    assert "work" not in plain and "scan_work" not in plain
    # Methods that report no work keep the networks x passes estimate alone.
    assert work_epochs([{"train": plain}, {"train": {"scan_work": 5.0}}], N) == {}
