"""LA-Net: the hand-computed values of the design's Part D.4, the network, a training step with
landmarks, the state a resumed run needs, the ablation without landmarks and the conformance check."""

from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from conftest import TINY, whole_and_resumed
from nlbench import Phase
from nlbench.errors import ConfigError, UsageError
from nlbench.landmarks import AFLW19
from nlbench.lib.lanet import (
    EMPTY_SLOT,
    KeyQueue,
    aggregate,
    awing,
    contrastive_loss,
    kl_to_prediction,
    lde_targets,
    neighbours,
    pseudo_labels,
    target_heatmaps,
    unswap_flipped,
)
from nlbench.plugins import get_registry
from nlbench.safe_load import load_tensors
from nlbench.spec import build_hparams
from nlbench.testing import stub_context
from nlbench.train.transfer import load_deployable

LANET = get_registry().method("lanet")
lanet = sys.modules[LANET.__module__]
PHASE = Phase("train", 10)
# The test ResNet (a 0.4M-parameter timm model, 96-d features) keeps the built-network tests fast
# and proves LA-Net does not assume ResNet-18's sizes.
BACKBONE = "test_resnet" if "test_resnet" in timm.list_models("test_resnet*") else "resnet18"
LABELS = (0, 1, 2, 0) * 4


def built(seed: int = 0, backbone: str = BACKBONE, image_size: int = 16, **hp) -> object:
    """An LA-Net built on a stub context (16 training samples, K = 3) with a real timm ResNet, in train mode."""
    ctx = stub_context(num_classes=3, labels=np.array(LABELS), seed=seed, batch_size=8,
                       networks=lambda n=None: timm.create_model(backbone, num_classes=3))
    ctx.settings = ctx.settings.__class__(**{**ctx.settings.__dict__, "image_size": image_size})
    method = LANET(LANET.HParams(**{"queue_size": 32, **hp}))
    method.build(ctx)
    for module in method.modules():
        module.train()
    return method


def batch(n: int = 8, size: int = 16, seed: int = 0, index=None, flipped=None) -> SimpleNamespace:
    """A hand-made training batch with landmarks (what the engine gives a method with needs_landmarks)."""
    gen = torch.Generator().manual_seed(seed)
    index = torch.arange(n) if index is None else torch.as_tensor(index)
    return SimpleNamespace(x=torch.randn(n, 3, size, size, generator=gen), y=torch.as_tensor(LABELS)[index],
                           index=index, landmarks=torch.rand(n, 19, 2, generator=gen) * size, raw=None,
                           segment=None, flipped=flipped)


# -- D.4 1: Adaptive Wing --------------------------------------------------------------------------
@pytest.mark.parametrize(("pred", "target", "expected"), [
    (0.3, 0.0, 1.074747),   # 14 ln(1 + 0.3^2.1)
    (0.9, 1.0, 1.070100),   # 14 ln(1 + 0.1^1.1)
    (0.2, 1.0, 8.299813),   # |d| = 0.8 >= theta: 0.8 A - C, A = 9.797850, C = -0.461533
    (0.6, 0.0, 4.047377),   # A = 11.121422, C = 2.625476
    (0.0, 0.0, 0.0),
])
def test_awing_of_the_worked_values(pred: float, target: float, expected: float) -> None:
    assert awing(torch.tensor([pred]), torch.tensor([target])).item() == pytest.approx(expected, abs=1e-5)
    assert 14 * math.log(1 + 0.3**2.1) == pytest.approx(1.074747, abs=1e-6)


@pytest.mark.parametrize("target", [0.0, 0.5, 1.0])
def test_awing_pieces_meet_at_theta_and_its_gradient_is_finite(target: float) -> None:
    y = torch.full((3,), target)
    pred = (y + torch.tensor([0.5 - 1e-5, 0.5 + 1e-5, 0.0])).requires_grad_()
    loss = awing(pred, y)
    assert loss[0].item() == pytest.approx(loss[1].item(), abs=1e-3)  # continuous at |d| = theta
    loss.sum().backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[2] == 0  # no NaN at d = 0


