"""nlbench plot and nlbench report on a tiny store made here: valid files, the right numbers, every link."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, read_result, run_dirs

pytest.importorskip("matplotlib")
pytestmark = pytest.mark.slow  # trains a small store once (about a minute on a CPU)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Standard, Co-teaching and CCT (student distilled 1 epoch) at 0 and 40% noise, seed 1; SCN at 40%, 2 seeds."""
    from nlbench.cli import main

    root = tmp_path_factory.mktemp("figstore") / "runs"

    def call(*args):
        try:
            main(list(args))
        except SystemExit as exit_:
            assert exit_.code in (0, None)

    common = ["--epochs", "2", "--runs-dir", str(root), "--jobs", "1", "-q", "--no-table", *TINY]
    call("sweep", "--methods", "standard,coteaching,cct", "--noise", "0,0.4", "--seeds", "1",
         "--set", "methods.cct.distill_epochs=1", *common)
    call("sweep", "--methods", "scn", "--noise", "0.4", "--seeds", "1,2", *common)
    return root


def fake_cct_results(root: Path, template: dict) -> None:
    """Result files of CCT students at two temperatures x 2 seeds, and a grid for ranks (no training)."""
    for i, (u, seed, acc) in enumerate([(1.0, 1, 30.0), (1.0, 2, 32.0), (4.0, 1, 40.0), (4.0, 2, 44.0)]):
        result = json.loads(json.dumps(template))
        result.update(run_id=f"fake{i}", seed=seed, finished=1.0 + i)
        result["hparams"] = {**result["hparams"], "temperature_kd": u}
        result["metrics"]["model"] = {**result["metrics"]["model"], "last": acc}
        folder = root / f"fake{i}"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps(result))


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000


def is_pdf(path: Path) -> bool:
    return path.read_bytes()[:5] == b"%PDF-" and path.stat().st_size > 2_000


def test_lambda_draws_the_schedule_code(tmp_path):
    from nlbench.report.figures import plot_lambda

    figure = plot_lambda(tmp_path, betas=(0.65, 2.0), epochs=100)
    assert [p.name for p in figure.files] == ["lambda.png", "lambda.pdf"]
    assert is_png(figure.files[0]) and is_pdf(figure.files[1])
    curve = figure.data["beta=0.65"]
    # docs/methods.md: lambda(0) = 0.470, lambda(90) = 0.900 for 100 epochs, beta 0.65, lambda_max 0.9
    assert curve[0] == pytest.approx(0.470, abs=5e-4) and curve[90] == pytest.approx(0.9)
    assert figure.data["beta=2"][0] < curve[0]


@pytest.mark.parametrize("kind", ["curves", "memorisation", "selection", "confusion"])
def test_each_kind_writes_png_and_pdf(cli, store, tmp_path, kind):
    out = cli("plot", kind, "--runs-dir", str(store), "--out", str(tmp_path))
    assert out.code == 0, out.err
    pngs, pdfs = sorted(tmp_path.glob("*.png")), sorted(tmp_path.glob("*.pdf"))
    assert pngs and len(pngs) == len(pdfs)
    assert all(map(is_png, pngs)) and all(map(is_pdf, pdfs))


def test_confusion_values_are_the_stored_matrices_summed_over_seeds(store, tmp_path):
    from nlbench.report.figures import plot_confusion
    from nlbench.report.runs import read_runs

    runs = [r for r in read_runs(store).runs if r.method == "scn"]
    figure = plot_confusion(runs, tmp_path)
    [(name, drawn)] = figure.data.items()
    counts = sum(np.asarray(read_result(r.path)["final"]["model"]["confusion_matrix"], float) for r in runs)
    expected = 100 * counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    np.testing.assert_allclose(drawn, expected)
    assert name == "confusion-synthfer-40-scn"
    assert np.asarray(drawn).shape == (7, 7)  # true classes as rows: each row sums to 100 where it has images
    rows = np.asarray(drawn).sum(axis=1)
    assert np.all((np.isclose(rows, 100)) | (rows == 0))


def test_memorisation_values_are_the_stored_history(store, tmp_path):
    from nlbench.report.figures import plot_memorisation
    from nlbench.report.runs import read_runs

    runs = [r for r in read_runs(store).runs if r.method == "scn"]
    figure = plot_memorisation(runs, tmp_path)
    drawn = figure.data["synthfer|40|scn"]
    per_seed = [[h["train"]["acc_noisy"] for h in r.history if h["phase"] == "train"] for r in runs]
    np.testing.assert_allclose(drawn["noisy"], np.mean(per_seed, axis=0))
    assert len(drawn["clean"]) == 2


