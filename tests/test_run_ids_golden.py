"""Golden run ids: the canonical JSON and run id of fixed specs, pinned, so no refactoring changes an id.

A run id names a folder in every user's store: a change here orphans every stored run. When a
change of identity is intended (a new field that changes results), bump it on purpose and say so.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from nlbench.identity import canonical_json
from nlbench.plugins import get_registry
from nlbench.spec import RunRequest, RunSpec, resolve_spec
from nlbench.spec.config import Config

TINY_SETS = ["datasets.synthfer.options.train_size=21", "datasets.synthfer.options.test_size=14",
             "datasets.synthfer.options.size=16"]


def _spec(*sets: str, **request) -> RunSpec:
    return resolve_spec(RunRequest(sets=[*TINY_SETS, *sets], **request), Config(), get_registry())


def _ferplus_csv(root: Path) -> Path:
    """A five-face FERPlus CSV layout written as text, so its bytes (and fingerprint) never vary."""
    root.mkdir(parents=True, exist_ok=True)
    rows = [("Training", [0, 10, 0, 0, 0, 0, 0, 0, 0, 0]), ("Training", [0, 0, 6, 0, 0, 0, 4, 0, 0, 0]),
            ("Training", [5, 0, 0, 0, 0, 0, 0, 0, 4, 0]), ("PrivateTest", [0, 0, 0, 7, 3, 0, 0, 0, 0, 0]),
            ("PrivateTest", [0, 0, 0, 0, 6, 1, 3, 0, 0, 0])]
    emotions = [3, 5, 3, 4, 0]  # FER2013 order: the third face disagrees with its votes
    pixels = ["emotion,pixels,Usage"] + [f"{emotions[i]},{' '.join(str((i * 31 + j) % 256) for j in range(48 * 48))},{u}"
                                         for i, (u, _) in enumerate(rows)]
    (root / "fer2013.csv").write_text("\n".join(pixels) + "\n")
    header = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
    votes = [header] + [f"{u},fer{i:07d}.png,{','.join(map(str, v))}" for i, (u, v) in enumerate(rows)]
    (root / "fer2013new.csv").write_text("\n".join(votes) + "\n")
    return root


def _bmp(path: Path, value: int) -> None:
    """A 4x4 grey 24-bit BMP written byte by byte, so its bytes (and the data fingerprint) never vary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = bytes([value % 256]) * (4 * 4 * 3)
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, 4, 4, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    path.write_bytes(header + info + pixels)


def _own_data(root: Path) -> Path:
    """Twelve BMP faces in class folders (imagefolder's layout) and listed in labels.csv (csvlabels')."""
    lines = ["image,label"]
    for i in range(12):
        name = ("happy", "sad", "neutral")[i % 3]
        _bmp(root / name / f"S{i % 4:03d}_{i:02d}.bmp", 20 * i)
        lines.append(f"{name}/S{i % 4:03d}_{i:02d}.bmp,{name}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def _noise_file(cli, tmp_path: Path) -> Path:
    """A noise file for the tiny synthfer, exported by nlbench itself (its bytes are fixed by the seed)."""
    path = tmp_path / "noise.csv"
    sets = [item for pair in zip(["--set"] * len(TINY_SETS), TINY_SETS) for item in pair]
    out = cli("noise", "export", "--dataset", "synthfer", "--noise", "0.4", "--seed", "3", "--out", str(path), *sets)
    assert out.code == 0, out.err
    import nlbench

    # The file records the nlbench version that wrote it; pinned, so the id does not move with releases.
    path.write_text(path.read_text().replace(f'"nlbench": "{nlbench.__version__}"', '"nlbench": "0.3.0"'))
    return path


#: case -> {"run_id": ..., "identity": the canonical identity JSON}, recorded before the layout moved.
GOLDEN_FILE = Path(__file__).parent / "golden" / "run_ids.json"
GOLDEN = json.loads(GOLDEN_FILE.read_text()) if GOLDEN_FILE.exists() else {}


def _cases(cli, tmp_path: Path) -> dict[str, RunSpec]:
    return {
        "standard": _spec(method="standard"),
        "cct_options": _spec("methods.cct.lambda_max=0.8", "train.epochs=7", method="cct", noise=0.3,
                             noise_mode="exact", seed=2),
        "noise_file": _spec(method="standard", noise_file=str(_noise_file(cli, tmp_path))),
        "real_noise": resolve_spec(RunRequest(method="coteaching", dataset="ferplus", data_root=str(_ferplus_csv(
            tmp_path / "ferplus")), noise_source="dataset", sets=["datasets.ferplus.options.real_noise=\"fer2013\""]),
            Config(), get_registry()),
        "csvlabels": resolve_spec(RunRequest(method="standard", dataset="csvlabels", data_root=str(_own_data(
            tmp_path / "own")), sets=["datasets.csvlabels.options.split_seed=1"]), Config(), get_registry()),
        "imagefolder": resolve_spec(RunRequest(method="standard", dataset="imagefolder", data_root=str(_own_data(
            tmp_path / "own"))), Config(), get_registry()),
    }


@pytest.mark.parametrize("case", ["standard", "cct_options", "noise_file", "real_noise",
                                  "csvlabels", "imagefolder"])
def test_run_ids_and_canonical_json_are_pinned(case: str, cli, tmp_path: Path) -> None:
    spec = _cases(cli, tmp_path)[case]
    if os.environ.get("NLBENCH_RECORD_GOLDEN"):  # only when an id change is intended, and said so
        GOLDEN[case] = {"run_id": spec.run_id, "identity": spec.identity()}
        GOLDEN_FILE.write_text(json.dumps(GOLDEN, indent=1, sort_keys=True) + "\n")
    assert json.loads(canonical_json(spec.identity())) == GOLDEN[case]["identity"]  # a readable diff first
    assert canonical_json(spec.identity()) == canonical_json(GOLDEN[case]["identity"])
    assert spec.run_id == GOLDEN[case]["run_id"]
