"""Significance helpers shared by the local statistics: two-sided p, FDR, confidence bins."""

from __future__ import annotations

import numpy as np
from scipy import stats

from spatial import AnalysisError

__all__ = [
    "CONFIDENCE_LEVELS",
    "confidence_bins",
    "exact_pseudo_p",
    "fdr_mask",
    "pseudo_p",
    "resolved_seed",
    "two_sided_p",
    "validated_values",
]

#: ``(bin, alpha, critical |z|)`` from the strictest level down, as ArcGIS Pro's Gi_Bin:
#: 99 % (|z| > 2.5758), 95 % (|z| > 1.9600), 90 % (|z| > 1.6449).
CONFIDENCE_LEVELS: tuple[tuple[int, float, float], ...] = (
    (3, 0.01, 2.5758),
    (2, 0.05, 1.9600),
    (1, 0.10, 1.6449),
)


def two_sided_p(z: np.ndarray) -> np.ndarray:
    """Two-sided p-values of standard normal z-scores.

    Parameters
    ----------
    z : array_like of float, shape (n,)
        z-scores. NaN gives NaN.

    Returns
    -------
    numpy.ndarray of float, shape (n,)
        ``2 * (1 - Phi(|z|))``, computed as ``2 * norm.sf(|z|)`` to keep precision in
        the tail.

    Notes
    -----
    This is ArcGIS Pro's p-value field for Gi* and esda's ``2 * p_norm``.

    Examples
    --------
    >>> import numpy as np
    >>> two_sided_p(np.array([0.0, 1.959963984540054])).round(6)
    array([1.  , 0.05])
    """
    z = np.asarray(z, dtype=float)
    return 2.0 * stats.norm.sf(np.abs(z))


def fdr_mask(p: np.ndarray, alpha: float) -> np.ndarray:
    """Which tests the Benjamini-Hochberg procedure rejects at false discovery rate ``alpha``.

    Parameters
    ----------
    p : array_like of float, shape (n,)
        p-values. NaN values are never rejected and do not count among the tests.
    alpha : float
        The false discovery rate to control, in (0, 1).

    Returns
    -------
    numpy.ndarray of bool, shape (n,)
        True where the null hypothesis is rejected.

    Notes
    -----
    With the m finite p-values sorted, ``p_(1) <= ... <= p_(m)``, let k be the largest rank
    with ``p_(k) <= k * alpha / m``; every test with ``p <= p_(k)`` is rejected (none when no
    such k exists). This is the step-up procedure of Benjamini and Hochberg (1995), the one
    ArcGIS Pro applies for its "False Discovery Rate (FDR) correction". Unlike
    ``esda.fdr``, it does not fall back to the Bonferroni bound when all tests pass.

    References
    ----------
    Benjamini, Y. and Hochberg, Y. (1995). Controlling the false discovery rate: a practical
    and powerful approach to multiple testing. *Journal of the Royal Statistical Society B*,
    57(1), 289-300. https://doi.org/10.1111/j.2517-6161.1995.tb02031.x

    Examples
    --------
    >>> fdr_mask(np.array([0.001, 0.008, 0.039, 0.041, 0.6]), 0.05).tolist()
    [True, True, False, False, False]
    """
    if not 0.0 < alpha < 1.0:
        raise AnalysisError(f"alpha must lie in (0, 1); got {alpha!r}")
    p = np.asarray(p, dtype=float)
    finite = np.isfinite(p)
    mask = np.zeros(p.shape, dtype=bool)
    m = int(finite.sum())
    if m == 0:
        return mask
    ordered = np.sort(p[finite])
    passing = np.nonzero(ordered <= alpha * np.arange(1, m + 1) / m)[0]
    if passing.size == 0:
        return mask
    cutoff = ordered[passing[-1]]
    mask[finite] = p[finite] <= cutoff
    return mask


