"""The one seeding scheme of nlbench: every random stream of a run derives from its seed here.

``derive_seed(seed, *purpose)`` hashes the run seed with a purpose (SHA-256, 63 bits), so streams
are independent of each other and of anything else a run did before. The purposes in use:

=====================================  ========================================================
``("noise", dataset, rate, mode)``     the injected noisy labels (:mod:`nlbench.data.noise`): never
                                       the method, so every method sees the same labels
``("network", k)``                     initialisation of the k-th network a run builds
                                       (:class:`nlbench.train.backbone.BackboneFactory`): the same
                                       seed gives every method the same first network
``("global",)``                        torch's global generator at the start of a run
``("global-rng", phase, epoch)``       torch's global generators at the start of every epoch
                                       (dropout): a resumed run draws what a whole one draws
``(phase, epoch, "sampler")``          the sample order of one epoch
``(phase, epoch, purpose)``            the device generators of :meth:`Context.generator`
                                       (augmentation: ``"augment"``; a method's own streams)
=====================================  ========================================================

Streams keyed by (phase, epoch) are what makes a resumed run follow the same path as an
uninterrupted one: nothing depends on how many draws earlier epochs made.
"""

from __future__ import annotations

import hashlib
from typing import Any


def derive_seed(seed: int, *purpose: Any) -> int:
    """A 63-bit seed derived from the run seed and a purpose (see the module docstring)."""
    key = "|".join(str(p) for p in (seed, *purpose)).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1
