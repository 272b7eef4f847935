"""The progress of a sweep: a named line per epoch in a pipe, one live line per worker on a terminal."""

from __future__ import annotations

import io
import time

from rich.console import Console

from nlbench.progress import EventReporter, SweepDisplay, run_labels


def _spec(run_id: str, method: str = "cct", seed: int = 1, rate: float = 0.2, mode: str = "flip") -> dict:
    return {"run_id": run_id, "method": method, "seed": seed, "data": {"name": "rafdb"},
            "noise": {"source": "injected", "rate": rate, "mode": mode}}


def _record(epoch: int, epochs: int = 4, seconds: float = 10.0) -> dict:
    return {"phase": "train", "epoch": epoch, "epochs": epochs, "train": {"loss": 1.5}, "test": {"model": 50.0},
            "seconds": seconds, "train_images_per_s": 812.0}


def test_runs_get_short_unique_names():
    labels = run_labels([_spec("aaaa1111"), _spec("bbbb2222", seed=2), _spec("cccc3333", mode="pair"),
                         _spec("dddd4444"), _spec("eeee5555", method="standard", rate=0.0)])
    assert labels["bbbb2222"] == "cct rafdb 0.2 s2"
    assert labels["cccc3333"] == "cct rafdb 0.2 pair s1"
    assert labels["eeee5555"] == "standard rafdb 0 s1"
    # Two runs differing only by a --set axis: their run ids tell them apart.
    assert labels["aaaa1111"] == "cct rafdb 0.2 s1 aaaa11" and labels["dddd4444"] == "cct rafdb 0.2 s1 dddd44"


def _feed(display: SweepDisplay, worker: int, label: str, epochs: int = 2) -> None:
    reporter = EventReporter(display.handle, label, worker)
    reporter.start()
    reporter.status("loading rafdb")
    reporter.phase_start("train", 0, epochs, 10)
    for epoch in range(epochs):
        reporter.epoch_start(epoch, 10)
        for _ in range(10):
            reporter.step()
        reporter.epoch_end(_record(epoch, epochs))
    reporter.close()


def test_in_a_pipe_every_epoch_of_every_run_is_one_named_line():
    out = io.StringIO()
    display = SweepDisplay(Console(file=out, width=80), total=2)
    assert not display.live
    _feed(display, 101, "cct rafdb 0.2 s1")
    _feed(display, 102, "cct rafdb 0.2 s2")
    display.run_finished("done cct rafdb 0.2 s1 (aaaa1111)")
    display.run_finished("done cct rafdb 0.2 s2 (bbbb2222)")
    display.close()
    lines = out.getvalue().splitlines()
    for seed in (1, 2):
        assert f"cct rafdb 0.2 s{seed} [train] epoch 1/2 loss=1.5000 test acc: model=50.00 (10.0s, 812 img/s)" in lines
        assert f"cct rafdb 0.2 s{seed} [train] epoch 2/2 loss=1.5000 test acc: model=50.00 (10.0s, 812 img/s)" in lines
        assert f"cct rafdb 0.2 s{seed}: loading rafdb" in lines
    assert lines[-2:] == ["[1/2] done cct rafdb 0.2 s1 (aaaa1111)", "[2/2] done cct rafdb 0.2 s2 (bbbb2222)"]


def test_on_a_terminal_each_worker_has_one_live_line_under_an_overall_bar():
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    display = SweepDisplay(console, total=3)
    assert display.live
    reporter = EventReporter(display.handle, "coteaching_plus rafdb 0.4 pair s3", 7)
    reporter.start()
    reporter.phase_start("train", 0, 4, 10)
    reporter.epoch_start(0, 10)
    reporter.epoch_end(_record(0, 4, seconds=30.0))
    reporter.epoch_start(1, 10)
    display.handle((7, "coteaching_plus rafdb 0.4 pair s3", "step", (5,)))
    run = display.runs[7]
    # 1.5 of 4 epochs done; 2.5 epochs of 30 s left.
    assert abs(run.fraction() - 1.5 / 4) < 1e-9
    assert run.info() == "train 2/4 812 img/s 1:15 left"
    table = display.progress.make_tasks_table(display.progress.tasks)
    lines = [line.rstrip() for line in _render(console, table)]
    assert len(lines) == 2 and all(len(line) <= 80 for line in lines)
    assert lines[0].startswith("runs 0/3") and lines[0].endswith("left")
    assert lines[1].startswith("coteaching_plus rafdb 0.4 pair s3"[:29]) and lines[1].endswith("train 2/4 812 img/s 1:15 left")
    # The overall bar: the run in flight's 2.5 epochs plus two queued runs of 4 epochs at 30 s each.
    assert lines[0].endswith(f"{(75 + 2 * 120) // 60}:{(75 + 2 * 120) % 60:02d} left")
    reporter.close()
    assert 7 not in display.runs  # the worker's line goes when its run ends
    display.run_finished("done x")
    display.close()
    assert "[1/3] done x" in out.getvalue()


def _render(console: Console, renderable) -> list[str]:
    capture = Console(file=io.StringIO(), width=console.width, color_system=None)
    with capture.capture() as captured:
        capture.print(renderable)
    return captured.get().splitlines()


def test_batches_are_reported_at_most_twice_a_second():
    events = []
    reporter = EventReporter(events.append, "run", 1, interval=0.5)
    reporter.epoch_start(0, 1000)
    began = time.monotonic()
    for _ in range(1000):
        reporter.step()
    took = time.monotonic() - began
    steps = [event for event in events if event[2] == "step"]
    assert len(steps) <= int(took / 0.5) + 1
