"""Loggers: plugins that follow every run's curves (``--logger NAME`` on ``run`` and ``sweep``).

A logger is a :class:`Logger` subclass, registered through the ``register_loggers`` hook, whose
instance implements the observer hooks of :mod:`nlbench.hookspecs` with ``@nlbench.hookimpl``::

    class MyLogger(nlbench.loggers.Logger):
        name = "mine"

        @nlbench.hookimpl
        def on_epoch_end(self, run, record):
            send(epoch_scalars(record))

``--logger mine`` registers one instance into the plugin manager of the process that trains
(the ``run`` command, or each sweep worker); the engine then calls its hooks. Loggers only observe:
they are no part of a run's spec, so they never change a run id. The module lives at the root,
beside the hook specifications and the executors' contract, rather than in ``nlbench.train``
(which only calls the hooks) or ``nlbench.report`` (which reads finished runs): a logger is a
plugin API that third parties implement, and the built-in one is registered like theirs.

Built in: ``tensorboard`` (:class:`TensorBoardLogger`, ``pip install 'nlbench[tensorboard]'``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

from nlbench.errors import UsageError
from nlbench.hookspecs import hookimpl

#: The phase whose curves carry no prefix (every method has it; CCT adds "distill").
MAIN_PHASE = "train"


class Logger:
    """Base class of loggers: a named plugin object implementing observer hooks (module docstring).

    ``__init__`` takes no argument and is where a logger checks that its package is installed
    (raise :class:`nlbench.UsageError` saying what to install): the command instantiates the
    loggers before any run trains.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""


def epoch_scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of one metrics.jsonl line as flat scalar names -> values, for any logger.

    ``test/<member>`` and ``val/<member>`` are the test and noisy-validation accuracies (%) of
    every member the method predicts with (``model``, ``net1``, ``ensemble``, ...);
    ``train/<key>`` every number the epoch's training summary holds (``loss``, ``acc_clean``,
    ``acc_noisy``, ``label_precision`` of the methods that select samples, a method's own
    terms); ``lr`` the learning rate of the phase's first optimiser and ``images_per_s`` the
    training speed. A phase other than ``train`` (CCT's ``distill``) puts its name after the
    section: ``test/distill/student``. Missing values (None: an empty subset) are left out.
    """
    prefix = "" if record.get("phase", MAIN_PHASE) == MAIN_PHASE else f"{record['phase']}/"
    scalars: dict[str, float] = {}

    def put(tag: str, value: Any) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            scalars[tag] = float(value)

    for section in ("test", "val", "train"):
        for key, value in (record.get(section) or {}).items():
            put(f"{section}/{prefix}{key}", value)
    put(f"lr/{prefix}".rstrip("/"), record.get("lr"))
    put(f"images_per_s/{prefix}".rstrip("/"), record.get("train_images_per_s"))
    return scalars


def run_hparams(spec: dict[str, Any]) -> dict[str, float | str | bool]:
    """A run's identity as flat scalar hyperparameters (method, dataset, noise, seed, ``hp.*``)."""
    noise = spec.get("noise") or {}
    flat: dict[str, Any] = {"method": spec.get("method"), "dataset": (spec.get("data") or {}).get("name"),
                            "noise.rate": noise.get("rate"), "noise.mode": noise.get("mode"),
                            "seed": spec.get("seed"), "epochs": (spec.get("train") or {}).get("epochs")}
    flat.update({f"hp.{k}": v for k, v in (spec.get("hparams") or {}).items()})
    # TensorBoard takes numbers, strings and booleans only: a list becomes its text.
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat.items() if v is not None}


class TensorBoardLogger(Logger):
    """Writes each run's per-epoch scalars into ``<run folder>/tensorboard/``.

    ``tensorboard --logdir runs`` then shows every run, named by its folder. A point's step is
    the run's epoch counted from 1 across its phases (a 12-epoch run: steps 1 to 12; CCT's
    distillation continues after training), the line number of the record in metrics.jsonl. A
    resumed run restarts its curves where its checkpoint is (``purge_step``): epochs logged
    after the last checkpoint by the interrupted attempt are dropped, never drawn twice. At the
    end of a finished run the run's hyperparameters and last test accuracy go to TensorBoard's
    HParams tab.
    """

    name = "tensorboard"
    summary = "per-epoch curves in <run folder>/tensorboard/ (pip install 'nlbench[tensorboard]')"
    FOLDER = "tensorboard"

    def __init__(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError("--logger tensorboard needs the tensorboard package: "
                             "pip install 'nlbench[tensorboard]' (or pip install tensorboard).") from None
        self._writer_class = SummaryWriter
        self._writer: Any = None
        self._step = 0
        self._spec: dict[str, Any] = {}
        self._phase = MAIN_PHASE  # of the last epoch logged: names the metric of the HParams tab

    @hookimpl
    def on_run_start(self, run: Any) -> None:
        self._close()
        records, _ = run.read_metrics()  # the history the run resumes with (none for a new run)
        self._step = len(records)
        self._phase = records[-1].get("phase", MAIN_PHASE) if records else MAIN_PHASE
        folder = Path(run.path) / self.FOLDER
        earlier = folder.is_dir() and any(folder.iterdir())
        # An earlier attempt may have logged epochs past the checkpoint: drop them from the next step on.
        self._writer = self._writer_class(log_dir=str(folder), purge_step=self._step + 1 if earlier else None)
        try:
            self._spec = run.read_json("spec.json")
        except (OSError, ValueError):
            self._spec = {}

    @hookimpl
    def on_epoch_end(self, run: Any, record: dict[str, Any]) -> None:
        if self._writer is None:
            return
        self._step += 1
        self._phase = record.get("phase", MAIN_PHASE)
        for tag, value in epoch_scalars(record).items():
            self._writer.add_scalar(tag, value, global_step=self._step)
        self._writer.flush()  # a live `tensorboard --logdir runs` sees each epoch; a killed run keeps them

    @hookimpl
    def on_run_end(self, run: Any, result: dict | None, error: BaseException | None) -> None:
        started = self._writer is not None
        self._close()  # every epoch is on disk already (flushed), so nothing is written here
        if started and result is not None and self._spec:
            self._write_hparams(Path(run.path) / self.FOLDER, result)

    def _write_hparams(self, folder: Path, result: dict[str, Any]) -> None:
        """The run's hyperparameters for the HParams tab, in an event file of their own.

        Not the epochs' writer: a ``--force`` retrain trains in a folder beside the run and is
        moved into its place before this hook, and TensorBoard's writer reopens its file by name
        for every write. Not ``SummaryWriter.add_hparams`` either, which adds a subfolder: here
        the HParams tab shows one row per run folder, its metric the last ``test/model`` point.
        """
        from torch.utils.tensorboard.summary import hparams

        last = ((result.get("metrics") or {}).get("model") or {}).get("last")
        if not isinstance(last, (int, float)):
            return
        tag = "test/model" if self._phase == MAIN_PHASE else f"test/{self._phase}/model"
        writer = self._writer_class(log_dir=str(folder))
        try:
            for summary in hparams(run_hparams(self._spec), {tag: float(last)}):
                writer.file_writer.add_summary(summary)
        finally:
            writer.close()

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@hookimpl
def register_loggers(register: Any) -> None:
    register(TensorBoardLogger)
