"""Checks of the raw indicator table before any step runs (COINr's data-availability screen).

The app assembles the table; the engine refuses, with a message naming what is wrong, a
table it cannot use: missing indicator columns, non-numeric or infinite values, duplicate
unit ids, fewer than two units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from indexes import IndexDataError

__all__ = ["select_indicators"]


def select_indicators(raw: pd.DataFrame, codes: Sequence[str]) -> pd.DataFrame:
    """Return a float copy of the indicator columns of ``raw``, in ``codes`` order.

    Parameters
    ----------
    raw : pandas.DataFrame
        Rows = units (the index holds unit ids), columns = indicator codes; other columns
        are ignored. Missing values are NaN (or None).
    codes : sequence of str
        The indicator codes of the definition.

    Returns
    -------
    pandas.DataFrame
        A new float64 frame with exactly the ``codes`` columns; ``raw`` is not modified.

    Raises
    ------
    indexes.IndexDataError
        If a column is missing or not numeric, a value is infinite, unit ids repeat, or
        there are fewer than two units.
    """
    if not isinstance(raw, pd.DataFrame):
        raise IndexDataError(f"the raw indicator table must be a DataFrame, got {type(raw)}")
    missing = [c for c in codes if c not in raw.columns]
    if missing:
        raise IndexDataError(f"indicator columns missing from the table: {', '.join(missing)}")
    if raw.index.has_duplicates:
        repeated = sorted({str(u) for u in raw.index[raw.index.duplicated()]})
        raise IndexDataError(f"duplicate unit ids: {', '.join(repeated)}")
    if len(raw) < 2:
        raise IndexDataError(f"an index needs at least 2 units, got {len(raw)}")
    columns = {}
    for code in codes:
        try:
            columns[code] = pd.to_numeric(raw[code], errors="raise").astype("float64")
        except (TypeError, ValueError) as exc:
            raise IndexDataError(f"indicator {code!r} is not numeric: {exc}") from exc
    frame = pd.DataFrame(columns, index=raw.index.copy())
    infinite = np.isinf(frame.to_numpy())
    if infinite.any():
        rows, cols = np.nonzero(infinite)
        cells = [
            f"({frame.index[r]!r}, {frame.columns[c]})" for r, c in zip(rows, cols, strict=True)
        ]
        raise IndexDataError(f"infinite values at (unit, indicator): {', '.join(cells)}")
    return frame
