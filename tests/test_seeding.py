"""One seeding scheme: every derived seed of a run comes from nlbench.seeding.derive_seed."""

from __future__ import annotations

import torch

from nlbench.data.noise import noise_seed
from nlbench.seeding import derive_seed
from nlbench.train.backbone import BackboneFactory


def test_derive_seed_is_a_stable_63_bit_hash_of_seed_and_purpose():
    assert derive_seed(1, "network", 1) == derive_seed(1, "network", 1)
    values = {derive_seed(s, p, k) for s in (0, 1, 2) for p in ("network", "noise") for k in (1, 2)}
    assert len(values) == 12 and all(0 <= v < 2**63 for v in values)
    assert derive_seed(1, "network", 10) != derive_seed(10, "network", 1)  # seed*1000+k collided like this


def test_noise_and_networks_take_their_seeds_from_derive_seed():
    assert noise_seed("synthfer", 0.2, "flip", 3) == derive_seed(3, "noise", "synthfer", "0.200000", "flip")
    factory = BackboneFactory("resnet18", 7, seed=3)
    second = (factory(), factory())[1]
    torch.manual_seed(derive_seed(3, "network", 2))
    from nlbench.train.backbone import create_backbone

    expected = create_backbone("resnet18", 7)
    assert torch.equal(second.conv1.weight, expected.conv1.weight)
