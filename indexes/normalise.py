"""Normalisation of treated indicators onto a common, direction-adjusted scale.

As in COINr's ``Normalise()``, each indicator is first multiplied by its direction (+1 / -1)
so that a higher normalised value always means a higher index score (here: a higher
priority), then normalised column by column:

=================  ============================================================  ===============
method             formula (on ``y = direction * x``)                            COINr
=================  ============================================================  ===============
minmax             ``(y - min y) / (max y - min y) * (high - low) + low``        ``n_minmax``
zscore             ``(y - mean y) / sd y`` (sd with n - 1, like R's ``sd``)      ``n_zscore``
rank               ``rank(y)``, ties get the minimum rank (1 = lowest)           ``n_rank``
percentile         ``100 * (rank(y) - 1) / (n - 1)``, ties minimum               ``n_prank`` x100
goalposts          ``100 * clip((x - low_i) / (high_i - low_i), 0, 1)``;         ``n_goalposts``
                   direction -1: ``100 * clip((high_i - x) / (high_i - low_i))``
distance_to_best   direction +1: ``100 * x / max x``; -1: ``100 * min x / x``    ``n_fracmax``
=================  ============================================================  ===============

A constant indicator cannot be min-max, z-score or goalpost-free normalised (COINr returns
NaN with a warning); here it raises :class:`indexes.IndexDataError` naming it.

References
----------
OECD/JRC (2008). Handbook on Constructing Composite Indicators, §1.5 and Table 3.
https://doi.org/10.1787/9789264043466-en

Becker, W. et al. (2022). COINr. JOSS 7(78), 4567. https://doi.org/10.21105/joss.04567 —
source ``R/normalise.R``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from indexes import IndexDataError

__all__ = ["normalise", "normalise_column"]


def _constant(code: str, method: str) -> IndexDataError:
    return IndexDataError(f"indicator {code!r} is constant: it cannot be {method}-normalised")


def normalise_column(
    x: np.ndarray,
    direction: int,
    method: str = "minmax",
    *,
    low: float = 0.0,
    high: float = 100.0,
    goalposts: tuple[float, float] | None = None,
    code: str = "indicator",
) -> np.ndarray:
    """Normalise one indicator (see the module table for the formulas).

    Parameters
    ----------
    x : array_like of float
        Treated values of one indicator, without NaN.
    direction : {1, -1}
    method : str
        One of ``minmax``, ``zscore``, ``rank``, ``percentile``, ``goalposts``,
        ``distance_to_best``.
    low, high : float
        Min-max bounds (COINr ``l_u``; default 0-100).
    goalposts : (float, float), optional
        ``(low, high)`` on the raw scale; required by ``goalposts``.
    code : str
        Indicator code, for error messages.

    Returns
    -------
    numpy.ndarray
        A new array.
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be 1 or -1, got {direction!r}")
    x = np.asarray(x, dtype=float)
    if np.isnan(x).any():
        raise IndexDataError(f"indicator {code!r} has missing values: impute first")
    y = direction * x
    if method in ("minmax", "zscore"):
        return _scaled(y, method, low, high, code)
    if method == "rank":
        return rankdata(y, method="min").astype(float)
    if method == "percentile":
        return 100.0 * (rankdata(y, method="min") - 1.0) / (y.size - 1)
    if method == "goalposts":
        return _goalposts(x, direction, goalposts, code)
    if method == "distance_to_best":
        return _distance_to_best(x, direction, code)
    raise ValueError(f"unknown normalisation {method!r}")


def _scaled(y: np.ndarray, method: str, low: float, high: float, code: str) -> np.ndarray:
    """Min-max onto ``[low, high]``, or z-scores (sd with n - 1); a constant raises."""
    if method == "minmax":
        span = y.max() - y.min()
        if span == 0:
            raise _constant(code, method)
        return (y - y.min()) / span * (high - low) + low
    sd = y.std(ddof=1)
    if sd == 0:
        raise _constant(code, method)
    return (y - y.mean()) / sd


def _goalposts(
    x: np.ndarray, direction: int, goalposts: tuple[float, float] | None, code: str
) -> np.ndarray:
    if goalposts is None:
        raise ValueError(f"goalposts normalisation of {code!r} needs (low, high)")
    g_low, g_high = goalposts
    share = (x - g_low) / (g_high - g_low) if direction == 1 else (g_high - x) / (g_high - g_low)
    return 100.0 * np.clip(share, 0.0, 1.0)


def _distance_to_best(x: np.ndarray, direction: int, code: str) -> np.ndarray:
    if direction == 1:
        best = x.max()
        if best <= 0 or x.min() < 0:
            raise IndexDataError(
                f"distance_to_best needs non-negative values and a positive maximum ({code!r})"
            )
        return 100.0 * x / best
    if x.min() <= 0:
        raise IndexDataError(
            f"distance_to_best with direction -1 needs positive values ({code!r}): the best "
            "(smallest) value is the numerator of min(x) / x"
        )
    return 100.0 * x.min() / x


def normalise(
    frame: pd.DataFrame,
    directions: Mapping[str, int],
    method: str = "minmax",
    *,
    low: float = 0.0,
    high: float = 100.0,
    goalposts: Mapping[str, tuple[float, float]] | None = None,
) -> pd.DataFrame:
    """Normalise every indicator of a table.

    Parameters
    ----------
    frame : pandas.DataFrame
        Rows = units, columns = indicators, no NaN (not modified).
    directions : mapping of str to {1, -1}
        Direction of each column (missing codes default to +1).
    method : str
        See :func:`normalise_column`.
    low, high : float
        Min-max bounds (default 0 and 100).
    goalposts : mapping of str to (low, high), optional
        Per-indicator goalposts for ``method="goalposts"``.

    Returns
    -------
    pandas.DataFrame
        A new frame; higher is always "higher index score".

    Notes
    -----
    Directions are applied as in COINr ``Normalise.numeric`` (``x * direction`` before the
    normalisation function), so min-max with direction -1 maps the raw minimum to ``high``.
    """
    columns = {
        code: normalise_column(
            frame[code].to_numpy(dtype=float),
            int(directions.get(code, 1)),
            method,
            low=low,
            high=high,
            goalposts=None if goalposts is None else goalposts.get(code),
            code=str(code),
        )
        for code in frame.columns
    }
    return pd.DataFrame(columns, index=frame.index.copy())
