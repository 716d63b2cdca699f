"""Aggregation of normalised indicators into dimension scores and the index score.

Three methods, applied at each level of the hierarchy (indicators → dimensions with the
within-dimension weights, dimensions → index with the dimension weights), as COINr's
``Aggregate()`` applies one function per level:

* ``arithmetic`` — weighted arithmetic mean :math:`\\sum_i w_i x_i` (weights sum to 1;
  COINr ``a_amean``). Fully compensatory.
* ``geometric`` — weighted geometric mean :math:`\\exp(\\sum_i w_i \\ln x_i)` (COINr
  ``a_gmean``), partially compensatory. It needs positive values: COINr refuses zeros and
  negatives and its vignette re-normalises min-max onto [1, 100] (``l_u = c(1, 100)``)
  before a geometric mean. The pipeline does exactly that for min-max; for the other
  normalisations a column with a value <= 0 is shifted by the COIN Tool shift
  :math:`x - \\min x + 1` (COINr ``boxcox(makepos = TRUE)``), see :func:`shift_positive`.
* ``copeland`` — non-compensatory Copeland rule (COINr ``a_copeland``): the outranking
  matrix :math:`e_{ab} = \\sum_i w_i [x_{ai} > x_{bi}] + \\tfrac12 \\sum_i w_i [x_{ai} =
  x_{bi}]` and the score :math:`c_a = \\sum_{b \\ne a} \\operatorname{sgn}(e_{ab} - \\tfrac12)`
  (+1 per pairwise weighted-majority win, -1 per loss, 0 per draw). Its cost is
  O(n² k); memory is bounded by working in row blocks. A draw is tested with a 1e-12
  tolerance (COINr tests exact equality with 0.5).

References
----------
OECD/JRC (2008). Handbook on Constructing Composite Indicators, §1.6 and §6.1-6.3
(Copeland / non-compensatory multi-criteria). https://doi.org/10.1787/9789264043466-en

Munda, G., Nardo, M. (2009). Noncompensatory/nonlinear composite indicators for ranking
countries: a defensible setting. *Applied Economics* 41(12), 1513-1523.
https://doi.org/10.1080/00036840601019364

Becker, W. et al. (2022). COINr. JOSS 7(78), 4567 — ``R/aggregate.R`` (``a_amean``,
``a_gmean``, ``outrankMatrix``, ``a_copeland``), vignette "Aggregation".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from indexes import IndexDataError
from indexes.weights import Hierarchy

__all__ = [
    "AggregationResult",
    "aggregate",
    "arithmetic_mean",
    "copeland",
    "geometric_mean",
    "outranking_matrix",
    "shift_positive",
]

_DRAW_TOLERANCE = 1e-12
_BLOCK_CELLS = 4_000_000  # floats per outranking block (32 MB)


def arithmetic_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row-wise weighted arithmetic mean, weights rescaled to sum to 1 (COINr ``a_amean``).

    Parameters
    ----------
    values : numpy.ndarray, shape (n, k)
    weights : numpy.ndarray, shape (k,)

    Returns
    -------
    numpy.ndarray, shape (n,)
    """
    w = np.asarray(weights, dtype=float)
    return np.asarray(values, dtype=float) @ (w / w.sum())


