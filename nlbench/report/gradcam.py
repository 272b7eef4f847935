"""Grad-CAM (Selvaraju et al., ICCV 2017) of a finished run's deployable model, for ``nlbench plot gradcam``.

The run is rebuilt from its stored spec (:func:`nlbench.train.assemble.assemble`: same dataset, same
test images, same method), its deployable weights are loaded from ``model.pt`` (tensors only,
through the safe loader), and the maps are taken at the last convolutional block (``layer4``)
of every network the deployable model's prediction goes through: the gradient of the predicted
class's score, averaged over space, weighs that block's channels; the weighted sum, through a
ReLU, is upsampled to the image and scaled to [0, 1]. A deployable ensemble averages its
networks' maps. Written here in a few dozen lines rather than taken from a Grad-CAM library,
because the model is whatever a method's ``predict`` combines, not one module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nlbench.errors import DataError, UsageError

LAYER = "layer4"


def rebuild(run_dir: Path, registry: Any) -> Any:
    """The assembly of a finished run with its deployable weights loaded (CPU)."""
    from nlbench.fileio import read_json_or_none
    from nlbench.spec.runspec import RunSpec
    from nlbench.store import MODEL, SPEC
    from nlbench.train.assemble import assemble
    from nlbench.train.transfer import load_weights

    spec_json = read_json_or_none(run_dir / SPEC)
    if not isinstance(spec_json, dict):
        raise DataError(f"{run_dir / SPEC} is missing or damaged.")
    if not (run_dir / MODEL).is_file():
        raise UsageError(f"{run_dir} has no {MODEL} (the deployable weights): Grad-CAM needs a finished run's model.")
    spec = RunSpec.from_json(spec_json)
    run = assemble(spec, registry, device=torch.device("cpu"))
    load_weights(run_dir, run.method, spec.method)
    for module in run.method.modules():
        module.eval()
    return run


def block_size(run: Any) -> tuple[int, int]:
    """Spatial size of the last block's output at the run's image size (1 x 1 below 64 px for ResNet-18)."""
    side = int(run.spec.train.image_size)
    return (max(1, -(-side // 32)),) * 2


def grad_cam(run: Any, indices: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Maps (N, H, W) in [0, 1], the images (N, H, W, 3) uint8, predicted and true classes, for test images ``indices``."""
    images = run.test_images[indices]
    x = run.augmenter.test(images.to(run.device)).float().requires_grad_(False)
    activations: list[torch.Tensor] = []
    hooks = []
    for module in run.method.modules():
        # The last block named layer4, wherever the method keeps its backbone (SCN wraps it).
        block = next((m for name, m in reversed(list(module.named_modules()))
                      if name == LAYER or name.endswith("." + LAYER)), None)
        if block is not None:
            hooks.append(block.register_forward_hook(lambda _m, _i, output: activations.append(output)))
    if not hooks:
        raise UsageError(f"Grad-CAM looks for a block named {LAYER!r} (ResNet); this run's networks have none.")
    try:
        with torch.enable_grad():
            logits = run.method.predict(x).float()
            predicted = logits.argmax(dim=1)
            score = logits.gather(1, predicted[:, None]).sum()
            used = [a for a in activations if a.requires_grad]
            if not used:
                raise UsageError("the deployable model's prediction does not go through a layer4 with gradients.")
            grads = torch.autograd.grad(score, used)
    finally:
        for hook in hooks:
            hook.remove()
    maps = torch.zeros(x.shape[0], x.shape[2], x.shape[3])
    for activation, grad in zip(used, grads):
        weight = grad.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weight * activation).sum(dim=1, keepdim=True))
        maps += F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0].detach()
    maps /= len(used)
    flat = maps.flatten(1)
    low, high = flat.min(dim=1).values[:, None, None], flat.max(dim=1).values[:, None, None]
    # A block of 1 x 1 (small inputs) or a flat map has no spatial information: show none, rather
    # than stretching interpolation round-off to [0, 1].
    flat_map = (high - low) <= 1e-4 * high.abs().clamp(min=1e-12)
    if min(used[0].shape[2:]) < 2:
        flat_map = torch.ones_like(flat_map)
    maps = torch.where(flat_map, torch.zeros_like(maps), (maps - low) / torch.where(flat_map, torch.ones_like(high),
                                                                                   high - low))
    resized = F.interpolate(images.float(), size=x.shape[2:], mode="bilinear", align_corners=False)
    pictures = resized.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return maps.numpy(), pictures, predicted.numpy(), run.test_labels[indices].cpu().numpy()


def sample_indices(labels: np.ndarray, count: int, seed: int = 0) -> list[int]:
    """``count`` test images, spread over the classes (round robin), drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    chosen: list[int] = []
    while len(chosen) < count and any(pools):
        for pool in pools:
            if pool and len(chosen) < count:
                chosen.append(int(pool.pop()))
    return chosen
