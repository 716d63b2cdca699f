"""The territory's towns and villages: where people live, with how many.

Read from a CSV (``name``, ``latitude``, ``longitude``, ``population``; ``district`` and
``geonameid`` optional). Belize's ships with the service (GeoNames places of 500 people or
more, ``app/data/belize/settlements.csv``, made by ``scripts/make_settlements.py``). The demo
generator draws its background incidents around them and the maps label them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

from app.core.settings import DATA_DIR

__all__ = ["BELIZE_SETTLEMENTS", "attribution", "read_settlements"]

BELIZE_SETTLEMENTS = DATA_DIR / "belize" / "settlements.csv"
# Credits of the shipped lists (app/data/ATTRIBUTION.md), shown on the maps.
ATTRIBUTIONS = {BELIZE_SETTLEMENTS.resolve(): "Towns and villages: GeoNames (CC BY 4.0)"}
REQUIRED = ("name", "latitude", "longitude", "population")


def attribution(path: Path | None) -> str | None:
    """The credit a map shows for the settlements in ``path`` (None: unknown or none)."""
    if path is None:
        return None
    return ATTRIBUTIONS.get(Path(path).resolve())


def read_settlements(path: Path = BELIZE_SETTLEMENTS) -> pd.DataFrame:
    """The settlements in ``path``, largest first (a copy: callers may change it).

    Raises ``ValueError`` naming the problem when a required column is missing, a
    coordinate is outside WGS 84's range or a population is negative or empty.
    """
    return _read(Path(path).resolve(), Path(path).stat().st_mtime_ns).copy()


@lru_cache(maxsize=4)
def _read(path: Path, _mtime: int) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"name": str, "district": str}, keep_default_na=False)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"{path.name}: missing column(s) {', '.join(missing)}")
    for column in ("latitude", "longitude", "population"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    if frame[["latitude", "longitude", "population"]].isna().any().any():
        raise ValueError(f"{path.name}: empty or non-numeric latitude, longitude or population")
    if not (frame["latitude"].abs() <= 90).all() or not (frame["longitude"].abs() <= 180).all():
        raise ValueError(f"{path.name}: a coordinate is outside WGS 84's range")
    if (frame["population"] < 0).any():
        raise ValueError(f"{path.name}: a population is negative")
    order = frame["population"].sort_values(ascending=False, kind="stable").index
    return frame.loc[order].reset_index(drop=True)
