"""Training throughput of nlbench's real training path, side by side with a reference-style loop.

Every row is measured in one process on one device, so ratios compare like with like:

* ``probe matmul``: the dense matrix rate of the device (bf16 8192^3 on CUDA, fp32 on the CPU),
  the ceiling the training FLOP rate is compared with;
* ``reference ...``: the loop the official repositories write (PIL decode of JPEG files per sample
  in a torch DataLoader with worker processes, torchvision transforms of the CCT pipeline, fp32,
  three ResNet-18s and the CCT loss), plus its data-loader-only and compute-only ceilings;
* ``nlbench <method>/<phase>``: nlbench's training path, assembled from a run spec by
  ``nlbench.train.assemble.assemble`` (context, method, noisy labels, augmenter, image cache) and
  trained by the engine's own ``EpochRunner`` (cache gather, ``Augmenter.train``,
  ``method.train_step`` under ``ctx.autocast()``, ``StepMeter``) with the engine's defaults, for
  every registered method;
* ``lever ...``: one change at a time on the lever method (default cct): Adam implementation,
  host synchronisations, cuDNN autotuning, host vs device image cache, torch.compile, CUDA graphs;
* ``eval ...``: one evaluation epoch (``nlbench.train.evaluate.predict_split``) per batch size and placement;
* ``affectnet ...`` (``--scale affectnet``): AffectNet-8 size (287,651 images) as a synthetic uint8
  memmap at the given storage sizes, with the cache on the GPU and on the host.

Examples (from the repository root, with nlbench installed: ``pip install -e .``)::

    python benchmarks/throughput                          # the GPU measurement, full sizes
    python benchmarks/throughput --scale affectnet        # ... plus the AffectNet-scale rows
    python benchmarks/throughput --device cpu --quick     # seconds-long CPU smoke run (CI)
    python benchmarks/throughput --show out.json          # print the table of a saved run

Python runs this folder's ``__main__.py`` with the folder (not the repository root) first on
``sys.path``, so the modules here import each other by plain name and nlbench comes from its
installation. The modules:

* ``cli``: options and ``--help``;  ``report``: rows, the table, the JSON, ``--show``;
* ``suite``: the device, the data, the rows in order, the environment and the summary;
* ``data``: the JPEG data set, the AffectNet-scale memmap, scratch space;
* ``bench``: specs and the engine's assembly, one training row, method, eval and AffectNet rows;
* ``lever_rows``: the lever rows, ``levers``: what they switch;  ``reference``: the reference loop and its rows;
* ``measure``: the row runner, clocks, memory, the probe, syncs, FLOPs, compile graphs and logs.

See benchmarks/README.md for what each row and column means.
"""

from __future__ import annotations

import sys

from cli import parse_args
from report import show


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.show:
        return show(args.show)  # --help and --show need neither torch nor nlbench
    from suite import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