# -- D.4 2: target heatmaps and weights -----------------------------------------------------------
def test_heatmap_and_weights_of_the_worked_landmark() -> None:
    heat, weights = target_heatmaps(torch.tensor([[[41.0, 22.0]]]), 56, 56, (4.0, 4.0))
    h, w = heat[0, 0], weights[0, 0]  # centre (x, y) = (10, 6): rows are y
    assert h[6, 10].item() == 1.0
    assert h[6, 11].item() == pytest.approx(math.exp(-1 / 4.5), abs=1e-6) == pytest.approx(0.800737, abs=1e-6)
    assert h[7, 11].item() == pytest.approx(0.641180, abs=1e-6)
    assert h[6, 13].item() == pytest.approx(0.135335, abs=1e-6)
    assert h[6, 14].item() == pytest.approx(0.028565, abs=1e-6)
    assert h[6, 15].item() == 0.0  # outside the window c - 5 .. c + 4
    assert h[6, 5].item() == pytest.approx(0.003866, abs=1e-6) == h[1, 10].item()  # inside, at its edge
    assert h[11, 10].item() == 0.0
    assert w[6, 13].item() == 10.0 and w[6, 14].item() == 1.0
    assert int((w == 10).sum()) == 45
    assert h.sum().item() == pytest.approx(14.10278, abs=1e-5)


def test_a_landmark_off_the_grid_or_missing_has_no_target_and_weight_one() -> None:
    points = torch.tensor([[[-30.0, 22.0], [float("nan"), 22.0], [41.0, float("nan")]]])
    heat, weights = target_heatmaps(points, 56, 56, (4.0, 4.0))
    assert heat.abs().sum().item() == 0.0 and bool((weights == 1).all())


def official_style_target(cx: float, cy: float, size: int) -> np.ndarray:
    """The official target placement, written out cell by cell: the centre int(p + 0.5), a 10-cell
    Gaussian patch whose corner is int(c - 4.5) (both truncated towards zero), pasted where it
    overlaps the grid."""
    patch = np.exp(-((np.arange(10)[None, :] - 5) ** 2 + (np.arange(10)[:, None] - 5) ** 2) / 4.5)
    out = np.zeros((size, size), dtype=np.float32)
    centre = (int(cx + 0.5), int(cy + 0.5))
    corner = (int(centre[0] - 4.5), int(centre[1] - 4.5))
    end = (int(centre[0] + 5.5), int(centre[1] + 5.5))
    if corner[0] >= size or corner[1] >= size or end[0] < 0 or end[1] < 0:
        return out
    for y in range(max(0, corner[1]), min(end[1], size)):
        for x in range(max(0, corner[0]), min(end[0], size)):
            out[y, x] = patch[y - corner[1], x - corner[0]]
    return out


def test_code_fidelity_reproduces_the_official_targets_near_the_edges_too() -> None:
    cells = [(-6.2, 3.0), (-1.7, 0.4), (0.2, 2.6), (3.1, 4.9), (4.6, 7.0), (10.25, 5.5), (53.8, 55.9), (58.0, 20.0)]
    points = torch.tensor([cells]) * 4.0
    heat, _ = target_heatmaps(points, 56, 56, (4.0, 4.0), code=True)
    for k, (cx, cy) in enumerate(cells):
        assert np.allclose(heat[0, k].numpy(), official_style_target(cx, cy, 56), atol=1e-6), (cx, cy)
    # Away from the top and left edges both forms agree; near them the code's peak is one cell late.
    paper, _ = target_heatmaps(points, 56, 56, (4.0, 4.0))
    assert torch.equal(paper[0, 5], heat[0, 5])
    # x: 3.1 + 0.5 -> centre 3, the code's peak at 4; y: 4.9 + 0.5 -> centre 5 on both
    assert paper[0, 3, 5, 3].item() == 1.0 and heat[0, 3, 5, 4].item() == 1.0


