"""EAC: class activation maps, the flip-consistency loss, its gradient paths and the two views (design Part C.4)."""

from __future__ import annotations

import math
import sys

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from nlbench import Batch, Phase
from nlbench.data.augment import Augmenter
from nlbench.errors import ConfigError
from nlbench.plugins import get_registry
from nlbench.spec import build_hparams
from nlbench.testing import stub_context

EAC = get_registry().method("eac")
eac_module = sys.modules[EAC.__module__]
cams = eac_module.class_activation_maps
consistency_loss = eac_module.consistency_loss
PHASE = Phase("train", 4)


class MapBackbone(nn.Module):
    """A stand-in for a timm backbone whose feature map is its input; logits = fc(spatial mean)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc


def eac_with(weight: list[list[float]], augmentation: str = "cct", **hp) -> EAC:
    """An EAC on a MapBackbone whose classifier weight is ``weight`` (bias 0)."""
    w = torch.tensor(weight)
    ctx = stub_context(num_classes=w.shape[0], networks=lambda num_classes=None: MapBackbone(w.shape[1], w.shape[0]))
    ctx.augmentation = augmentation
    method = EAC(EAC.HParams(**hp))
    method.build(ctx)
    with torch.no_grad():
        method.net.fc.weight.copy_(w)
        method.net.fc.bias.zero_()
    with ctx.at("train", 0):
        method.on_epoch_start(PHASE, 0)
    return method


def test_cam_values_and_their_spatial_mean_is_the_logit_without_bias() -> None:
    # C = 2, h = 1, w = 2: position 1 = (1, 2), position 2 = (3, 0); W = [[1, 1], [2, -1]].
    features = torch.tensor([[1.0, 3.0], [2.0, 0.0]]).view(1, 2, 1, 2)
    weight = torch.tensor([[1.0, 1.0], [2.0, -1.0]])
    cam = cams(features, weight)
    assert cam[0, 0, 0].tolist() == [3.0, 3.0]
    assert cam[0, 1, 0].tolist() == [0.0, 6.0]
    # The pooled feature is (2, 1) and W (2, 1) = (3, 3), the maps' spatial means.
    assert cam.mean(dim=(2, 3))[0].tolist() == [3.0, 3.0]


def test_the_spatial_mean_of_a_cam_of_a_real_backbone_equals_its_logit_minus_the_bias() -> None:
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=5).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        features = net.forward_features(x)
        logits = net.forward_head(features)
        cam = cams(features, net.get_classifier().weight)
    assert features.shape[-2:] == (2, 2)
    assert torch.allclose(cam.mean(dim=(2, 3)), logits - net.get_classifier().bias, atol=1e-5)


def test_consistency_loss_on_a_one_by_three_map() -> None:
    maps = torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 1, 3)
    # flip_w of [1, 2, 3] is [3, 2, 1]: squared errors [4, 0, 4].
    assert consistency_loss(maps, maps).item() == pytest.approx(8 / 3, abs=1e-6)
    assert 5 * consistency_loss(maps, maps).item() == pytest.approx(13.333333, abs=1e-5)
    assert consistency_loss(maps, torch.flip(maps, dims=[3])).item() == 0.0


def test_consistency_through_the_cam() -> None:
    weight = torch.tensor([[1.0], [2.0]])  # K = 2, C = 1
    v = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)
    assert cams(v, weight)[0, :, 0].tolist() == [[1.0, 3.0], [2.0, 6.0]]
    mirror = torch.tensor([3.0, 1.0]).view(1, 1, 1, 2)
    assert consistency_loss(cams(v, weight), cams(mirror, weight)).item() == 0.0
    flat = torch.tensor([2.0, 2.0]).view(1, 1, 1, 2)
    # Squared errors [1, 1, 4, 4].
    assert consistency_loss(cams(v, weight), cams(flat, weight)).item() == pytest.approx(2.5)


def test_total_loss_is_ce_plus_lambda_times_consistency() -> None:
    # Two samples whose both class maps are [1, 2, 3] in both views: L_cons = 8/3.
    method = eac_with([[1.0], [1.0]])
    features = torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 1, 3).repeat(2, 1, 1, 1)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    ce = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2
    terms = method.losses(features, features, logits, labels)
    assert ce == pytest.approx(0.220095, abs=1e-6)
    assert terms["loss_ce"].item() == pytest.approx(ce, abs=1e-6)
    assert terms["loss_cons"].item() == pytest.approx(8 / 3, abs=1e-6)
    assert terms["loss"].item() == pytest.approx(13.553428, abs=1e-5)
    # lambda = 0: a training step's loss is the CE of the first view's logits exactly.
    plain = eac_with([[1.0], [1.0]], lam=0.0, erasing="pipeline")
    v = torch.tensor([[1.0, 2.0, 3.0], [3.0, 0.0, -1.0]]).view(2, 1, 1, 3)
    expected = F.cross_entropy(plain.net(v), labels).item()
    assert plain.train_step(Batch(v, labels, torch.arange(2)), PHASE, 0)["loss"].item() == pytest.approx(expected, abs=1e-7)


def test_a_flip_equivariant_extractor_has_zero_consistency_loss_only_with_the_flip() -> None:
    method = eac_with([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]], augmentation="cct")
    torch.manual_seed(1)
    v = torch.randn(4, 3, 5, 6)
    batch = Batch(v, torch.zeros(4, dtype=torch.long), torch.arange(4))
    first, second = method.views(batch)
    assert torch.equal(first, v) and torch.equal(second, torch.flip(v, dims=[3]))
    terms = method.losses(*method.features(first, second), method.net.forward_head(first), batch.y)
    assert terms["loss_cons"].item() == pytest.approx(0.0, abs=1e-10)
    unflipped = method.losses(v, v, method.net.forward_head(v), batch.y)
    assert unflipped["loss_cons"].item() > 0.01


def code_flip_grid(h: int, w: int) -> torch.Tensor:
    """The official code's flip grid: coordinates normalised by (w - 1) and (h - 1), x negated."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    grid = torch.stack([-(2 * xs / (w - 1) - 1), 2 * ys / (h - 1) - 1], dim=-1)
    return grid.unsqueeze(0)


