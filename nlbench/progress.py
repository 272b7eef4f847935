"""Progress on stderr: Rich bars on a terminal, one plain line per epoch otherwise (SLURM logs)."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def stderr_console() -> Console:
    """The console for logs and progress (data goes to stdout, everything else here)."""
    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def stdout_console() -> Console:
    """The console for data (tables, results): full width when piped, so nothing wraps mid-name."""
    return Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 200)


def format_epoch(record: dict[str, Any]) -> str:
    """One line summarising an epoch record."""
    test = record.get("test", {})
    shown = " ".join(f"{name}={acc:.2f}" for name, acc in test.items())
    train = record.get("train", {})
    loss = train.get("loss")
    loss_text = f"loss={loss:.4f}" if isinstance(loss, float) else ""
    return (
        f"[{record['phase']}] epoch {record['epoch'] + 1}/{record['epochs']} {loss_text} "
        f"test acc: {shown} ({record['seconds']:.1f}s, {record['train_images_per_s']:.0f} img/s)"
    )


class Reporter:
    """Reports a run's progress; this base class prints one plain line per epoch."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or stderr_console()

    def message(self, text: str) -> None:
        """A log line."""
        self.console.print(text, markup=False, highlight=False)

    def phase_start(self, phase: str, first_epoch: int, epochs: int, steps: int) -> None:
        """A phase begins (or resumes at ``first_epoch``)."""
        self.message(f"phase {phase}: epochs {first_epoch + 1}..{epochs}, {steps} batches per epoch")

    def epoch_start(self, epoch: int, steps: int | None = None) -> None:
        """An epoch of ``steps`` batches begins (a method's epoch plan may change the count per epoch)."""

    def step(self) -> None:
        """One training batch is done."""

    def epoch_end(self, record: dict[str, Any]) -> None:
        """An epoch is done (record as stored in metrics.jsonl)."""
        self.message(format_epoch(record))

    def close(self) -> None:
        """The run is over."""


class RichReporter(Reporter):
    """Rich progress bars for epochs and batches (terminal only)."""

    def __init__(self, console: Console | None = None) -> None:
        super().__init__(console)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.epochs_task: Any = None
        self.batches_task: Any = None

    def phase_start(self, phase: str, first_epoch: int, epochs: int, steps: int) -> None:
        if self.epochs_task is not None:
            self.progress.remove_task(self.epochs_task)
            self.progress.remove_task(self.batches_task)
        self.epochs_task = self.progress.add_task(f"{phase} epochs", total=epochs, completed=first_epoch)
        self.batches_task = self.progress.add_task("batches", total=steps)

    def epoch_start(self, epoch: int, steps: int | None = None) -> None:
        self.progress.reset(self.batches_task, total=steps)

    def step(self) -> None:
        self.progress.advance(self.batches_task)

    def epoch_end(self, record: dict[str, Any]) -> None:
        self.progress.advance(self.epochs_task)
        self.progress.console.print(format_epoch(record), markup=False, highlight=False)

    def close(self) -> None:
        self.progress.stop()


def make_reporter(quiet: bool = False) -> Reporter:
    """Rich bars when stderr is a terminal, plain lines otherwise."""
    console = stderr_console()
    if quiet:
        console.quiet = True
        return Reporter(console)
    if sys.stderr.isatty():
        return RichReporter(console)
    return Reporter(console)