def confidence_bins(z: np.ndarray, p: np.ndarray, *, fdr: bool = False) -> np.ndarray:
    """ArcGIS Pro's confidence-level bins (Gi_Bin): -3 … 3.

    Parameters
    ----------
    z : array_like of float, shape (n,)
        z-scores; their sign gives the sign of the bin (hot > 0, cold < 0).
    p : array_like of float, shape (n,)
        Two-sided p-values of the same tests (used only when ``fdr`` is True).
    fdr : bool, default False
        Apply the Benjamini-Hochberg false discovery rate correction.

    Returns
    -------
    numpy.ndarray of int8, shape (n,)
        ``sign(z) * level``: level 3 where |z| > 2.5758 (99 %), 2 where |z| > 1.9600 (95 %),
        1 where |z| > 1.6449 (90 %), and 0 otherwise or where z is NaN.

    Notes
    -----
    Without FDR the level is read from |z| alone (equivalent to p < 0.01 / 0.05 / 0.10 for
    a two-sided normal p). With FDR, ``fdr_mask`` is run once per level on all ``p``
    (alpha = 0.01, 0.05, 0.10) and a unit gets the highest level L whose two conditions both
    hold: |z| > the critical value of L, and its p passes BH at the alpha of L. So a unit
    with |z| = 2.7 that fails BH at 0.01 but passes at 0.05 gets ±2, and a unit passing no
    level gets 0. ``|bin|`` with FDR is never larger than without. This is ArcGIS Pro's
    rule: "the critical p-value thresholds determining confidence levels are reduced";
    FDR changes only the bins, never z or p.

    References
    ----------
    Esri (2024). How Hot Spot Analysis (Getis-Ord Gi*) works. ArcGIS Pro tool reference,
    Spatial Statistics toolbox.

    Examples
    --------
    >>> confidence_bins(np.array([3.0, -2.0, 1.7, 0.5]), np.zeros(4)).tolist()
    [3, -2, 1, 0]
    """
    z = np.asarray(z, dtype=float)
    p = np.asarray(p, dtype=float)
    if z.shape != p.shape:
        raise AnalysisError(f"z and p differ in shape: {z.shape} and {p.shape}")
    abs_z = np.abs(np.nan_to_num(z, nan=0.0))
    level = np.zeros(z.shape, dtype=np.int8)
    for value, alpha, critical in reversed(CONFIDENCE_LEVELS):  # 1, 2, 3: higher overwrites
        passes = abs_z > critical
        if fdr:
            passes &= fdr_mask(p, alpha)
        level[passes] = value
    return (np.sign(np.nan_to_num(z, nan=0.0)).astype(np.int8) * level).astype(np.int8)


def validated_values(y: np.ndarray, n: int, statistic: str) -> np.ndarray:
    """A float copy of ``y`` checked for a local statistic on ``n`` units.

    Raises :class:`spatial.AnalysisError` when ``y`` is not one-dimensional, its length is
    not ``n``, a value is NaN or infinite, or all values are equal (no variation: every
    z-score would be undefined).
    """
    values = np.array(y, dtype=float, copy=True)
    if values.ndim == 2 and 1 in values.shape:
        values = values.ravel()
    if values.ndim != 1:
        raise AnalysisError(f"{statistic} needs one value per unit; got shape {values.shape}")
    if values.size != n:
        raise AnalysisError(f"{statistic}: {values.size} values for {n} units in the weights")
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise AnalysisError(f"{statistic}: {bad} value(s) are NaN or infinite")
    if n < 3:
        raise AnalysisError(f"{statistic} needs at least 3 units; got {n}")
    if np.ptp(values) == 0:
        raise AnalysisError(f"{statistic}: all {n} values are equal, there is no pattern to test")
    return values


def resolved_seed(seed: int | None, permutations: int) -> int | None:
    """The seed to hand to esda: ``seed`` checked, or a fresh one when None.

    Returns None when ``permutations`` is 0. A fresh seed is drawn from the operating
    system's entropy (``numpy.random.default_rng()``), never from numpy's global state,
    and is reported in the result so that the run can be repeated.
    """
    if not isinstance(permutations, int | np.integer) or permutations < 0:
        raise AnalysisError(f"permutations must be a non-negative integer; got {permutations!r}")
    if permutations == 0:
        return None
    if seed is None:
        return int(np.random.default_rng().integers(0, 2**31 - 1))
    if not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise AnalysisError(f"seed must be an integer in [0, 2**32); got {seed!r}")
    return int(seed)


def pseudo_p(count_larger: np.ndarray, permutations: int) -> np.ndarray:
    """esda's folded ("directed") pseudo p-value from a count, in float64.

    ``count_larger[i]`` is how many simulated statistics are >= the observed one; the
    smaller of it and ``permutations - count`` is kept, and p = (that + 1) /
    (permutations + 1).
    """
    larger = np.asarray(count_larger, dtype=np.int64).copy()
    low = (permutations - larger) < larger
    larger[low] = permutations - larger[low]
    return (larger + 1.0) / (permutations + 1.0)


def exact_pseudo_p(p_sim: np.ndarray, permutations: int) -> np.ndarray:
    """Undo the float32 rounding of esda's crand p-values.

    esda's ``crand`` stores ``(k + 1) / (permutations + 1)`` in float32; k is an integer,
    so rounding ``p * (permutations + 1)`` recovers it exactly (float32 has 24 bits of
    mantissa) and the float64 p is rebuilt from it.
    """
    k1 = np.rint(np.asarray(p_sim, dtype=np.float64) * (permutations + 1.0))
    return k1 / (permutations + 1.0)
