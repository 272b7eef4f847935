"""The reference loop: what the official CCT/SCN code does, and its rows.

A torch DataLoader over the JPEG files (PIL decode per sample, torchvision CCT transforms, or
resize + normalise with ``--augmentation none``), fp32, PyTorch's default Adam; for CCT three timm
ResNet-18s with CE per network + KL over ordered pairs, for Standard one with CE. Nothing of
nlbench's training path is used here on purpose: this is the loop nlbench is compared with.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from data import SEED
from measure import peak_gib, release_memory, reset_peak, run_row, sync
from PIL import Image

from nlbench.dataset import IMAGENET_MEAN, IMAGENET_STD
from nlbench.train.backbone import create_backbone

if TYPE_CHECKING:  # pragma: no cover
    from bench import Bench


class ReferenceDataset(torch.utils.data.Dataset):
    """Official-repository style: one JPEG decoded with PIL per sample, transforms per sample."""

    def __init__(self, paths: list[str], labels: np.ndarray, transform: Any) -> None:
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[i]) as im:
            image = im.convert("RGB")
        return self.transform(image), int(self.labels[i])


def reference_transform(size: int, augmentation: str = "cct") -> Any:
    """The CCT training transform of the official code in torchvision (``none``: resize + normalise)."""
    from torchvision import transforms as T

    if augmentation == "none":
        return T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return T.Compose([
        T.RandomHorizontalFlip(),
        T.RandomApply([
            T.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25, hue=0.25),
            T.RandomAffine(degrees=0, translate=(0.1, 0.1), scale=(1.0, 1.25),
                           interpolation=T.InterpolationMode.BILINEAR),
        ], p=0.5),
        T.Resize((size, size)),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        T.RandomErasing(scale=(0.02, 0.25)),
    ])


def cycle(loader: Any) -> Iterator[Any]:
    while True:
        yield from loader


#: Networks of each reference loop.
REFERENCE_NETWORKS = {"cct": 3, "standard": 1}


def reference_models(device: torch.device, num_classes: int,
                     networks: int = 3) -> tuple[list[torch.nn.Module], torch.optim.Optimizer]:
    torch.manual_seed(SEED)
    nets = [create_backbone("resnet18", num_classes).to(device).train() for _ in range(networks)]
    opt = torch.optim.Adam([p for net in nets for p in net.parameters()], lr=1e-3)
    return nets, opt


def reference_step(nets: list[torch.nn.Module], opt: torch.optim.Optimizer,
                   device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """fp32 forward of every net, CE per net + KL over ordered pairs (CCT; CE alone for one net), backward, Adam."""
    lam = 0.5

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        logits = [net(x) for net in nets]
        sup = sum(F.cross_entropy(z, y) for z in logits) / len(logits)
        pairs = [(j, k) for j in range(len(logits)) for k in range(len(logits)) if j != k]
        loss = sup
        if pairs:
            cons = sum(F.kl_div(F.log_softmax(logits[j], 1), F.log_softmax(logits[k], 1), reduction="batchmean",
                                log_target=True) for j, k in pairs) / len(pairs)
            loss = (1 - lam) * sup + lam * cons
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def reference_flops(nets: list[torch.nn.Module], opt: torch.optim.Optimizer, device: torch.device,
                    a: argparse.Namespace, num_classes: int) -> float | None:
    """Counted training FLOPs per image of one reference step."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    step = reference_step(nets, opt, device)
    x = torch.randn(a.batch, 3, a.size, a.size, device=device)
    y = torch.randint(0, num_classes, (a.batch,), device=device)
    with FlopCounterMode(display=False) as counter:
        step(x, y)
    return counter.get_total_flops() / a.batch


def reference_rows(bench: Bench) -> None:
    """Per reference method: reference [standard], its loader-only and (not with --quick) compute-only rows."""
    for method in bench.args.reference_methods:
        reference_method_rows(bench, method)