def test_temperature_and_ranks_from_the_store(cli, store, tmp_path):
    [cct] = [r for r in run_dirs(store) if read_result(r)["method"] == "cct" and read_result(r)["noise"]["rate"] > 0]
    fake = tmp_path / "runs"
    fake_cct_results(fake, read_result(cct))
    from nlbench.report.figures import plot_temperature
    from nlbench.report.runs import read_runs

    figure = plot_temperature(read_runs(fake).runs, tmp_path / "out")
    assert figure.data == {"synthfer|40": {1.0: 31.0, 4.0: 42.0}}
    out = cli("plot", "ranks", "--runs-dir", str(store), "--out", str(tmp_path / "ranks"))
    assert out.code == 2 and "every method on every cell" in out.err  # SCN ran at 40% only
    out = cli("plot", "ranks", "--runs-dir", str(store), "--methods", "standard,coteaching,cct",
              "--out", str(tmp_path / "ranks"))
    assert out.code == 0, out.err
    assert is_png(tmp_path / "ranks" / "ranks.png")
    too_few = cli("plot", "temperature", "--runs-dir", str(store), "--out", str(tmp_path))
    assert too_few.code == 2 and "two or more temperatures" in too_few.err


def test_gradcam_maps_of_the_deployed_model(cli, store, tmp_path):
    out = cli("plot", "gradcam", "--runs-dir", str(store), "--methods", "standard,cct", "--noise", "0.4",
              "--images", "4", "--out", str(tmp_path))
    assert out.code == 0, out.err
    assert "gradcam 2/2" in out.err  # progress on stderr
    from nlbench.plugins import get_registry
    from nlbench.report.figures import plot_gradcam
    from nlbench.report.runs import read_runs

    [run] = [r for r in read_runs(store).runs if r.method == "standard" and r.result["noise"]["rate"] > 0]
    figure = plot_gradcam([run], tmp_path / "one", get_registry(), images=4)
    [data] = figure.data.values()
    maps = np.asarray(data["maps"])
    assert maps.shape[0] == 4 and maps.min() >= 0 and maps.max() <= 1
    assert len(set(data["true"])) == 4  # spread over the classes
    # The predictions drawn are the stored model's: the run's own per-class test predictions agree.
    result = read_result(run.path)
    matrix = np.asarray(result["final"]["model"]["confusion_matrix"])
    for p, t in zip(data["predicted"], data["true"]):
        assert matrix[t, p] > 0


def test_plot_errors_are_clear(cli, store, tmp_path):
    out = cli("plot", "histogram", "--runs-dir", str(store))
    assert out.code == 2 and "unknown figure 'histogram'" in out.err
    out = cli("plot", "curves", "--runs-dir", str(store), "--methods", "nosuch", "--out", str(tmp_path))
    assert out.code == 2 and "no finished runs" in out.err


def test_missing_matplotlib_says_how_to_install_it(monkeypatch):
    import builtins

    from nlbench.errors import UsageError
    from nlbench.report.figures import require

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(UsageError, match=r'pip install "nlbench\[plots\]"'):
        require()


def test_report_links_every_figure_and_embeds_it(cli, store, tmp_path):
    out = cli("report", "--runs-dir", str(store), "--out", str(tmp_path), "--gradcam", "1", "--title", "Test report")
    assert out.code == 0, out.err
    md = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(linked) >= 6
    for link in linked:
        assert (tmp_path / link).is_file() and is_png(tmp_path / link)
    for pdf in re.findall(r"\[PDF\]\(([^)]+)\)", md):
        assert is_pdf(tmp_path / pdf)
    assert page.count("data:image/png;base64,") == len(linked)  # self-contained: no image fetched
    assert not re.search(r"(src|href)=['\"]https?://", page)
    for section in ("Protocol", "Table 1: label noise", "Table 3: clean labels", "Figures"):
        anchor = re.sub(r"[^a-z0-9]+", "-", section.lower()).strip("-")
        assert f"(#{anchor})" in md and f"id='{anchor}'" in page and f"href='#{anchor}'" in page
    assert "<table>" in page and "gradcam-" in md and "memorisation" in md
