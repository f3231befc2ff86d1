"""Atomic file writes: readers never see a half-written file, a failure leaves the old one intact."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd


class atomic_path:
    """Context manager yielding a temporary path next to `path`, renamed onto it only on success.

    Readers never see a half-written file, and a failure leaves any previous file untouched.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a table as CSV or Parquet (chosen by suffix), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in {".csv", ".parquet"}:
        raise ValueError(f"{path}: output must end in .csv or .parquet, not {suffix or 'nothing'!r}")
    with atomic_path(path) as tmp:
        if suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
