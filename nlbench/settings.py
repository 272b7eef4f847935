"""The shared training pipeline every method runs on, and what ``nlbench run`` does by default.

Both are typed option sets (:mod:`nlbench.options`): their types, choices and ranges are checked
when they are built, and ``nlbench methods``/``datasets`` list them with their ``#:`` docs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from nlbench.errors import ConfigError
from nlbench.options import Range, Tune, added, runtime

#: Training augmentation pipelines (:mod:`nlbench.data.augment`); "" = the dataset's own.
#: The batched augmentation pipelines (:mod:`nlbench.data.augment` implements each).
PIPELINES = ("cct", "affectnet", "scn", "eac", "erase", "none")
#: What ``train.augmentation`` accepts: a pipeline, or "" for the dataset's own.
AUGMENTATIONS = ("", *PIPELINES)
#: Label-noise modes (:mod:`nlbench.data.noise`).
NOISE_MODES = ("flip", "exact", "uniform", "pair", "fer-confusion", "instance")
POSITIVE = Range(0, None, low_open=True)
# Search spaces of the shared knobs (``nlbench tune``, docs/tuning.md), declared once for every
# method. The lrs span a decade each side of the paper's Adam lrs (1e-3, 1e-2), which covers the
# FER codes' own choices (EAC and RUL: 2e-4 backbone, RUL: 2e-3 classifier; docs/methods.md Part C).
# Weight decay is a choice, not log-uniform, because the paper's pipeline has none (0, the default,
# which no log scale reaches); the other values are the codes' (CCT's KD 4e-5, SCN, EAC and RUL
# 1e-4, NCT, ELR and DivideMix 5e-4 to 1e-3) rounded to decades.
WEIGHT_DECAYS = (0.0, 1e-5, 1e-4, 1e-3)


@dataclass(frozen=True)
class TrainSettings:
    """The shared training pipeline every method runs on (docs/methods.md Part A)."""

    #: Training epochs of the main phase (distillation phases take theirs from the method).
    epochs: Annotated[int, Range(1, 10_000)] = 40
    #: Training mini-batch size.
    batch_size: Annotated[int, Range(1, 65_536)] = 256
    #: Side of the square network input in pixels (images are resized on the device).
    image_size: Annotated[int, Range(8, 1024)] = 224
    #: timm model name of the backbone every network is built from.
    backbone: str = "resnet18"
    #: Adam learning rate of the backbone's layers.
    backbone_lr: Annotated[float, POSITIVE, Tune(1e-4, 1e-2, log=True)] = 1e-3
    #: Adam learning rate of the classifier (the last fully connected layer).
    classifier_lr: Annotated[float, POSITIVE, Tune(1e-3, 1e-1, log=True)] = 1e-2
    #: Every learning rate is multiplied by this after each epoch.
    lr_decay: Annotated[float, Range(0, 1, low_open=True)] = 0.95
    #: Step decay on top of lr_decay: every lr x 0.1 from each of these epochs (0-based) of a
    #: phase on, e.g. [9]; a method's own schedule (CCT's "code" distillation) replaces both.
    lr_milestones: tuple[int, ...] = added(())
    #: Adam weight decay (L2) of every parameter group.
    weight_decay: Annotated[float, Range(0, None), Tune(choices=WEIGHT_DECAYS)] = 0.0
    #: Training augmentation: "" = the dataset's own pipeline, or cct | affectnet | scn | eac | erase | none.
    augmentation: Literal[AUGMENTATIONS] = ""
    #: Class-balanced oversampling by the observed (noisy) labels (docs/methods.md §1.4).
    balanced_sampling: bool = False
    #: Stop an epoch after this many steps (0 = all); the CCT code caps epochs at 401 steps.
    max_steps_per_epoch: Annotated[int, Range(0, None)] = 0
    #: Drop the last, incomplete batch of an epoch.
    drop_last: bool = True
    #: Batch size of the per-epoch evaluation (changes speed and memory, not results).
    eval_batch_size: Annotated[int, Range(1, 65_536)] = runtime(512)
    #: Share of the training set held out, stratified by the noisy labels and seeded, to select
    #: the epoch without the test set (the ``val`` metric); 0 = train on all of it (the paper).
    val_fraction: Annotated[float, Range(0, 0.5)] = 0.1
    #: Train on a seeded random subset of this many of the faces left after the validation
    #: split (0 = all of them): the knob of CPU-scale protocols. The noisy labels are drawn on the
    #: whole split first, so a face keeps its noisy label whatever the subset.
    train_size: Annotated[int, Range(0, None)] = added(0)
    #: k of the "mean of the last k epochs" metric.
    last_k: Annotated[int, Range(1, None)] = 10
    #: MS-Celeb-1M (SCN/CCT format) or torchvision/timm-keyed ResNet-18 file; "" = random init.
    #: The file's sha256 enters the run id, not its path.
    pretrained: str = runtime("")
    #: bf16 autocast on CUDA (on the CPU only with ``cpu_amp``).
    amp: bool = True
    #: channels_last memory format on CUDA (on the CPU only with ``cpu_amp``, where oneDNN's bf16
    #: kernels prefer it; in fp32 it measured slower on the CPU, benchmarks/README.md).
    channels_last: bool = True
    #: bf16 autocast (and channels_last) on the CPU too. Off by default: it pays only on CPUs with
    #: bf16 instructions (AVX512-BF16, AMX; 1.7x at 32 px on one, slower on another) and it
    #: changes the numbers, so it enters the run id (benchmarks/README.md).
    cpu_amp: bool = added(False)
    #: torch.compile every network (speed only).
    compile: bool = runtime(False)
    #: Keep the uint8 image cache on the training device: "auto" (if it fits), "yes" or "no".
    cache_on_device: Literal["auto", "yes", "no"] = runtime("auto")
    #: torch's fused Adam kernel on the CPU too (CUDA always uses it): the same algorithm, with an
    #: update about 5x faster than the per-parameter loop on a CPU, where that loop took 40% of a
    #: ResNet-18 step at batch 32 and 32 px (benchmarks/README.md). It rounds differently from
    #: the loop, like another thread count; false gives the loop of earlier versions (their
    #: runs' spec.json has no fused_adam key).
    fused_adam: bool = runtime(True)
    #: Write the resumable checkpoint at most every this many seconds (and always at the end of a
    #: phase); 0 = after every epoch. Saving CCT's three networks and optimisers takes about 0.5 s
    #: on a CPU, a real share of a few-second epoch; an interruption loses at most this long plus
    #: one epoch, and resuming stays exact.
    checkpoint_interval: Annotated[float, Range(0, None)] = runtime(0.0)

    def __post_init__(self) -> None:
        # spec.json stores the tuple as a JSON list: keep one form, so that the run id does not change.
        milestones = tuple(self.lr_milestones) if isinstance(self.lr_milestones, list) else self.lr_milestones
        object.__setattr__(self, "lr_milestones", milestones)
        if not all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in milestones):
            raise ConfigError(f"train.lr_milestones must be a list of epochs >= 1 (0-based), e.g. [9], "
                              f"got {list(milestones)!r}.")
        if list(milestones) != sorted(set(milestones)):
            raise ConfigError(f"train.lr_milestones must be increasing without repeats, got {list(milestones)!r}.")


@dataclass(frozen=True)
class RunDefaults:
    """What ``nlbench run`` does without arguments (``[run]`` of benchmark.toml)."""

    #: Method trained when --method is not given.
    method: str = "cct"
    #: Dataset used when --dataset is not given.
    dataset: str = "synthfer"
    #: Label-noise rate when --noise is not given.
    noise: Annotated[float, Range(0, 1, high_open=True)] = 0.2
    #: Noise mode: flip (a uniformly drawn different class), exact, uniform or pair.
    noise_mode: Literal[NOISE_MODES] = "flip"
    #: injected (the engine draws the noise) or dataset (the dataset's own noisy labels).
    noise_source: Literal["injected", "dataset"] = "injected"
    #: Run seed: picks the noisy labels, the initialisation and every random draw of a run.
    seed: Annotated[int, Range(0, 2**31 - 1)] = 1
    #: auto (CUDA when present), cpu, cuda or cuda:N.
    device: str = "auto"
    #: Where run folders are stored (in benchmark.toml relative to the file's folder; --runs-dir
    #: relative to the working directory).
    runs_dir: str = "runs"
    #: Decoded-image cache ("" = $NLBENCH_CACHE, else ~/.cache/nlbench; in benchmark.toml relative
    #: to the file's folder).
    cache_dir: str = ""
