"""Store files valid in syntax but wrong in content are reported by file and reason, never an internal error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import TINY, run_dirs

ARGS = ["run", "-m", "standard", "-e", "1", "--device", "cpu", "-q", *TINY]


@pytest.fixture
def interrupted(cli, tmp_path) -> Path:
    """A run with its checkpoint whose result is gone: the next run resumes from the checkpoint."""
    root = tmp_path / "runs"
    assert cli(*ARGS, "--runs-dir", str(root), "--keep-checkpoint").code == 0
    [run] = run_dirs(root)
    (run / "result.json").unlink()
    return run


@pytest.mark.parametrize(("content", "message"), [
    ([1, 2], "it holds list, not a dict"),
    ({"run_id": "x"}, "it lacks 'phase_index'"),
    ("drop:method", "it lacks 'method'"),
    ("labels:{}", "its 'labels' lack 'current' or 'changes'"),
])
def test_a_checkpoint_of_the_wrong_shape_is_refused_with_what_to_do(cli, interrupted, content, message):
    path = interrupted / "checkpoint.pt"
    if isinstance(content, str):
        state = torch.load(path, weights_only=True)
        key, _, value = content.partition(":")
        if key == "drop":
            del state[value]
        else:
            state[key] = {}
        content = state
    torch.save(content, path)
    out = cli(*ARGS, "--runs-dir", str(interrupted.parents[3]))
    assert out.code == 2, out.err
    assert message in out.err and "is not a checkpoint of this nlbench" in out.err and "internal error" not in out.err


def test_a_truncated_model_is_named_by_gradcam_and_skipped_by_the_report(cli, tmp_path):
    root = tmp_path / "runs"
    assert cli(*ARGS, "--runs-dir", str(root)).code == 0
    [run] = run_dirs(root)
    data = (run / "model.pt").read_bytes()
    (run / "model.pt").write_bytes(data[: len(data) // 2])
    plot = cli("plot", "gradcam", "--runs-dir", str(root), "--out", str(tmp_path / "figs"))
    assert plot.code == 2 and "model.pt cannot be loaded" in plot.err and "internal error" not in plot.err
    report = cli("report", "--runs-dir", str(root), "--out", str(tmp_path / "report"), "--gradcam", "1")
    assert report.code == 0, report.err
    assert "gradcam: not drawn" in (tmp_path / "report" / "report.md").read_text()


def test_a_run_resumed_with_another_thread_count_uses_the_one_it_began_with(cli, interrupted):
    state = torch.load(interrupted / "checkpoint.pt", weights_only=True)
    assert state["threads"] == torch.get_num_threads()
    state["threads"] = torch.get_num_threads() + 1
    torch.save(state, interrupted / "checkpoint.pt")
    before = torch.get_num_threads()
    out = cli(*[a for a in ARGS if a != "-q"], "--runs-dir", str(interrupted.parents[3]))
    assert out.code == 0, out.err
    assert f"resuming with {before + 1} CPU thread(s) as the run began" in " ".join(out.err.split())
    assert torch.get_num_threads() == before  # restored for whatever this process does next
