"""Published noise lists: recognised by sha256, named in notes and tables, their rate checked, never shipped."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import warnings
from pathlib import Path

import pytest

from conftest import TINY, read_result, run_dirs
from nlbench.data import published_noise
from nlbench.data.published_noise import PUBLISHED, PublishedList, PublishedNoiseWarning, rate_problem, rate_tolerance
from nlbench.report.runs import noise_label

EAC_30 = "bb2f536c87af0b20d16b8e48945c3d6220fad0b4d4ee39b8b99f2007745dbe58"


def clean_labels(cli, tmp_path: Path) -> list[int]:
    """The clean training labels of the tiny synthfer, by sample (an export at noise 0 lists them)."""
    out = tmp_path / "clean.csv"
    done = cli("noise", "export", "--dataset", "synthfer", "--noise", "0", "--out", str(out), *TINY)
    assert done.code == 0, done.err
    rows = [line.split(",") for line in out.read_text().splitlines() if not line.startswith("#")][1:]
    assert [name for name, _, _ in rows] == [str(i) for i in range(len(rows))]
    return [int(label) for _, label, _ in rows]


def synthetic_list(cli, tmp_path: Path, flips: int) -> tuple[Path, int]:
    """A 'name label' list of the tiny synthfer with the first ``flips`` labels moved to the next class."""
    clean = clean_labels(cli, tmp_path)
    labels = [(y + 1) % 7 if i < flips else y for i, y in enumerate(clean)]
    path = tmp_path / "published.txt"
    path.write_text("".join(f"{i} {y}\n" for i, y in enumerate(labels)))
    return path, len(clean)


def entry_for(path: Path, *, flips: int, train_rows: int, label: str = "Paper noise 25%") -> PublishedList:
    """A registry entry for the bytes of ``path`` (the real lists cannot be shipped with the tests)."""
    return PublishedList(label, "synthfer", 0.25, train_rows, flips, train_rows, 0, "someone/paper-code", "a" * 40,
                         "labels/noise25.txt", hashlib.sha256(path.read_bytes()).hexdigest())


def train(cli, runs: Path, path: Path):
    return cli("run", "-m", "standard", "-d", "synthfer", "-e", "1", "--runs-dir", str(runs), "-q",
               "--noise-file", str(path), *TINY)


def test_a_known_file_is_named_in_the_note_and_the_table_and_keeps_its_run_id(cli, tmp_path, monkeypatch):
    path, n = synthetic_list(cli, tmp_path, flips=24)
    from nlbench.plugins import get_registry
    from nlbench.spec import RunRequest, resolve_spec
    from nlbench.spec.config import Config

    request = RunRequest(method="standard", dataset="synthfer", noise_file=str(path), sets=TINY[1::2])
    unknown_id = resolve_spec(request, Config(), get_registry()).run_id
    monkeypatch.setattr(published_noise, "PUBLISHED", (entry_for(path, flips=24, train_rows=n),))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PublishedNoiseWarning)  # 24 of 96 is exactly the entry's rate
        assert resolve_spec(request, Config(), get_registry()).run_id == unknown_id  # the id holds the bytes only
        done = train(cli, tmp_path / "runs", path)
    assert done.code == 0, done.err
    [run] = run_dirs(tmp_path / "runs")
    noise = read_result(run)["noise"]
    assert noise["note"] == "labels of noise file published.txt: Paper noise 25% (labels/noise25.txt of " \
                            "someone/paper-code at aaaaaaa)"
    assert noise["realised_rate"] == 0.25
    table = cli("table", "--runs-dir", str(tmp_path / "runs"), "--format", "markdown")
    assert table.code == 0, table.err
    assert "Paper noise 25% (25.0%)" in table.out
    assert "file " + hashlib.sha256(path.read_bytes()).hexdigest()[:8] not in table.out


def test_an_unknown_file_keeps_its_hash_label_and_plain_note(cli, tmp_path, monkeypatch):
    path, n = synthetic_list(cli, tmp_path, flips=24)
    other = tmp_path / "other.txt"
    other.write_text("0 0\n")
    monkeypatch.setattr(published_noise, "PUBLISHED", (entry_for(other, flips=0, train_rows=1),))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PublishedNoiseWarning)
        preview = cli("noise", "preview", "--dataset", "synthfer", "--noise-file", str(path), *TINY)
    assert preview.code == 0, preview.err
    assert "labels of noise file published.txt\n" in preview.out  # nothing after the name
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert noise_label({"source": "file", "file": {"sha256": sha}, "realised_rate": 0.25}) == f"file {sha[:8]} (25.0%)"


def test_a_known_file_whose_rate_does_not_fit_the_data_warns(cli, tmp_path, monkeypatch):
    path, n = synthetic_list(cli, tmp_path, flips=24)
    # Recorded with 23 flips: on all 96 rows even one label more is other clean labels, not chance.
    monkeypatch.setattr(published_noise, "PUBLISHED", (entry_for(path, flips=23, train_rows=n),))
    with pytest.warns(PublishedNoiseWarning, match=r"noise file published.txt is Paper noise 25%: it changes 25.00% "
                                                   r"\(24 of 96\) of the training labels here, not the 23.96% \(23 of 96\)"):
        preview = cli("noise", "preview", "--dataset", "synthfer", "--noise-file", str(path), *TINY)
    assert preview.code == 0, preview.err
    assert "WARNING: it changes 25.00% (24 of 96) of the training labels here" in " ".join(preview.out.split())


def test_a_subset_of_the_rows_passes_within_sampling_error():
    entry = dataclasses.replace(PUBLISHED[0], flips=3000, train_rows=10000)  # rate 0.3
    # Hand values: all rows: half a sample. 2,500 rows: 3 * sqrt(0.3 * 0.7 / 2500 * 7500 / 9999) + 0.5 / 2500.
    assert rate_tolerance(entry, 10000) == pytest.approx(0.00005)
    # = 3 * sqrt(8.4e-5 * 0.750075) + 0.0002 = 3 * 0.00793765 + 0.0002
    assert rate_tolerance(entry, 2500) == pytest.approx(0.0240130, abs=1e-6)
    assert rate_problem(entry, 0.3, 10000) is None
    assert rate_problem(entry, 0.3001, 10000) is not None  # one flip more on the same samples
    assert rate_problem(entry, 0.32, 2500) is None and rate_problem(entry, 0.33, 2500) is not None


def test_the_official_lists_are_named_by_their_origin():
    label = noise_label({"source": "file", "file": {"sha256": EAC_30}, "realised_rate": 3722 / 12271})
    assert label == "EAC noise 30% (30.3%)"
    entry = published_noise.find(EAC_30.upper())
    assert entry is not None and entry.rate == pytest.approx(0.30332, abs=1e-5)
    assert entry.url == ("https://raw.githubusercontent.com/zyh-uaiaaaa/Erasing-Attention-Consistency/"
                         "61efdfd373b6d2fe7c6d31712427aa263f72900d/raf-basic/EmoLabel/noise03.txt")
    assert published_noise.find(None) is None and published_noise.find("0" * 64) is None


def test_every_entry_is_well_formed():
    from nlbench.plugins import get_registry

    registry = get_registry()
    assert len({e.sha256 for e in PUBLISHED}) == len({e.label for e in PUBLISHED}) == len(PUBLISHED)
    for entry in PUBLISHED:
        assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256), entry.label
        assert re.fullmatch(r"[0-9a-f]{40}", entry.commit), entry.label
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", entry.repo), entry.label
        assert entry.path and not entry.path.startswith("/"), entry.label
        # Tables read a label starting with a number as an injected rate, one starting with "real" as real noise.
        head = entry.label.split(" ", 1)[0]
        assert not entry.label.startswith("real") and not re.fullmatch(r"[-+.\d]+|nan|inf", head.lower()), entry.label
        assert 0 <= entry.flips <= entry.train_rows <= entry.rows and entry.label_base in (0, 1), entry.label
        if entry.nominal_rate is not None:  # the name's rate is the realised one, give or take a draw
            assert abs(entry.nominal_rate - entry.rate) <= 0.01, entry.label
        assert entry.licence and (entry.redistributable or "licence" in entry.licence), entry.label
        assert registry.dataset(entry.dataset) is not None


def test_no_list_that_may_not_be_shipped_is_in_the_project():
    root = Path(__file__).resolve().parents[1]
    forbidden = {e.sha256 for e in PUBLISHED if not e.redistributable}
    folders = [root / name for name in ("nlbench", "tests", "docs", "datasets", "methods", "examples", "benchmarks")]
    for folder in (f for f in folders if f.is_dir()):
        for path in folder.rglob("*"):
            if path.suffix in (".txt", ".csv", ".lst", ".tsv") and path.is_file() and path.stat().st_size < 4 << 20:
                assert hashlib.sha256(path.read_bytes()).hexdigest() not in forbidden, path