def reference_method_rows(bench: Bench, method: str) -> None:
    """The rows of one reference loop; CCT's keep their plain names ("reference", ...)."""
    from torch.utils.data import DataLoader

    a, device, data = bench.args, bench.device, bench.data
    classes = data.dataset.num_classes
    networks = REFERENCE_NETWORKS[method]
    suffix = "" if method == "cct" else f" {method}"
    # The engine's noisy labels of this data (the same draw every nlbench row trains on).
    dataset = ReferenceDataset(list(data.train.table.refs), bench.noisy_labels(),
                               reference_transform(a.size, a.augmentation))
    loader = DataLoader(dataset, batch_size=a.batch, shuffle=True, num_workers=a.workers,
                        pin_memory=device.type == "cuda", drop_last=True,
                        persistent_workers=a.workers > 0)
    batches = cycle(loader)
    transforms = "torchvision CCT transforms" if a.augmentation == "cct" else "resize + normalise"
    model = "3x ResNet-18 + CCT loss" if networks == 3 else "1 ResNet-18 + CE"
    notes = (f"{a.workers} DataLoader workers, PIL decode + {transforms}, fp32, "
             f"TF32 convs={torch.backends.cudnn.allow_tf32}, {model}, foreach Adam")

    def full() -> dict[str, Any]:
        nets, opt = reference_models(device, classes, networks)
        reset_peak(device)
        step = reference_step(nets, opt, device)
        run = lambda k: [step(*next(batches)) for _ in range(k)]  # noqa: E731
        run(a.warmup)
        sync(device)
        t0 = time.perf_counter()
        run(a.steps)
        sync(device)
        seconds = time.perf_counter() - t0
        img_s = a.steps * a.batch / seconds
        bench.ref_img_s[method] = img_s
        row = {"img_s": img_s, "step_ms": 1e3 * seconds / a.steps, "peak_gib": peak_gib(device),
               "x_ref": 1.0, "notes": notes}
        if not a.quick:  # one more step, only worth it where the FLOP rate means something
            bench.flops[f"reference{suffix}"] = reference_flops(nets, opt, device, a, classes)
        return bench.derived(row, f"reference{suffix}")

    def loader_only() -> dict[str, Any]:
        # Drain what the workers prefetched while the row above ran (prefetch_factor 2 per worker).
        for _ in range(a.warmup + 2 * max(1, a.workers)):
            next(batches)
        t0 = time.perf_counter()
        for _ in range(a.steps):
            next(batches)[0].to(device, non_blocking=True)
        sync(device)
        seconds = time.perf_counter() - t0
        return {"img_s": a.steps * a.batch / seconds, "step_ms": 1e3 * seconds / a.steps,
                "notes": f"the reference's data pipeline alone ({a.workers} workers): its CPU ceiling"}

    def compute_only() -> dict[str, Any]:
        nets, opt = reference_models(device, classes, networks)
        reset_peak(device)
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(a.batch, 3, a.size, a.size, device=device, generator=gen)
        y = torch.randint(0, classes, (a.batch,), device=device, generator=gen)
        step = reference_step(nets, opt, device)
        for _ in range(a.warmup):
            step(x, y)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(a.steps):
            step(x, y)
        sync(device)
        seconds = time.perf_counter() - t0
        row = {"img_s": a.steps * a.batch / seconds, "step_ms": 1e3 * seconds / a.steps,
               "peak_gib": peak_gib(device), "notes": "the reference's fp32 step on one resident batch: its "
               "device ceiling"}
        return bench.derived(row, f"reference{suffix}")

    need = 30 if device.type == "cuda" else 0
    try:
        run_row(bench.report, f"reference{suffix}", full, need)
        run_row(bench.report, f"reference{suffix} loader-only", loader_only, need / 2)
        if not a.quick:  # simple code, and the slowest row of a CPU smoke run
            run_row(bench.report, f"reference{suffix} compute-only", compute_only, need / 2)
    finally:
        batches.close()  # ends the loader iterator; its persistent workers exit with the loader
        release_memory()
