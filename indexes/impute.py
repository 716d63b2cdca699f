"""Imputation of missing indicator values (COINr ``Impute()``, column-wise).

``none`` refuses missing values and names every missing (unit, indicator) cell; ``mean``
and ``median`` replace them with the indicator's mean / median over the units that have a
value (COINr ``i_mean`` / ``i_median``, ``impute_by = "column"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from indexes import IndexDataError

__all__ = ["ImputationNote", "impute"]


@dataclass(frozen=True)
class ImputationNote:
    """One imputed cell.

    Attributes
    ----------
    unit : object
        The unit id (row label).
    indicator : str
        The indicator code (column label).
    value : float
        The value written in the cell.
    method : str
        ``"mean"`` or ``"median"``.
    """

    unit: object
    indicator: str
    value: float
    method: str


def missing_cells(frame: pd.DataFrame) -> list[tuple[object, str]]:
    """The (unit, indicator) pairs of NaN cells, row by row."""
    rows, cols = np.nonzero(frame.isna().to_numpy())
    return [(frame.index[r], str(frame.columns[c])) for r, c in zip(rows, cols, strict=True)]


def impute(
    frame: pd.DataFrame, method: Literal["none", "mean", "median"] = "none"
) -> tuple[pd.DataFrame, tuple[ImputationNote, ...]]:
    """Fill the missing values of an indicator table.

    Parameters
    ----------
    frame : pandas.DataFrame
        Rows = units, columns = indicators, float values with NaN for missing.
    method : {"none", "mean", "median"}
        ``none``: no imputation, missing values are an error.

    Returns
    -------
    imputed : pandas.DataFrame
        A new frame without NaN (``frame`` itself is not modified).
    notes : tuple of ImputationNote
        One note per imputed cell, in row order.

    Raises
    ------
    indexes.IndexDataError
        ``method="none"`` and some cells are missing (the message lists every one as
        ``(unit, indicator)``), or an indicator has no value at all.
    ValueError
        Unknown ``method``.

    Notes
    -----
    :math:`\\hat x_{ui} = \\bar x_i` (mean) or :math:`\\operatorname{median}_u x_{ui}` over
    the observed units, as COINr's ``i_mean`` / ``i_median`` (Becker et al. 2022) and the
    OECD/JRC Handbook (2008, §1.3 "unconditional mean / median imputation").

    References
    ----------
    OECD/JRC (2008). Handbook on Constructing Composite Indicators, ch. 1.3.
    https://doi.org/10.1787/9789264043466-en
    """
    if method not in ("none", "mean", "median"):
        raise ValueError(f"unknown imputation method {method!r} (none, mean, median)")
    cells = missing_cells(frame)
    if not cells:
        return frame.copy(), ()
    if method == "none":
        listed = ", ".join(f"({unit!r}, {code})" for unit, code in cells)
        raise IndexDataError(
            f"{len(cells)} missing value(s) and imputation is 'none'; missing (unit, indicator): "
            f"{listed}"
        )
    empty = [str(c) for c in frame.columns if frame[c].isna().all()]
    if empty:
        raise IndexDataError(f"indicators without any value cannot be imputed: {', '.join(empty)}")
    fill = frame.mean() if method == "mean" else frame.median()
    imputed = frame.fillna(fill)
    notes = tuple(ImputationNote(u, c, float(fill[c]), method) for u, c in cells)
    return imputed, notes
