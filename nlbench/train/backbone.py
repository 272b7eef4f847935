"""The shared backbone: timm ResNet-18, randomly initialised or loaded from a user-supplied file.

Accepted checkpoint files (never downloaded: the user gives the path with ``--pretrained``):

- the MS-Celeb-1M ResNet-18 of SCN/CCT (``res18_naive.pth_MSceleb.tar``): a dict whose
  ``state_dict`` holds ``module.``-prefixed torchvision-style keys plus the face-recognition heads
  ``module.feature.*`` (512->256) and ``module.fc.*`` (256->87020 identities), which are dropped;
- any torchvision- or timm-keyed ResNet-18 state dict (bare or under ``state_dict``/``model``).

Every backbone weight must load: the only keys allowed to stay missing are the new classifier
(``fc.*``) and BatchNorm ``num_batches_tracked`` counters. Anything else is an error naming the keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from nlbench.errors import UsageError
from nlbench.identity import file_sha256  # noqa: F401  (re-exported)
from nlbench.seeding import derive_seed

CLASSIFIER_PREFIX = "fc."
DROPPED_HEADS = ("feature.", "fc.")


def create_backbone(name: str, num_classes: int) -> nn.Module:
    """A randomly initialised timm model with a ``num_classes``-way classifier named ``fc``."""
    import timm  # here, not at the top: `nlbench --help`, `table` and `plugins` must not pay for it

    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    except RuntimeError as err:
        raise UsageError(f"unknown backbone {name!r} ({err}); nlbench's methods use resnet18.") from None


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return its backbone tensors with plain (prefix-free) keys."""
    if not path.is_file():
        raise UsageError(f"pretrained file {str(path)!r} does not exist; give the path of a downloaded checkpoint.")
    from nlbench.safe_load import UnreadableFile, load_tensors

    try:
        raw: Any = load_tensors(path)
    except UnreadableFile as err:
        raise UsageError(f"cannot read pretrained file {path}: {err}. Give a checkpoint of tensors (a state "
                         f"dict), e.g. the MS-Celeb-1M ResNet-18 of SCN/CCT or a torchvision/timm file.") from None
    if isinstance(raw, dict) and isinstance(raw.get("weights"), dict) and "run_id" in raw:
        raw = _network_of_run(path, raw)  # an nlbench run's model.pt: its one deployed network
    if isinstance(raw, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in raw and isinstance(raw[key], dict):
                raw = raw[key]
                break
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise UsageError(f"pretrained file {path} holds no state dict of tensors.")
    tensors: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        plain = key[len("module.") :] if key.startswith("module.") else key
        if plain.startswith(DROPPED_HEADS):
            continue  # face-identity heads of MS-Celeb, or another task's classifier
        tensors[plain] = value
    return tensors


def _network_of_run(path: Path, stored: dict[str, Any]) -> Any:
    """The state dict of the one network a finished run's ``model.pt`` deploys (``{"weights": {name:
    state}}``); a run that deploys several networks is refused, naming them."""
    networks = {name: state for name, state in stored["weights"].items() if isinstance(state, dict)}
    if len(networks) != 1:
        names = ", ".join(sorted(stored["weights"])) or "none"
        raise UsageError(f"pretrained file {path} is the model of run {stored.get('run_id')} ({stored.get('method')}), "
                         f"which deploys {len(stored['weights'])} networks ({names}), not one; give a checkpoint of "
                         f"one ResNet-18.")
    return next(iter(networks.values()))


def load_pretrained(model: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Copy backbone tensors into ``model``; fail naming any backbone weight that did not load."""
    own = model.state_dict()
    mismatched = [k for k, v in tensors.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        detail = ", ".join(f"{k} {tuple(tensors[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched[:5])
        raise UsageError(f"pretrained file {source} does not fit resnet18: shape mismatch for {detail}.")
    result = model.load_state_dict(tensors, strict=False)
    missing = [
        k for k in result.missing_keys if not k.startswith(CLASSIFIER_PREFIX) and not k.endswith("num_batches_tracked")
    ]
    if missing:
        shown = ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else "")
        raise UsageError(
            f"pretrained file {source} left {len(missing)} backbone weights unloaded ({shown}); "
            "it is not a ResNet-18 checkpoint in the SCN/CCT, torchvision or timm format."
        )
    if not any(k in own for k in tensors):
        raise UsageError(f"pretrained file {source}: none of its keys match resnet18.")


class BackboneFactory:
    """Builds the networks of a run: each call gives a new, deterministically seeded network."""

    def __init__(self, name: str, num_classes: int, seed: int, pretrained: Path | None = None) -> None:
        self.name = name
        self.num_classes = num_classes
        self.seed = seed
        self.pretrained = pretrained
        self._tensors = read_checkpoint(pretrained) if pretrained is not None else None
        self.calls = 0

    def __call__(self, num_classes: int | None = None) -> nn.Module:
        """A new network; the k-th call of a run always gets the same initialisation."""
        self.calls += 1
        # Seeding per call gives each network its own init, reproducible and independent of
        # anything else the run did with the global RNG before.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "network", self.calls))
            model = create_backbone(self.name, num_classes or self.num_classes)
        if self._tensors is not None:
            load_pretrained(model, self._tensors, self.pretrained)  # type: ignore[arg-type]
        return model
