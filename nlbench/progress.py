"""Progress on stderr: Rich bars on a terminal, one plain line per epoch otherwise (SLURM logs)."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def stderr_console() -> Console:
    """The console for logs and progress (data goes to stdout, everything else here)."""
    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


#: Width of tables written to a pipe or file when COLUMNS does not say: wide, so that a wide
#: table is not squeezed (a log is read in an editor, not at a terminal's width).
PIPE_WIDTH = 200


def stdout_console() -> Console:
    """The console for data (tables, results): the terminal's width, or COLUMNS when set (in a
    pipe too), else :data:`PIPE_WIDTH` when piped."""
    columns = os.environ.get("COLUMNS", "")
    width = None if sys.stdout.isatty() or columns.isdigit() else PIPE_WIDTH
    return Console(highlight=False, emoji=False, width=width)


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

    def status(self, text: str) -> None:
        """What the run is doing before its first epoch (loading data): a log line here; a live
        display shows it in the run's line instead."""
        self.message(text)

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


def make_sweep_reporter(quiet: bool = False) -> Reporter:
    """The sweep's own reporter: plain lines (an executor draws the live progress of its runs)."""
    console = stderr_console()
    console.quiet = quiet
    return Reporter(console)


def run_labels(specs: list[dict[str, Any]]) -> dict[str, str]:
    """A short name per run of a sweep (run id -> "method dataset noise sN"), unique within it.

    Runs that differ only by a ``--set`` axis get the first characters of their run id too."""
    names = {}
    for spec in specs:
        noise = spec.get("noise", {})
        if noise.get("source") == "dataset":
            noise_text = "real"
        elif noise.get("source") == "file":
            noise_text = "file"
        else:
            noise_text = f"{noise.get('rate', 0):g}{'' if noise.get('mode', 'flip') == 'flip' else ' ' + noise['mode']}"
        names[spec["run_id"]] = f"{spec['method']} {spec['data']['name']} {noise_text} s{spec['seed']}"
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    return {run_id: name if counts[name] == 1 else f"{name} {run_id[:6]}" for run_id, name in names.items()}


class EventReporter(Reporter):
    """A sweep worker's reporter: sends its run's progress to the sweep's display as events.

    ``send(event)`` is called with ``(worker, label, kind, payload)`` tuples; from a worker process
    it is a ``multiprocessing.Queue.put``. Batches are reported at most every ``interval`` seconds,
    and every event is a few hundred bytes (a pipe write that small is atomic, so a worker killed
    mid-write cannot garble the queue for the others)."""

    def __init__(self, send: Any, label: str, worker: int, interval: float = 0.5) -> None:
        super().__init__(Console(quiet=True))
        self.send, self.label, self.worker, self.interval = send, label, worker, interval
        self.done_steps, self.last_sent = 0, 0.0

    def _event(self, kind: str, *payload: Any) -> None:
        try:
            self.send((self.worker, self.label, kind, payload))
        except Exception:  # a display that is gone must not stop training
            pass

    def message(self, text: str) -> None:
        self._event("message", text)

    def status(self, text: str) -> None:
        self._event("status", text)

    def phase_start(self, phase: str, first_epoch: int, epochs: int, steps: int) -> None:
        self._event("phase", phase, first_epoch, epochs, steps)

    def epoch_start(self, epoch: int, steps: int | None = None) -> None:
        self.done_steps = 0
        self.last_sent = time.monotonic()
        self._event("epoch", epoch, steps)

    def step(self) -> None:
        self.done_steps += 1
        now = time.monotonic()
        if now - self.last_sent >= self.interval:
            self.last_sent = now
            self._event("step", self.done_steps)

    def epoch_end(self, record: dict[str, Any]) -> None:
        self._event("epoch_end", format_epoch(record), record["epoch"], float(record["seconds"]),
                    float(record["train_images_per_s"]))

    def start(self) -> None:
        """The run begins (before its data is loaded)."""
        self._event("start")

    def close(self) -> None:
        self._event("end")