def geometric_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row-wise weighted geometric mean :math:`\\exp(\\sum w_i \\ln x_i / \\sum w_i)`.

    Raises
    ------
    indexes.IndexDataError
        If a value is zero or negative (as COINr ``a_gmean``).
    """
    x = np.asarray(values, dtype=float)
    if (x <= 0).any():
        raise IndexDataError(
            "the geometric mean needs positive values: normalise onto [1, 100] or shift first"
        )
    w = np.asarray(weights, dtype=float)
    return np.exp(np.log(x) @ (w / w.sum()))


def _outranking_rows(x: np.ndarray, w: np.ndarray, rows: slice) -> np.ndarray:
    diff = x[rows, None, :] - x[None, :, :]
    return (diff > 0) @ w + 0.5 * ((diff == 0) @ w)


def outranking_matrix(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """COINr ``outrankMatrix``: weight share by which each unit beats each other one.

    Returns
    -------
    numpy.ndarray, shape (n, n)
        ``e[a, b] + e[b, a] = 1`` off the diagonal; the diagonal is 0.
    """
    x = np.asarray(values, dtype=float)
    w = np.asarray(weights, dtype=float)
    w = w / w.sum()
    n, k = x.shape
    block = max(1, _BLOCK_CELLS // max(1, n * k))
    out = np.empty((n, n))
    for start in range(0, n, block):
        rows = slice(start, min(n, start + block))
        out[rows] = _outranking_rows(x, w, rows)
    np.fill_diagonal(out, 0.0)
    return out


def copeland(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Copeland scores (COINr ``a_copeland``): wins minus losses in weighted pairwise votes.

    Parameters
    ----------
    values : numpy.ndarray, shape (n, k)
    weights : numpy.ndarray, shape (k,)

    Returns
    -------
    numpy.ndarray of float, shape (n,)
        Integers in ``[-(n-1), n-1]``.
    """
    x = np.asarray(values, dtype=float)
    w = np.asarray(weights, dtype=float)
    w = w / w.sum()
    n, k = x.shape
    block = max(1, _BLOCK_CELLS // max(1, n * k))
    scores = np.empty(n)
    for start in range(0, n, block):
        rows = slice(start, min(n, start + block))
        e = _outranking_rows(x, w, rows) - 0.5
        sign = np.where(e > _DRAW_TOLERANCE, 1.0, np.where(e < -_DRAW_TOLERANCE, -1.0, 0.0))
        idx = np.arange(rows.start, rows.stop)
        sign[idx - rows.start, idx] = 0.0
        scores[rows] = sign.sum(axis=1)
    return scores


def shift_positive(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float]]:
    """Shift each column holding a value <= 0 by ``1 - min`` (COIN Tool ``x - min + 1``).

    Returns
    -------
    shifted : pandas.DataFrame
        A new frame, strictly positive.
    shifts : dict
        The constant added to each shifted column (recorded in the run's parameters).
    """
    shifts = {str(c): float(1.0 - frame[c].min()) for c in frame.columns if frame[c].min() <= 0}
    shifted = frame.copy()
    for code, shift in shifts.items():
        shifted[code] = frame[code] + shift
    return shifted, shifts


_FUNCTIONS = {"arithmetic": arithmetic_mean, "geometric": geometric_mean, "copeland": copeland}


@dataclass(frozen=True)
class AggregationResult:
    """Dimension scores and index score.

    Attributes
    ----------
    dimension_scores : pandas.DataFrame
        Rows = units, columns = dimension codes (no columns when the index has no
        dimensions).
    score : pandas.Series
        The index score of each unit.
    """

    dimension_scores: pd.DataFrame
    score: pd.Series


def aggregate(normalised: pd.DataFrame, weights: Hierarchy, method: str) -> AggregationResult:
    """Aggregate indicators → dimensions → index with one method at every level.

    Parameters
    ----------
    normalised : pandas.DataFrame
        Rows = units, columns = indicator codes (ready for ``method``: positive for
        ``geometric``).
    weights : Hierarchy
        Membership and normalised weights (:func:`indexes.weights.hierarchy`).
    method : {"arithmetic", "geometric", "copeland"}

    Returns
    -------
    AggregationResult

    Notes
    -----
    With arithmetic (or geometric) means at both levels the index equals the arithmetic
    (geometric) mean of the indicators with the effective weights ``W_d * w_i|d``.
    """
    try:
        function = _FUNCTIONS[method]
    except KeyError:
        raise ValueError(
            f"unknown aggregation {method!r} (arithmetic, geometric, copeland)"
        ) from None
    dims = {}
    for dim in weights.dimensions:
        codes = list(weights.membership.index[weights.membership == dim])
        dims[dim] = function(normalised[codes].to_numpy(), weights.within[codes].to_numpy())
    dimension_scores = pd.DataFrame(dims, index=normalised.index.copy())
    if weights.has_dimensions:
        score = function(dimension_scores.to_numpy(), weights.dimension_weights.to_numpy())
    else:
        score = dimension_scores["index"].to_numpy()
        dimension_scores = dimension_scores.drop(columns="index")
    return AggregationResult(
        dimension_scores, pd.Series(score, index=normalised.index, name="score")
    )