def test_the_code_flip_puts_the_points_of_flipped_samples_back_on_their_indices() -> None:
    points = torch.arange(2 * 19 * 2, dtype=torch.float32).view(2, 19, 2)
    out = unswap_flipped(points, torch.tensor([False, True]), AFLW19.flip)
    assert torch.equal(out[0], points[0])
    assert torch.equal(out[1, 7], points[1, 10]) and torch.equal(out[1, 18], points[1, 18])


# -- D.4 3: label distribution estimation ---------------------------------------------------------
def worked_lde() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    u = torch.zeros(3, 512)
    u[0, 0], u[1, 0], u[1, 1], u[2, 1] = 1.0, 0.9, 0.1, 1.0
    probs = torch.tensor([[0.5, 0.5], [0.8, 0.2], [0.3, 0.7]])
    history = F.one_hot(torch.tensor([1, 0, 1]), 2).float()
    return u, probs, history


def test_lde_targets_of_the_worked_batch() -> None:
    u, probs, history = worked_lde()
    nearest = neighbours(u, 1)
    assert nearest.squeeze(1).tolist() == [1, 0, 1]  # 1 -> 2, 2 -> 1, 3 -> 2
    assert torch.equal(neighbours(u[:, :64], 1), nearest)  # v = the first 64 dims: the same neighbours
    half = torch.full((3, 1), 0.5)
    a = 0.5 * (aggregate(probs, nearest, half) + aggregate(probs, neighbours(u[:, :64], 1), half))
    targets = lde_targets(history, a, 0.9)
    assert targets.tolist() == [pytest.approx([0.08, 0.92], abs=1e-6), pytest.approx([0.95, 0.05], abs=1e-6),
                                pytest.approx([0.08, 0.92], abs=1e-6)]
    kl = kl_to_prediction(targets, probs.log())
    assert 0.08 * math.log(0.16) + 0.92 * math.log(1.84) == pytest.approx(0.414378, abs=1e-6)
    assert kl.item() == pytest.approx(0.218003, abs=1e-6)
    assert pseudo_labels(targets, torch.arange(3), 0.7).tolist() == [1, 0, 1]
    # the ablation: expression neighbours only, t_1 = 0.9 b_1 + 0.1 (W^u P)_1
    alone = lde_targets(history, aggregate(probs, nearest, half), 0.9)
    assert alone[0].tolist() == pytest.approx([0.08, 0.92], abs=1e-6)


def full_pair_targets(score: torch.nn.Module, features: torch.Tensor, probs: torch.Tensor, k: int) -> torch.Tensor:
    """The official aggregation: every B^2 pair scored, the non-neighbours multiplied by 0, eps / B everywhere."""
    b = features.shape[0]
    h = score.embed(features)
    half = h.shape[1] // 2
    pairs = torch.cat([h[:, :half].unsqueeze(1).expand(b, b, -1), h[:, half:].unsqueeze(0).expand(b, b, -1)], -1)
    c = score.mlp(pairs).softmax(-1)[..., 0]
    unit = F.normalize(features, dim=1)
    similarity = unit @ unit.T
    similarity[range(b), range(b)] = -1.0
    mask = torch.zeros(b, b).scatter_(1, similarity.topk(k, dim=1).indices, 1.0)
    weights = (c * mask + 1e-8 / b) / ((c * mask).sum(-1, keepdim=True) + 1e-8)
    return weights @ probs


def test_neighbour_only_scoring_equals_the_official_all_pairs_aggregation() -> None:
    torch.manual_seed(0)
    u, v = torch.randn(32, 512), torch.randn(32, 64)
    probs = torch.randn(32, 7).softmax(1)
    for features in (u, v):
        score = lanet.PairScore(features.shape[1])
        nearest = neighbours(features, 8)
        with torch.no_grad():
            ours = aggregate(probs, nearest, score(features, nearest))
            theirs = full_pair_targets(score, features, probs, 8)
        assert (ours - theirs).abs().max().item() < 1e-6