class _RunProgress:
    """What the display knows of one run in flight."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.phase, self.epoch, self.epochs, self.steps, self.done_steps = "", 0, 0, 0, 0
        self.images_per_s: float | None = None
        self.doing = "starting"
        self.epoch_seconds: list[float] = []
        self.epoch_began = time.monotonic()

    def fraction(self) -> float:
        """Share of the current phase done (epochs and the current epoch's batches)."""
        if not self.epochs:
            return 0.0
        within = self.done_steps / self.steps if self.steps else 0.0
        return min(1.0, (self.epoch + within) / self.epochs)

    def eta(self) -> float | None:
        """Seconds left in this phase: the mean epoch time so far, or the current epoch's batch rate."""
        if not self.epochs:
            return None
        if self.epoch_seconds:
            per_epoch = sum(self.epoch_seconds) / len(self.epoch_seconds)
        elif self.done_steps and self.steps:
            per_epoch = (time.monotonic() - self.epoch_began) * self.steps / self.done_steps
        else:
            return None
        return max(0.0, per_epoch * (self.epochs - self.epoch - (self.done_steps / self.steps if self.steps else 0)))

    def info(self) -> str:
        """Phase, epoch, speed and time left, e.g. "train 3/10 812 img/s 1:02 left"."""
        if not self.epochs:
            return self.doing
        speed = f" {self.images_per_s:.0f} img/s" if self.images_per_s else ""
        eta = self.eta()
        left = f" {_clock(eta)} left" if eta is not None else ""
        return f"{self.phase} {min(self.epoch + 1, self.epochs)}/{self.epochs}{speed}{left}"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class SweepDisplay:
    """The progress of a sweep's runs, fed by their :class:`EventReporter` events.

    On a terminal: one live line per worker (run, phase, epoch/total, images/s, time left) under an
    overall bar (runs done of the sweep's, time left). Otherwise (a pipe, a log file): one line per
    epoch of every run, prefixed by the run's short name, and a line per finished run."""

    def __init__(self, console: Console, total: int, live: bool | None = None) -> None:
        self.console = console
        self.total, self.finished = total, 0
        self.runs: dict[int, _RunProgress] = {}
        self.lock = threading.RLock()  # events arrive on a listener thread, outcomes on the main one
        self.live = (console.is_terminal and not console.quiet) if live is None else live
        self.progress: Progress | None = None
        # Name, a 12-column bar and "train 10/10 1234 img/s 1:02:03 left" fit the terminal's width.
        self.name_width = max(10, min(30, console.width - 46))
        if self.live:
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(bar_width=12), TextColumn("{task.fields[info]}"),
                console=console, transient=True, refresh_per_second=4,
            )
            self.overall = self.progress.add_task(self._overall_label(), total=max(total, 1), info="")
            self.lines: dict[int, Any] = {}
            self.progress.start()

    def _overall_label(self) -> str:
        return f"{'runs ' + str(self.finished) + '/' + str(self.total):<{self.name_width}}"

    def handle(self, event: tuple) -> None:
        """One event of a run: ``(worker, label, kind, payload)``."""
        with self.lock:
            self._handle(*event)

    def _handle(self, worker: int, label: str, kind: str, payload: tuple) -> None:
        if kind == "end":
            self._idle(worker)
            return
        run = self.runs.get(worker)
        if kind == "start" or run is None or run.label != label:
            run = self.runs[worker] = _RunProgress(label)
        if kind == "message" or (kind == "status" and not self.live):
            self._log(f"{label}: {payload[0]}")
        elif kind == "status":
            run.doing = payload[0]
        elif kind == "phase":
            run.phase, first, run.epochs, run.steps = payload
            run.epoch, run.done_steps, run.epoch_seconds = first, 0, []
            if not self.live:
                self._log(f"{label}: phase {run.phase}: epochs {first + 1}..{run.epochs}, {run.steps} batches per epoch")
        elif kind == "epoch":
            run.epoch, steps = payload
            run.steps = steps or run.steps
            run.done_steps, run.epoch_began = 0, time.monotonic()
        elif kind == "step":
            run.done_steps = payload[0]
        elif kind == "epoch_end":
            line, epoch, seconds, images_per_s = payload
            run.epoch, run.done_steps = epoch + 1, 0
            run.epoch_seconds.append(seconds)
            run.images_per_s = images_per_s
            if not self.live:
                self._log(f"{label} {line}")
        self._refresh(worker)

    def run_finished(self, text: str) -> None:
        """A run of the sweep ended (done, failed, skipped...): one line, and the overall bar moves."""
        with self.lock:
            self.finished += 1
            self._log(f"[{self.finished}/{self.total}] {text}")
            self._refresh(None)

    def _log(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)
        else:  # a log: one line per event, never wrapped
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _refresh(self, worker: int | None) -> None:
        if self.progress is None:
            return
        if worker is not None:
            run = self.runs[worker]
            width = self.name_width
            name = run.label if len(run.label) <= width else run.label[: width - 1] + "…"
            if worker not in self.lines:
                self.lines[worker] = self.progress.add_task("", total=1.0, info="")
            room = max(10, self.console.width - width - 15)  # name, bar, spaces: one line per worker
            info = run.info()
            self.progress.update(self.lines[worker], description=f"{name:<{width}}", completed=run.fraction(),
                                 info=info if len(info) <= room else info[: room - 1] + "…")
        in_flight = sum(run.fraction() for key, run in self.runs.items() if key in self.lines)
        etas = [run.eta() for run in self.runs.values()]
        self.progress.update(self.overall, description=self._overall_label(),
                             completed=min(self.total, self.finished + in_flight),
                             info=self._overall_info(etas))

    def _overall_info(self, etas: list[float | None]) -> str:
        """Time left for the whole sweep: the longest run in flight, plus the queued runs at the pace
        of those in flight (their mean epoch time x epochs), spread over the workers."""
        known = [eta for eta in etas if eta is not None]
        if not known:
            return ""
        queued = max(0, self.total - self.finished - len(self.runs))
        lengths = [sum(run.epoch_seconds) / len(run.epoch_seconds) * run.epochs
                   for run in self.runs.values() if run.epoch_seconds]
        extra = sum(lengths) / len(lengths) * queued / max(1, len(self.runs)) if lengths else 0.0
        return f"{_clock(max(known) + extra)} left"

    def _idle(self, worker: int) -> None:
        """The worker's run ended; its line goes until its next run starts."""
        self.runs.pop(worker, None)
        if self.progress is not None and worker in self.lines:
            self.progress.remove_task(self.lines.pop(worker))

    def close(self) -> None:
        """Stop drawing (the terminal is left clean)."""
        with self.lock:
            if self.progress is not None:
                self.progress.stop()
                self.progress = None


