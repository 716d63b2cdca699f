"""Reference values from R surveillance 1.20.3 (tests/data/surveillance/make_reference.R)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "data" / "surveillance"

#: Thresholds must equal R's to this absolute tolerance (issue 19).
ATOL = 1e-6


def series() -> dict[str, tuple[np.ndarray, int]]:
    """The reference series: name -> (counts, periods per year)."""
    df = pd.read_csv(DATA / "series.csv")
    out = {}
    for name, g in df.groupby("series", sort=False):
        g = g.sort_values("t")
        out[name] = (g["observed"].to_numpy(dtype=float), int(g["freq"].iloc[0]))
    return out


def reference(detector_file: str) -> pd.DataFrame:
    """One detector's R output (one row per series, configuration and period t, 1-based)."""
    return pd.read_csv(DATA / f"{detector_file}.csv", na_values=["NA"])


def r_alarm(values: pd.Series) -> np.ndarray:
    """R's alarm column (TRUE/FALSE/NA or 1/0) as booleans with NA as False."""
    v = values.astype(str).str.upper()
    return v.isin(["TRUE", "1", "1.0"]).to_numpy()