@pytest.mark.parametrize("side", [7, 4, 2])
def test_the_flip_back_equals_the_codes_grid_sample(side: int) -> None:
    torch.manual_seed(side)
    maps, other = torch.randn(3, 7, side, side), torch.randn(3, 7, side, side)
    grid = code_flip_grid(side, side).expand(3, -1, -1, -1)
    sampled = F.grid_sample(other, grid, mode="bilinear", padding_mode="border", align_corners=True)
    assert (sampled - torch.flip(other, dims=[3])).abs().max().item() < 2e-6
    # The method's loss equals the code's ACLoss: mse_loss(maps, grid-sampled flip of the other maps).
    assert consistency_loss(maps, other).item() == pytest.approx(F.mse_loss(maps, sampled).item(), rel=1e-5)


def test_gradients_reach_the_features_but_not_the_classifier_weight() -> None:
    method = eac_with([[1.0], [2.0]])
    features = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2).requires_grad_(True)
    fixed = torch.tensor([2.0, 2.0]).view(1, 1, 1, 2)
    logits = method.net.forward_head(features)
    terms = method.losses(features, fixed, logits, torch.tensor([0]))
    terms["loss_cons"].backward(retain_graph=True)
    # L_cons = (1/4) sum_k W_k^2 sum_pos (F_pos - 2)^2, so dL/dF = (1/2)(1 + 4)(F - 2).
    assert features.grad.flatten().tolist() == pytest.approx([-2.5, 2.5])
    assert method.net.fc.weight.grad is None  # W is detached in the CAM
    terms["loss_ce"].backward()
    assert method.net.fc.weight.grad is not None and method.net.fc.weight.grad.abs().sum() > 0
    # The ablation option lets the consistency loss reach W.
    grad_method = eac_with([[1.0], [2.0]], cam_classifier_grad=True)
    grad_method.losses(features.detach(), fixed, logits.detach(), torch.tensor([0]))["loss_cons"].backward()
    assert grad_method.net.fc.weight.grad is not None


def erased(x: torch.Tensor) -> torch.Tensor:
    """Per sample: whether it holds a pixel set to 0 in every channel (an erased rectangle)."""
    return (x == 0).all(dim=1).flatten(1).any(dim=1)


def test_default_views_mirror_the_erased_rectangle() -> None:
    method = eac_with([[1.0, 0.0, 0.0]])
    gen = torch.Generator().manual_seed(3)
    raw = torch.randint(1, 256, (200, 3, 16, 16), dtype=torch.uint8, generator=gen)
    # scn: erasing without the translation zero-fill of cct's affine step, which looks like erasing.
    augmenter = Augmenter("scn", 16, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), torch.device("cpu"))
    v = augmenter.train(raw, gen)
    first, second = method.views(Batch(v, torch.zeros(200, dtype=torch.long), torch.arange(200)))
    assert torch.equal(second, torch.flip(first, dims=[3]))
    assert torch.equal(erased(first), erased(second)) and 0.3 < erased(first).float().mean() < 0.7


