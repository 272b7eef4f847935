"""Published numbers of the paper we reproduce, for ``nlbench table --with-paper``.

The values live in ``nlbench/report/published/cct_paper.toml`` (one entry per printed cell, with its
table), transcribed from the CCT paper; cells the paper does not print are absent.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

PAPER_FILE = Path(__file__).with_name("published") / "cct_paper.toml"


@dataclass(frozen=True)
class Published:
    """The paper's cells, looked up by (table, method, dataset, noise[, networks, consistency])."""

    source: str
    cells: dict[tuple, float]

    def value(self, table: str, method: str, dataset: str, noise: float | str,
              networks: int | None = None, consistency: bool | None = None) -> float | None:
        """The printed value, or None where the paper has no such cell."""
        return self.cells.get((table, method, dataset, _noise_key(noise), networks, consistency))


def _noise_key(noise: float | str) -> float | str:
    return noise if isinstance(noise, str) else round(float(noise), 4)


@lru_cache(maxsize=1)
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
    return Published(f"{source.get('paper', path.name)}", cells)
