"""Published numbers of the papers, for ``nlbench table --with-paper [--paper NAME]``.

Each paper is one data file ``nlbench/report/published/<name>_paper.toml`` (one entry per printed
cell, with its table); cells a paper does not print are absent. ``cct`` (the paper nlbench
reproduces) is the default; ``--paper NAME`` picks another, so a table never mixes two papers'
numbers and its caption names the one shown.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

PUBLISHED_DIR = Path(__file__).with_name("published")
SUFFIX = "_paper.toml"
DEFAULT_PAPER = "cct"
PAPER_FILE = PUBLISHED_DIR / f"{DEFAULT_PAPER}{SUFFIX}"
#: What a caption says of a paper's epoch selection when its file does not (the CCT paper's case).
DEFAULT_SELECTION = "its epoch selection is not stated; the official code selects on the test set"


@dataclass(frozen=True)
class Published:
    """The paper's cells, looked up by (table, method, dataset, noise[, networks, consistency])."""

    source: str
    cells: dict[tuple, float]
    #: The file's name without ``_paper.toml`` (what ``--paper`` takes).
    name: str = DEFAULT_PAPER
    #: How the paper chose the reported epoch, as far as is known (shown in the caption).
    selection: str = DEFAULT_SELECTION
    #: Per dataset: what a reader must know before comparing with that column (shown in the caption).
    caveats: dict[str, str] = field(default_factory=dict)

    def value(self, table: str, method: str, dataset: str, noise: float | str,
              networks: int | None = None, consistency: bool | None = None) -> float | None:
        """The printed value, or None where the paper has no such cell."""
        return self.cells.get((table, method, dataset, _noise_key(noise), networks, consistency))


def _noise_key(noise: float | str) -> float | str:
    return noise if isinstance(noise, str) else round(float(noise), 4)


def paper_names() -> list[str]:
    """The papers with a data file, by the name ``--paper`` takes."""
    return sorted(path.name[: -len(SUFFIX)] for path in PUBLISHED_DIR.glob(f"*{SUFFIX}"))


def paper_file(name: str) -> Path:
    """The data file of paper ``name``; a KeyError naming the known papers if there is none."""
    if name not in paper_names():
        raise KeyError(f"no published numbers of paper {name!r}; known papers: {', '.join(paper_names())}")
    return PUBLISHED_DIR / f"{name}{SUFFIX}"


def load_paper(name: str = DEFAULT_PAPER) -> Published:
    """The published cells of paper ``name`` (see :func:`paper_names`)."""
    return load_published(paper_file(name))


@cache
def load_published(path: Path = PAPER_FILE) -> Published:
    """Read the data file (a TOML file: data, never code)."""
    with open(path, "rb") as handle:
        data: dict[str, Any] = tomllib.load(handle)
    cells = {}
    for entry in data.get("results", []):
        key = (entry["table"], entry["method"], entry["dataset"], _noise_key(entry["noise"]),
               entry.get("networks"), entry.get("consistency"))
        cells[key] = float(entry["value"])
    source = data.get("source", {})
    name = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.stem
    return Published(f"{source.get('paper', path.name)}", cells, name,
                     source.get("selection", DEFAULT_SELECTION), dict(source.get("caveats", {})))