def keep_words_whole(table: Any, width: int | None = None) -> Any:
    """Make a Rich table wrap its cells at spaces only: no column narrower than its longest word
    (or header word), so a narrow terminal wraps ``0.2 flip`` but never cuts ``coteaching_plus``
    mid-word. With ``width`` (the console's), the widths are chosen here (Rich's own squeeze can
    leave the last column off screen): the widest column that can still wrap gives a column at a
    time until the table fits. Returns the table."""
    natural, least = [], []
    for column in table.columns:
        cells = [str(cell) for cell in (column.header, *column._cells)]
        least.append(max((len(word) for cell in cells for word in cell.split()), default=1))
        natural.append(max((len(line) for cell in cells for line in cell.splitlines() or [""]), default=1))
        column.min_width = max(column.min_width or 0, least[-1])
        column.overflow = "fold"
    if width is None or sum(natural) + 3 * len(natural) + 1 <= width:
        return table
    widths = list(natural)
    while sum(widths) + 3 * len(widths) + 1 > width:
        room = [index for index, (now, low) in enumerate(zip(widths, least)) if now > low]
        if not room:
            break  # every column at its longest word: Rich crops what does not fit
        widest = max(room, key=lambda index: widths[index])
        widths[widest] -= 1
    for column, chosen in zip(table.columns, widths):
        column.width = chosen
    return table


def table_width(table: Any) -> int:
    """The columns a Rich table needs to show every cell on one line (borders and padding included)."""
    widths = [max([len(str(column.header)), *(len(str(cell)) for cell in column._cells)]) for column in table.columns]
    return sum(widths) + 3 * len(widths) + 1
