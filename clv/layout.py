"""Where a bank lives on disk, as parts: a flat folder (the contract's CSV or Parquet files) is one part.

Every command works part by part: `source.map(function, ...)` calls `function(source, part, ...)` for
each part, and the function loads the part's tables with `source.load(part)`. Here it runs in this
process, part after part.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from clv import artifacts
from clv.bank import Bank, load_bank
from clv.contract import find_table
from clv.schema import TABLES


@dataclass(frozen=True)
class FlatBank:
    """A folder of the contract's files: one part, read whole."""

    data_dir: Path

    @property
    def parts(self) -> list[str]:
        return [""]

    def load(self, part: str = "") -> tuple[Bank, pd.Series | None]:
        """The part's Bank, and the oracle's expected values when the folder has them."""
        files = sorted(self.data_dir.glob("*.*"))
        return _read_flat(self.data_dir, tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))

    @functools.cached_property
    def last_day(self) -> int:
        return self.load()[0].last_day()

    @functools.cached_property
    def fingerprint(self) -> str:
        paths = [find_table(self.data_dir, name) for name in TABLES]
        return artifacts.fingerprint([p for p in paths if p is not None])

    def customers_in(self, parts: Sequence[str]) -> int:
        return self.load()[0].size

    def map(self, function: Callable[..., Any], parts: Sequence[str] | None = None, **kwargs: Any) -> list[Any]:
        """`function(self, part, **kwargs)` for each part, in order."""
        return [function(self, part, **kwargs) for part in (self.parts if parts is None else parts)]


@functools.lru_cache(maxsize=1)
def _read_flat(data_dir: Path, files: tuple) -> tuple[Bank, pd.Series | None]:
    """The folder read once while its files stay the same: training reads its rows, then its held-out
    customers."""
    return load_bank(data_dir), read_oracle(data_dir)


def read_oracle(data_dir: Path) -> pd.Series | None:
    """oracle_clv's expected value by customer id, with its as-of date as the Series name; None without one."""
    path = find_table(Path(data_dir), "oracle_clv")
    if path is None:
        return None
    oracle = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    as_of = pd.Timestamp(oracle["as_of"].iloc[0]).date() if len(oracle) else None
    return oracle.set_index("customer_id")["expected_clv"].rename(as_of)


def open_bank(data_dir: Path) -> FlatBank:
    return FlatBank(Path(data_dir))
