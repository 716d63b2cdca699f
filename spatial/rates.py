"""Rates per 100,000: crude rates, their Poisson relative standard error, Empirical Bayes.

Pure numpy (and scipy sparse for the neighbourhoods): arrays in, new arrays out, inputs
never modified. A unit whose population is missing, zero or negative has no rate (NaN)
and takes no part in the smoothing of the others.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse

from spatial import AnalysisError

__all__ = [
    "PER",
    "UNSTABLE_BELOW",
    "between_area_variance",
    "crude_rate",
    "empirical_bayes",
    "poisson_rse",
]

#: Rates are expressed per this many people.
PER = 100_000.0
#: Fewer events than this make a rate unstable (RSE above about 22 %), as NCHS/CDC flag them.
UNSTABLE_BELOW = 20


def _arrays(counts: Any, population: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    e = np.asarray(counts, dtype=float).reshape(-1)
    b = np.asarray(population, dtype=float).reshape(-1)
    if e.shape != b.shape:
        raise AnalysisError(f"{e.size} counts but {b.size} populations")
    if np.any(e[np.isfinite(e)] < 0) or np.any(np.isnan(e)):
        raise AnalysisError("counts must be non-negative numbers")
    valid = np.isfinite(b) & (b > 0)
    return e, b, valid


def crude_rate(counts: Any, population: Any) -> np.ndarray:
    """Crude rates per 100,000: ``counts / population * 100_000`` (NaN without population).

    Parameters
    ----------
    counts, population : array-like of shape (n,)
        Events and population at risk per unit.

    Returns
    -------
    numpy.ndarray of shape (n,)
    """
    e, b, valid = _arrays(counts, population)
    out = np.full(e.shape, np.nan)
    out[valid] = e[valid] / b[valid] * PER
    return out


def poisson_rse(counts: Any) -> np.ndarray:
    """Relative standard error of a rate whose count is Poisson: ``1 / sqrt(count)``.

    Parameters
    ----------
    counts : array-like of shape (n,)

    Returns
    -------
    numpy.ndarray of shape (n,)
        The RSE as a fraction (0.2236 for 20 events); NaN where the count is 0.

    Notes
    -----
    For a Poisson count :math:`d`, :math:`SE(d) = \\sqrt{d}`, so the rate
    :math:`d / P` has :math:`RSE = \\sqrt{d} / d = 1 / \\sqrt{d}` whatever the
    population (Brillinger 1986). The NCHS flags rates on fewer than 20 events
    (:data:`UNSTABLE_BELOW`) as unreliable.

    References
    ----------
    Brillinger, D. R. (1986). The natural variability of vital rates and associated
    statistics. *Biometrics*, 42(4), 693-734. https://doi.org/10.2307/2530689
    """
    e = np.asarray(counts, dtype=float).reshape(-1)
    out = np.full(e.shape, np.nan)
    positive = e > 0
    out[positive] = 1.0 / np.sqrt(e[positive])
    return out


def between_area_variance(counts: Any, population: Any) -> float:
    """The global method-of-moments between-area variance of the rates, *not* clamped.

    Parameters
    ----------
    counts, population : array-like of shape (n,)
        As for :func:`empirical_bayes`.

    Returns
    -------
    float
        :math:`\\sum b_i (r_i - m)^2 / \\sum b_i - m / \\bar b` in events per person
        squared (NaN without any population). Negative when the rates vary less than
        Poisson noise alone would make them; :func:`empirical_bayes` then uses 0.
    """
    e, b, valid = _arrays(counts, population)
    if not valid.any():
        return float("nan")
    ev, bv = e[valid], b[valid]
    m = ev.sum() / bv.sum()
    return float((bv * (ev / bv - m) ** 2).sum() / bv.sum() - m / bv.mean())


def empirical_bayes(counts: Any, population: Any, *, w: Any = None) -> np.ndarray:
    """Empirical Bayes smoothed rates per 100,000 (Marshall 1991), global or spatial.

    Parameters
    ----------
    counts : array-like of shape (n,)
        Events per unit (non-negative).
    population : array-like of shape (n,)
        Population at risk per unit. Units with a missing (NaN), zero or negative
        population get NaN and are left out of every mean and variance.
    w : libpysal.weights.W or spatial.SpatialWeights, optional
        Neighbours of the units, in the order of ``counts`` (``w.id_order``). Without it
        the rates shrink toward the overall rate (global EB); with it each rate shrinks
        toward the rate of its neighbourhood (spatial EB). Only the presence of a link
        counts (the weights are read as binary); ``w`` is not modified.

    Returns
    -------
    numpy.ndarray of shape (n,)
        Smoothed rates per 100,000.

    Notes
    -----
    With crude rates :math:`r_i = e_i / b_i`, a prior mean :math:`m` and variance
    :math:`v`, the smoothed rate is

    .. math::

        \\hat r_i = m + w_i (r_i - m), \\qquad w_i = \\frac{v}{v + m / b_i}.

    **Global** (``w=None``): :math:`m = \\sum e / \\sum b` and the method-of-moments
    between-area variance

    .. math::

        v = \\frac{\\sum_i b_i (r_i - m)^2}{\\sum_i b_i} - \\frac{m}{\\bar b},

    as esda's ``Empirical_Bayes`` computes them. **Spatial**: the same with sums over
    the neighbourhood :math:`N_i` (unit *i* and its neighbours, binary weights):
    :math:`m_i = \\sum_{N_i} e / \\sum_{N_i} b`,
    :math:`v_i = \\sum_{N_i} b_j (r_j - m_i)^2 / \\sum_{N_i} b - m_i / \\bar b_{N_i}`,
    as esda's ``Spatial_Empirical_Bayes``.

    A method-of-moments variance can be negative (the rates vary less than Poisson noise
    alone would make them). It is then set to 0 (Marshall 1991), so every rate becomes the
    prior mean. esda's spatial version clamps it; its aspatial ``Empirical_Bayes`` does
    not, and returns rates pushed *beyond* the mean. Where both :math:`v` and :math:`m`
    are 0 (no events at all) the smoothed rate is :math:`m = 0`.

    References
    ----------
    Marshall, R. J. (1991). Mapping disease and mortality rates using empirical Bayes
    estimators. *Journal of the Royal Statistical Society, Series C (Applied
    Statistics)*, 40(2), 283-294. https://doi.org/10.2307/2347593

    Anselin, L., Lozano-Gracia, N. and Koschinsky, J. (2006). *Rate transformations and
    smoothing*. Spatial Analysis Laboratory, University of Illinois, Urbana-Champaign.

    Examples
    --------
    >>> import numpy as np
    >>> np.round(empirical_bayes([2, 60, 5, 1], [10_000, 100_000, 20_000, 30_000]), 2)
    array([31.02, 58.47, 30.68, 12.83])
    """
    e, b, valid = _arrays(counts, population)
    out = np.full(e.shape, np.nan)
    if not valid.any():
        return out
    rate = np.zeros_like(e)
    rate[valid] = e[valid] / b[valid]
    if w is None:
        ev, bv, rv = e[valid], b[valid], rate[valid]
        m = ev.sum() / bv.sum()
        v = max(between_area_variance(ev, bv), 0.0)
        out[valid] = _shrink(rv, bv, np.full(rv.shape, m), np.full(rv.shape, v))
        return out * PER
    hood = _neighbourhoods(w, e.size, valid)
    rows, cols = hood.row, hood.col
    ones = np.ones(rows.size)
    n_hood = np.bincount(rows, weights=ones, minlength=e.size)
    e_hood = np.bincount(rows, weights=e[cols], minlength=e.size)
    b_hood = np.bincount(rows, weights=b[cols] * valid[cols], minlength=e.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = e_hood / b_hood
        spread = np.bincount(rows, weights=b[cols] * (rate[cols] - m[rows]) ** 2, minlength=e.size)
        v = np.maximum(spread / b_hood - m / (b_hood / n_hood), 0.0)
    out[valid] = _shrink(rate[valid], b[valid], m[valid], v[valid])
    return out * PER


def _shrink(rate: np.ndarray, b: np.ndarray, m: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``m + v / (v + m / b) * (rate - m)``; weight 0 where ``v`` and ``m`` are both 0."""
    denominator = v + m / b
    weight = np.zeros_like(rate)
    np.divide(v, denominator, out=weight, where=denominator > 0)
    return m + weight * (rate - m)


def _neighbourhoods(w: Any, n: int, valid: np.ndarray) -> sparse.coo_matrix:
    """Binary links among valid units plus each valid unit itself, as a COO matrix."""
    w = getattr(w, "w", w)  # a spatial.SpatialWeights holds the libpysal W
    try:
        matrix = sparse.csr_matrix(w.sparse, copy=True)
    except AttributeError:
        raise AnalysisError("w must be libpysal weights or spatial.SpatialWeights") from None
    if matrix.shape != (n, n):
        raise AnalysisError(f"weights on {matrix.shape[0]} units for {n} rates")
    matrix.data = np.ones_like(matrix.data)
    matrix.eliminate_zeros()
    keep = sparse.diags(valid.astype(float))
    hood = keep @ ((matrix + sparse.identity(n, format="csr")) != 0).astype(float) @ keep
    return sparse.coo_matrix(hood)