def test_code_fidelity_erases_the_second_view_independently_from_the_raw_flip() -> None:
    ctx = stub_context(num_classes=1, networks=lambda num_classes=None: MapBackbone(3, 1))
    ctx.augmentation = "eac"
    ctx.augmenters = lambda name: Augmenter(name, 16, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), torch.device("cpu"))
    method = EAC(EAC.HParams(fidelity="code"))
    assert method.needs_raw and not EAC().needs_raw
    method.build(ctx)
    with ctx.at("train", 0):
        method.on_epoch_start(PHASE, 0)
    gen = torch.Generator().manual_seed(4)
    raw = torch.randint(1, 256, (1000, 3, 16, 16), dtype=torch.uint8, generator=gen)
    v = ctx.augment(raw, "eac", torch.Generator().manual_seed(5))
    first, second = method.views(Batch(v, torch.zeros(1000, dtype=torch.long), torch.arange(1000), raw))
    one_only = (erased(first) ^ erased(second)).float().mean().item()
    assert 0.42 < one_only < 0.58
    # Unerased pixels of the second view are the flipped raw image, resized and normalised, without noise.
    keep = ~erased(second)
    assert torch.allclose(second[keep], torch.flip(raw[keep], dims=[3]).float() / 255, atol=1e-6)


@pytest.mark.parametrize(("pipeline", "expected"), [("none", True), ("cct", False), ("affectnet", True)])
def test_auto_erasing_adds_erasing_only_where_the_pipeline_has_none(pipeline: str, expected: bool) -> None:
    method = eac_with([[1.0, 0.0, 0.0]], augmentation=pipeline)
    assert method.erase_first_view is expected
    if expected:
        v = torch.rand(2000, 3, 16, 16) + 0.1  # no zero anywhere
        first, _ = method.views(Batch(v, torch.zeros(2000, dtype=torch.long), torch.arange(2000)))
        assert abs(erased(first).float().mean().item() - 0.5) < 0.05
    assert eac_with([[1.0, 0.0, 0.0]], augmentation="cct", erasing="always").erase_first_view


def test_code_fidelity_without_the_eac_pipeline_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="train.augmentation=eac"):
        build_hparams(EAC, {"fidelity": "code"}, epochs=2, noise_rate=0.2, batch_size=8,
                      run_settings={"augmentation": "cct"})
    build_hparams(EAC, {"fidelity": "code"}, epochs=2, noise_rate=0.2, batch_size=8,
                  run_settings={"augmentation": "eac"})


def test_train_step_outputs_and_joint_forward() -> None:
    torch.manual_seed(2)
    v = torch.randn(6, 3, 4, 4)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    for joint in (False, True):
        method = eac_with([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]], joint_forward=joint)
        expected = method.losses(v, torch.flip(v, dims=[3]), method.net(v).float(), y)
        out = method.train_step(Batch(v, y, torch.arange(6)), PHASE, 0)
        assert out["loss"].item() == pytest.approx(expected["loss"].item(), abs=1e-6)
        assert out["sample_score"].shape == (6,) and out["logits"].shape == (6, 2)
        assert not out["loss"].requires_grad
    assert EAC.passes_per_step == 2.0


def test_under_bf16_autocast_and_channels_last_the_maps_stay_float32_and_the_flip_keeps_the_layout() -> None:
    """The CUDA path's logic on the CPU: bf16 autocast around train_step, channels_last batches."""
    torch.manual_seed(0)
    ctx = stub_context(num_classes=3, networks=lambda num_classes=None: timm.create_model(
        "resnet18", pretrained=False, num_classes=3).to(memory_format=torch.channels_last))
    method = EAC()
    method.build(ctx)
    with ctx.at("train", 0):
        method.on_epoch_start(PHASE, 0)
    x = torch.randn(4, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    batch = Batch(x, torch.tensor([0, 1, 2, 0]), torch.arange(4))
    _, flipped = method.views(batch)
    assert flipped.is_contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        features = method.net.forward_features(x)
        assert features.dtype == torch.bfloat16
        maps = cams(features, method.net.get_classifier().weight)
        out = method.train_step(batch, PHASE, 0)
    assert maps.dtype == torch.float32
    assert out["loss_cons"].dtype == torch.float32 and torch.isfinite(out["loss"])


def test_conformance_of_the_code_form(tmp_path) -> None:
    from nlbench.testing import check_method

    report = check_method(EAC, {"fidelity": "code"}, tmp_path=tmp_path, epochs=1, train={"augmentation": "eac"})
    assert report.result["hparams"]["fidelity"] == "code" and report.result["train"]["augmentation"] == "eac"
    assert report.result["cost"]["pass_epochs"] == 2.0
    assert report.result["diagnostics"]["score_noisy"] is not None
