"""`nlbench crowd infer --as-noise-file`: crowd truth written as a noise file trains directly with --noise-file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conftest import TINY, read_result, run_dirs
from nlbench.lib.synthface import CLASS_NAMES


def sample_order(cli, tmp_path: Path) -> list[str]:
    """The names of the tiny synthfer run's training samples, in training order, as `noise export` writes them."""
    out = cli("noise", "export", "--dataset", "synthfer", "--out", str(tmp_path / "order.csv"), *TINY)
    assert out.code == 0, out.err
    body = [line for line in (tmp_path / "order.csv").read_text().splitlines() if not line.startswith("#")]
    return [line.split(",")[0] for line in body[1:]]


def write_votes(path: Path, names: list[str], extra: list[str] = ()) -> dict[str, int]:
    """Three votes per sample whose majority is a known class (one outvoted dissent); returns name -> class."""
    truth, rows = {}, ["item,annotator,label"]
    for number, name in enumerate(names):
        k = (3 * number + 1) % len(CLASS_NAMES)
        winner = CLASS_NAMES[k].upper() if number % 5 == 0 else CLASS_NAMES[k]  # class names match ignoring case
        rows += [f"{name},a,{winner}", f"{name},b,{winner}", f"{name},c,{CLASS_NAMES[(k + 2) % len(CLASS_NAMES)]}"]
        truth[name] = k
    path.write_text("\n".join(rows + list(extra)) + "\n")
    return truth


def test_crowd_truth_trains_directly_with_noise_file(cli, tmp_path):
    names = sample_order(cli, tmp_path)
    # Votes on a test image too: ignored and counted, as a noise file's extra rows are.
    truth = write_votes(tmp_path / "votes.csv", names, ["test_9999,a,fear", "test_9999,b,fear"])
    noise = tmp_path / "crowd.noise.csv"
    out = cli("crowd", "infer", str(tmp_path / "votes.csv"), "--method", "majority", "--as-noise-file", str(noise),
              "--dataset", "synthfer", *TINY)
    assert out.code == 0, out.err
    assert f"wrote the inferred labels of {len(names)} training samples of synthfer" in out.out
    assert "1 inferred item(s) name no training sample" in out.out
    assert noise.read_text().startswith("# nlbench noise file 1\n")
    trained = cli("run", "-m", "standard", "-d", "synthfer", "-e", "1", "--runs-dir", str(tmp_path / "runs"), "-q",
                  "--noise-file", str(noise), *TINY)
    assert trained.code == 0, trained.err
    [run] = run_dirs(tmp_path / "runs")
    assert np.load(run / "noisy_labels.npy").tolist() == [truth[name] for name in names]
    assert read_result(run)["noise"]["source"] == "file"


def test_crowd_noise_file_refuses_what_cannot_train_with_one_clear_message(cli, tmp_path):
    names = sample_order(cli, tmp_path)
    noise = str(tmp_path / "crowd.noise.csv")

    def infer(votes: Path, *extra: str):
        return cli("crowd", "infer", str(votes), "--method", "majority", *extra)

    write_votes(tmp_path / "short.csv", names[:-4])
    out = infer(tmp_path / "short.csv", "--as-noise-file", noise, *TINY)
    assert out.code == 2 and f"no label to 4 of the {len(names)} training samples of synthfer" in out.err, out.err
    # Items inferred "none of the above" are dropped, so their samples have no label either: said so.
    write_votes(tmp_path / "none.csv", names[1:], [f"{names[0]},a,none", f"{names[0]},b,none"])
    out = infer(tmp_path / "none.csv", "--as-noise-file", noise, *TINY)
    assert out.code == 2 and "1 item(s) were inferred 'none of the above'" in out.err, out.err
    write_votes(tmp_path / "other.csv", names[1:], [f"{names[0]},a,contempt", f"{names[0]},b,contempt"])
    out = infer(tmp_path / "other.csv", "--as-noise-file", noise, *TINY)
    assert out.code == 2 and "'contempt' are not classes of synthfer" in out.err, out.err
    out = infer(tmp_path / "short.csv")
    assert out.code == 2 and "give --out FILE" in out.err
    out = infer(tmp_path / "short.csv", "--out", str(tmp_path / "labels.csv"), "--dataset", "synthfer")
    assert out.code == 2 and "give --as-noise-file FILE too" in out.err
    assert not Path(noise).exists() and "Traceback" not in out.err
