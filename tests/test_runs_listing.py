"""``nlbench runs``: one line per stored run, with what differs from the configured settings."""

from __future__ import annotations

import csv
import io

from conftest import TINY, run_dirs


def test_runs_lists_every_run_with_its_state_accuracy_and_differing_settings(cli, tmp_path):
    root = tmp_path / "runs"
    base = ["run", "-m", "standard", "-e", "1", "--runs-dir", str(root), "-q", *TINY]
    assert cli(*base).code == 0
    assert cli(*base, "--seed", "2", "--set", "train.backbone_lr=0.002").code == 0
    assert cli(*base, "--seed", "3").code == 0
    [unfinished] = [p for p in run_dirs(root) if "seed3-" in p.name]
    (unfinished / "result.json").unlink()

    listed = cli("runs", "--runs-dir", str(root), "--format", "csv")
    assert listed.code == 0, listed.err
    rows = list(csv.DictReader(io.StringIO(listed.out)))
    by_seed = {row["seed"]: row for row in rows}
    assert sorted(by_seed) == ["1", "2", "3"]
    assert by_seed["1"]["state"] == "done" and float(by_seed["1"]["last"]) >= 0
    assert "backbone_lr=0.002" in by_seed["2"]["settings"]
    assert "image_size=16" in by_seed["1"]["settings"]  # TINY's --set differs from the defaults too
    assert by_seed["3"]["state"] == "interrupted" and by_seed["3"]["last"] == ""
    assert all(len(row["run_id"]) == 12 for row in rows)

    text = cli("runs", "--runs-dir", str(root), "--seeds", "2")
    assert text.code == 0 and len(text.out.strip().splitlines()) == 2 and "backbone_lr=0.002" in text.out
    shown = cli("show", "--runs-dir", str(root), "zzzz")
    assert shown.code == 2 and "`nlbench runs --runs-dir" in shown.err
    assert cli("runs", "--runs-dir", str(root), "--format", "xml").code == 2