def test_a_single_sample_batch_aggregates_its_own_prediction() -> None:
    probs = torch.tensor([[0.2, 0.8]])
    nearest = neighbours(torch.randn(1, 4), 0)
    assert nearest.shape == (1, 0)
    assert aggregate(probs, nearest, torch.zeros(1, 0)).tolist() == [pytest.approx([0.2, 0.8])]


# -- D.4 4-5: the contrastive loss and the pseudo labels ------------------------------------------
EL_Q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
EL_K = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
EL_BANK = torch.tensor([[-1.0, 0.0]])


@pytest.mark.parametrize(("labels", "tau", "expected"), [
    ((0, 0), 1.0, 0.343769),   # (ln(1 + e^-2) + ln(1 + e^-1.6) + ln 2 + ln(1 + e^-0.8)) / 4
    ((0, 1), 1.0, 0.249015),   # only the self-pairs are positive
    ((5, 5), 1.0, 0.0),        # the queue shares the label: masked, every l = 0
    ((0, 0), 0.1, 0.173371),
])
def test_contrastive_loss_of_the_worked_pairs(labels, tau: float, expected: float) -> None:
    loss = contrastive_loss(EL_Q, EL_K, EL_BANK, torch.tensor([5]), torch.tensor(labels), tau)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def materialised_contrastive(q, k, bank, bank_labels, labels, tau) -> torch.Tensor:
    """The official form: B^2 rows of (1 + Q) logits, masked bank entries pushed to -1e10 / tau, CE on the first."""
    n = q.shape[0]
    same = (labels[:, None] == labels[None]).float()
    masked = (labels[:, None] == bank_labels[None]).float()
    positive = (q @ k.T).reshape(n * n, 1)
    negative = (q @ bank.T + masked * -1e10).unsqueeze(1).repeat(1, n, 1).reshape(n * n, -1)
    ce = F.cross_entropy(torch.cat([positive, negative], -1) / tau, torch.zeros(n * n, dtype=torch.long),
                         reduction="none").reshape(n, n)
    return (ce * same / same.sum(-1, keepdim=True)).sum(-1).mean()


def test_the_factorised_contrastive_loss_equals_the_materialised_one() -> None:
    gen = torch.Generator().manual_seed(3)
    q = F.normalize(torch.randn(64, 16, generator=gen), dim=1)
    k = F.normalize(torch.randn(64, 16, generator=gen), dim=1)
    bank = F.normalize(torch.randn(512, 16, generator=gen), dim=1)
    targets = torch.rand(64, 7, generator=gen) ** 8
    targets = targets / targets.sum(1, keepdim=True)
    targets[:5] = 1 / 7  # five low-confidence samples: labels of their own
    labels = pseudo_labels(targets, torch.arange(64), 0.7)
    assert (labels < 0).sum() >= 5
    bank_labels = torch.randint(0, 7, (512,), generator=gen)
    ours = contrastive_loss(q, k, bank, bank_labels, labels, 0.1)
    assert ours.item() == pytest.approx(materialised_contrastive(q, k, bank, bank_labels, labels, 0.1).item(),
                                        rel=1e-5)


def test_a_query_without_negatives_has_zero_loss_and_finite_gradients() -> None:
    q = EL_Q.clone().requires_grad_()
    loss = contrastive_loss(q, EL_K, EL_BANK, torch.tensor([5]), torch.tensor([5, 5]), 1.0)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(q.grad).all()


def test_pseudo_label_of_an_unconfident_first_sample_is_its_own() -> None:
    targets = torch.tensor([[0.6, 0.4], [0.2, 0.8]])
    assert pseudo_labels(targets, torch.tensor([0, 3]), 0.7).tolist() == [-1, 1]
    assert pseudo_labels(targets, torch.tensor([0, 3]), 0.7, code=True).tolist() == [0, 1]  # the code: class 0


def test_the_queue_is_a_ring_buffer_for_any_batch_size() -> None:
    queue = KeyQueue(5, 2, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert torch.allclose(queue.keys_u.norm(dim=1), torch.ones(5)) and bool((queue.labels == EMPTY_SLOT).all())
    rows = torch.arange(14.0).view(7, 2)
    queue.push(rows[:3], -rows[:3], torch.tensor([0, 1, 2]))
    queue.push(rows[3:6], -rows[3:6], torch.tensor([3, 4, 5]))  # slots 3, 4, then 0
    assert queue.labels.tolist() == [5, 1, 2, 3, 4] and queue.pointer == 1
    assert torch.equal(queue.keys_u[0], rows[5]) and torch.equal(queue.keys_v[0], -rows[5])
    # 7 > Q = 5 from slot 1: as if written one by one (slots 1, 2, 3, 4, 0, 1, 2), the last five stay
    queue.push(rows, rows, torch.arange(10, 17))
    assert queue.labels.tolist() == [14, 15, 16, 12, 13] and queue.pointer == 3


# -- the network ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "heat"), [(16, 4), (32, 8), (48, 12)])
def test_the_top_down_path_works_at_any_size_with_heatmaps_at_stride_four(size: int, heat: int) -> None:
    method = built(image_size=size)
    with torch.no_grad():
        z, u, v, maps = method._forward["query"](torch.randn(2, 3, size, size))
    assert z.shape == (2, 3) and v.shape == (2, 64) and maps.shape == (2, 19, heat, heat)


def test_resizing_equals_the_code_x2_upsampling_where_sizes_halve() -> None:
    branch = built(image_size=32).aux.branch.eval()
    c1 = torch.randn(2, 32, 8, 8)
    up = torch.nn.Upsample(scale_factor=2, mode="bilinear")
    with torch.no_grad():
        c2 = branch.layer2(c1)
        c3 = branch.layer3(c2)
        c4 = branch.layer4(c3)
        top = branch.lateral[3](c4)
        for level, c in ((2, c3), (1, c2), (0, c1)):
            assert up(top).shape[-2:] == c.shape[-2:]
            top = up(top) + branch.lateral[level](c)
        assert torch.allclose(branch(c1), top, atol=1e-6)


def test_layout_parameter_groups_and_the_frozen_key_encoder() -> None:
    method = built()
    # Both paths start alike (the code loads one pretrained layer2-4 into both).
    for a, b in zip(method.aux.branch.layer3.state_dict().values(), method.net.layer3.state_dict().values()):
        assert torch.equal(a, b)
    assert method.aux.branch.layer3 is not method.net.layer3
    assert [lat.in_channels for lat in method.aux.branch.lateral] == [32, 48, 192, 96] or BACKBONE == "resnet18"
    assert all(lat.out_channels == 64 and lat.bias is None for lat in method.aux.branch.lateral)
    assert method.aux.heatmap.out_channels == 19 and method.aux.heatmap.bias is None
    groups = method.optimizer.param_groups
    head = {id(p) for p in method.net.fc.parameters()}
    # groups: the network's backbone, its fc, the training-only modules (all at the backbone lr)
    assert [{id(p) for p in g["params"]} == head for g in groups] == [False, True, False]
    settings = method.ctx.settings
    assert [g["lr"] for g in groups] == [settings.backbone_lr, settings.classifier_lr, settings.backbone_lr]
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert in_groups == {id(p) for m in (method.net, method.aux) for p in m.parameters()}
    keys = method.keys
    assert all(not p.requires_grad for p in keys.parameters()) and not in_groups & {id(p) for p in keys.parameters()}
    assert isinstance(keys.net.fc, torch.nn.Identity) and not hasattr(keys, "score_u")
    assert method.trained_networks(PHASE) == 1 and method.passes_per_step == 2.25
    assert method.targets.data.tolist() == F.one_hot(torch.tensor(LABELS), 3).float().tolist()


def test_new_modules_are_initialised_under_their_own_seed() -> None:
    torch.manual_seed(123)
    first = built(seed=0)
    torch.manual_seed(456)
    second = built(seed=0)
    third = built(seed=1)
    assert torch.equal(first.aux.score_u.embed.weight, second.aux.score_u.embed.weight)
    assert torch.equal(first.aux.branch.lateral[0].weight, second.aux.branch.lateral[0].weight)
    assert torch.equal(first.queue.keys_v, second.queue.keys_v)
    assert not torch.equal(first.aux.score_u.embed.weight, third.aux.score_u.embed.weight)


# -- a training step -----------------------------------------------------------------------------
def test_a_step_with_landmarks_returns_every_term_and_moves_the_state() -> None:
    method = built()
    data = batch()
    out = method.train_step(data, PHASE, 0)
    assert {"loss", "loss_ce", "loss_kl", "loss_lm", "loss_el", "logits", "sample_score", "confident_share"} == set(out)
    total = out["loss_ce"] + out["loss_kl"] + out["loss_lm"] + 0.1 * out["loss_el"]
    assert out["loss"].item() == pytest.approx(total.item(), rel=1e-6)
    # b took the targets: its mass on the label is the sample score; t = 0.9 b + 0.1 a from one-hot b
    assert torch.allclose(method.targets.data[:8].gather(1, data.y[:, None]).squeeze(1), out["sample_score"])
    assert bool((out["sample_score"] >= 0.9).all()) and out["confident_share"].item() == 1.0
    assert torch.equal(method.targets.data[8:], F.one_hot(torch.tensor(LABELS[8:]), 3).float())
    assert method.queue.pointer == 8 and method.queue.labels[:8].tolist() == data.y.tolist()
    # The next step's EMA: k <- 0.999 k + 0.001 q, with q the query as the first step left it.
    queries = {**{f"net.{n}": p.clone() for n, p in method.net.named_parameters()},
               **{n: p.clone() for n, p in method.aux.named_parameters()}}
    keys = {n: p.clone() for n, p in method.keys.named_parameters()}
    method.train_step(batch(seed=1), PHASE, 0)
    for name, value in method.keys.named_parameters():
        assert torch.allclose(value, 0.999 * keys[name] + 0.001 * queries[name], atol=1e-7), name
    assert not torch.equal(method.keys.branch.lateral[0].weight, keys["branch.lateral.0.weight"])


@pytest.mark.parametrize(("options", "reaches"), [({}, True), ({"detach_target": True}, False)])
def test_the_kl_trains_the_pair_scores_through_the_target_unless_detached(options: dict, reaches: bool) -> None:
    """The scores enter the loss only through t in the KL: by default t keeps its gradient, as in the code (LA2)."""
    method = built(**options)
    method.train_step(batch(), PHASE, 0)
    for score in (method.aux.score_u, method.aux.score_v):
        grad = score.embed.weight.grad
        assert (grad is not None and grad.abs().sum().item() > 0) is reaches


def test_expression_queries_meet_landmark_keys_and_the_reverse() -> None:
    method = built()
    gen = torch.Generator().manual_seed(5)
    u, v = torch.randn(8, 96 if BACKBONE != "resnet18" else 512, generator=gen), torch.randn(8, 64, generator=gen)
    k_u, k_v = (F.normalize(torch.randn(8, 64, generator=gen), dim=1) for _ in range(2))
    method.queue.push(F.normalize(torch.randn(32, 64, generator=gen), dim=1),
                      F.normalize(torch.randn(32, 64, generator=gen), dim=1), torch.randint(0, 3, (32,), generator=gen))
    labels = torch.tensor([0, 1, 2, 0, -5, 1, 2, 0])
    q_u = F.normalize(method.aux.project_u(u), dim=1)
    q_v = F.normalize(method.aux.project_v(v), dim=1)
    queue = method.queue
    expected = (contrastive_loss(q_u, k_v, queue.keys_v, queue.labels, labels, 0.1)
                + contrastive_loss(q_v, k_u, queue.keys_u, queue.labels, labels, 0.1))
    assert method.contrastive_loss(u, v, (k_u, k_v), labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_the_code_flip_needs_the_engine_flip_flags_and_uses_them() -> None:
    method = built(landmark_flip="code")  # built directly: validate would refuse it while the engine lacks the flags
    data = batch(flipped=torch.tensor([True] + [False] * 7))
    points = method.landmark_points(data)
    assert torch.equal(points[0, 7], data.landmarks[0, 10]) and torch.equal(points[1:], data.landmarks[1:])
    with pytest.raises(RuntimeError, match="landmarks"):
        method.landmark_points(SimpleNamespace(landmarks=None))


def test_the_state_of_a_step_survives_save_and_load(tmp_path) -> None:
    """Key encoder, queue (extra state), the LDE bank and the optimiser: the next step is the same."""
    first = built(seed=0)
    first.train_step(batch(seed=0), PHASE, 0)
    torch.save(first.state_dict(), tmp_path / "state.pt")
    second = built(seed=1)  # other weights, heads and queue
    second.load_state_dict(load_tensors(tmp_path / "state.pt"))
    assert second.queue.pointer == first.queue.pointer and torch.equal(second.queue.keys_u, first.queue.keys_u)
    assert torch.equal(second.targets.data, first.targets.data)
    a, b = first.train_step(batch(seed=1), PHASE, 0), second.train_step(batch(seed=1), PHASE, 0)
    for key in a:
        assert torch.equal(a[key], b[key]), key


# -- D.4 9-10: deployment and the ablation --------------------------------------------------------
def test_the_deployable_state_is_a_plain_timm_network_and_predict_never_runs_the_rest() -> None:
    method = built()
    state = method.deployable_state()
    assert list(state) == ["net"]
    plain = timm.create_model(BACKBONE, num_classes=3)
    plain.load_state_dict(state["net"])  # strict: exactly the timm keys
    for module in (*method.modules(), plain):
        module.eval()
    calls = []
    for part in (method.aux, method.keys):
        for module in part.modules():
            module.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        expected = method.predict(x)
        assert torch.allclose(plain(x), expected, atol=1e-6)
    assert not calls
    other = built(seed=1)
    load_deployable(other, state)
    other.net.eval()
    with torch.no_grad():
        assert torch.allclose(other.predict(x), expected, atol=1e-6)


def test_the_ablation_builds_no_landmark_path_key_encoder_or_queue() -> None:
    method = built(landmarks="none")
    assert not method.needs_landmarks and method.passes_per_step == 1.0
    assert method.aux.branch is None and method.aux.score_v is None and method.aux.project_u is None
    assert method.keys is None and method.queue is None and method.extra_state() == {}
    data = batch()
    data.landmarks = None
    out = method.train_step(data, PHASE, 0)
    assert set(out) == {"loss", "loss_ce", "loss_kl", "logits", "sample_score", "confident_share"}
    assert out["loss"].item() == pytest.approx((out["loss_ce"] + out["loss_kl"]).item(), rel=1e-6)
    assert "keys" not in method.state_dict() and LANET().needs_landmarks


# -- options ------------------------------------------------------------------------------------
def test_validate_refuses_a_dataset_without_landmarks_and_names_the_ablation() -> None:
    with pytest.raises(ValueError, match='--set methods.lanet.landmarks="none"'):
        LANET.validate(LANET.HParams(), {"dataset": "ferplus", "has_landmarks": False})
    with pytest.raises(ConfigError, match="has none") as caught:  # how a run reports it
        build_hparams(LANET, {}, epochs=2, noise_rate=0.2, batch_size=8)
    assert isinstance(caught.value, UsageError)
    LANET.validate(LANET.HParams(landmarks="none"), {"dataset": "ferplus", "has_landmarks": False})
    LANET.validate(LANET.HParams(), {"has_landmarks": True, "landmark_scheme": "aflw19"})
    with pytest.raises(ValueError, match="built for the aflw19"):
        LANET.validate(LANET.HParams(), {"has_landmarks": True, "landmark_scheme": "ibug68"})
    code = LANET.HParams(fidelity="code")
    LANET.validate(code, {"has_landmarks": True, "landmark_scheme": "aflw19"})  # batch.flipped undoes the swap
    LANET.validate(LANET.HParams(landmarks="none", fidelity="code"), {"has_landmarks": False})
    LANET.validate(LANET.HParams(fidelity="code", lambda_lm=0.0), {"has_landmarks": True})  # no heatmaps, no flip


def test_canonical_resets_what_has_no_effect() -> None:
    hp = LANET.HParams
    ablation = LANET.canonical(hp(landmarks="none", lambda_cl=0.5, temperature=0.2, landmark_flip="code",
                                  fidelity="code", confidence=0.5, neighbors=4))
    assert ablation == hp(landmarks="none", neighbors=4)
    assert LANET.canonical(hp(lambda_cl=0.0, queue_size=64)) == hp(lambda_cl=0.0)
    assert LANET.canonical(hp(fidelity="code", landmark_flip="code")) == hp(fidelity="code")
    assert LANET.canonical(hp(lambda_kl=0.0, detach_target=True)) == hp(lambda_kl=0.0)
    assert LANET.canonical(hp(detach_target=True, queue_size=64)) == hp(detach_target=True, queue_size=64)


# -- engine ------------------------------------------------------------------------------------
def test_conformance_of_the_ablation_without_landmarks(tmp_path) -> None:
    from nlbench.testing import check_method

    report = check_method(LANET, {"landmarks": "none"}, tmp_path=tmp_path, backbone=BACKBONE, epochs=2)
    first = report.history[0]["train"]
    assert {"loss_ce", "loss_kl", "confident_share", "score_clean"} <= set(first) and "loss_lm" not in first
    assert report.result["cost"]["pass_epochs"] == pytest.approx(2.0)


def test_conformance_with_the_synthetic_landmarks(tmp_path) -> None:
    from nlbench.testing import check_method

    report = check_method(LANET, {"queue_size": 50}, tmp_path=tmp_path, backbone=BACKBONE, epochs=2)
    first, second = (r["train"] for r in report.history)
    assert {"loss_ce", "loss_kl", "loss_lm", "loss_el", "confident_share"} <= set(first)
    assert second["loss_lm"] < first["loss_lm"]  # the heatmap head learns the rendered landmarks
    assert report.result["cost"]["pass_epochs"] == pytest.approx(2.25 * 2)


def test_the_cli_lists_lanet_with_its_options_and_search_space(cli) -> None:
    listed = cli("methods", "lanet")
    assert listed.code == 0, listed.err
    for option in ("landmarks", "landmark_flip", "detach_target", "neighbors", "lde_momentum", "queue_size",
                   "lambda_cl", "fidelity"):
        assert option in listed.out


@pytest.mark.slow
def test_a_resumed_run_equals_a_whole_one(cli, tmp_path) -> None:
    """The LDE bank, the key encoder and the queue are in the checkpoint: a resumed run equals a whole one."""
    args = ["run", "--method", "lanet", "--epochs", "2", "--noise", "0.3", *TINY,
            "--set", "methods.lanet.queue_size=40", "--set", f'train.backbone="{BACKBONE}"']
    a, b = whole_and_resumed(cli, tmp_path, args)
    assert a["metrics"] == b["metrics"] and a["final"] == b["final"]


def test_the_ablation_records_itself_as_a_named_variant_so_tables_never_call_it_lanet() -> None:
    ablation = built(landmarks="none").deployment()
    assert ablation["variant"] == ["landmarks"] and "without landmarks" in ablation["deploys"]
    assert "variant" not in built().deployment()
