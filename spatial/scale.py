"""Support for optimized hot spot analysis: scale of analysis, enough data, outliers.

ArcGIS Pro's *Optimized Hot Spot Analysis* checks that there are enough incidents, sets
locational outliers aside, and picks the neighbourhood distance from an *Incremental Spatial
Autocorrelation* run: global Moran's I over increasing distance bands, taking the first
statistically significant peak of the z-score, else the distance with the largest z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse, stats
from scipy.spatial import cKDTree

from spatial import AnalysisError

__all__ = [
    "MIN_INCIDENTS",
    "MIN_UNITS",
    "ScaleChoice",
    "check_enough",
    "choose_scale",
    "incremental_spatial_autocorrelation",
    "locational_outliers",
]

#: ArcGIS's Optimized Hot Spot Analysis refuses fewer than 30 incidents or features.
MIN_INCIDENTS = 30
MIN_UNITS = 30


def _coordinates(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise AnalysisError(f"x and y differ in length ({x.size} and {y.size})")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise AnalysisError("coordinates must be finite")
    return np.column_stack([x, y])


def _nearest_distinct(xy: np.ndarray) -> np.ndarray:
    """Distance from each point to its nearest neighbour at a different location."""
    unique, inverse = np.unique(xy, axis=0, return_inverse=True)
    if unique.shape[0] < 2:
        raise AnalysisError("all features are at the same location")
    distance, _ = cKDTree(unique).query(unique, k=2)
    return distance[:, 1][inverse.ravel()]


def locational_outliers(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Features much farther from their nearest neighbour than the others.

    Parameters
    ----------
    x, y : array_like
        Feature coordinates in projected metres.

    Returns
    -------
    numpy.ndarray of bool
        True for locational outliers.

    Notes
    -----
    Following ArcGIS Pro's *Optimized Hot Spot Analysis*: with :math:`d_i` the distance from
    feature ``i`` to its nearest non-coincident neighbour (coincident features share a
    location and are not each other's neighbour), a feature is a locational outlier when

    .. math:: d_i > \\bar d + 3\\, s_d

    with :math:`\\bar d` and :math:`s_d` the mean and (population) standard deviation of the
    :math:`d_i` over all features. ArcGIS uses outliers to keep them from inflating the
    distances it tries; so does :func:`incremental_spatial_autocorrelation`.

    References
    ----------
    Esri. How Optimized Hot Spot Analysis works. ArcGIS Pro documentation.
    https://pro.arcgis.com/en/pro-app/latest/tool-reference/spatial-statistics/how-optimized-hot-spot-analysis-works.htm
    """
    xy = _coordinates(x, y)
    d = _nearest_distinct(xy)
    return d > d.mean() + 3.0 * d.std()


def check_enough(
    n_incidents: int,
    n_units: int,
    *,
    min_incidents: int = MIN_INCIDENTS,
    min_units: int = MIN_UNITS,
) -> None:
    """Refuse an analysis with too few incidents or units.

    Parameters
    ----------
    n_incidents : int
        Incidents selected by the filters.
    n_units : int
        Analysis units (cells, hexagons, areas) taking part.
    min_incidents, min_units : int, default 30
        ArcGIS's minimum for Optimized Hot Spot Analysis, and the rule of thumb for local
        statistics (DESIGN.md §5: local statistics need at least 30 units).

    Raises
    ------
    AnalysisError
        With a message naming how many are needed and how many there are.

    Examples
    --------
    >>> check_enough(12, 100)
    Traceback (most recent call last):
    ...
    spatial.AnalysisError: too few incidents for a hot spot analysis: at least 30 are needed, there are 12
    """  # noqa: E501
    problems = []
    if n_incidents < min_incidents:
        problems.append(
            f"too few incidents for a hot spot analysis: at least {min_incidents} are needed, "
            f"there are {n_incidents}"
        )
    if n_units < min_units:
        problems.append(
            f"too few analysis units for a hot spot analysis: at least {min_units} are "
            f"needed, there are {n_units} (use a finer grid, hexagons or smaller areas)"
        )
    if problems:
        raise AnalysisError("; ".join(problems))


def _moran_sparse(
    values: np.ndarray, binary: sparse.csr_matrix
) -> tuple[float, float, float, float]:
    """Global Moran's I with row-standardised weights; variance, z and p (randomisation)."""
    n = values.size
    z = values - values.mean()
    m2 = (z**2).sum()
    k = np.asarray(binary.sum(axis=1)).ravel()
    scale = np.divide(1.0, k, out=np.zeros(n), where=k > 0)
    w = sparse.diags(scale) @ binary
    s0 = float(w.sum())
    if s0 == 0:
        return math.nan, math.nan, math.nan, math.nan
    i = n / s0 * float(z @ (w @ z)) / m2
    sym = w + w.T
    s1 = 0.5 * float(sym.multiply(sym).sum())
    s2 = float(((np.asarray(w.sum(axis=1)).ravel() + np.asarray(w.sum(axis=0)).ravel()) ** 2).sum())
    expected = -1.0 / (n - 1)
    b2 = n * (z**4).sum() / m2**2
    numerator = n * ((n * n - 3 * n + 3) * s1 - n * s2 + 3 * s0 * s0) - b2 * (
        (n * n - n) * s1 - 2 * n * s2 + 6 * s0 * s0
    )
    variance = numerator / ((n - 1) * (n - 2) * (n - 3) * s0 * s0) - expected**2
    z_score = (i - expected) / math.sqrt(variance) if variance > 0 else math.nan
    p = 2.0 * stats.norm.sf(abs(z_score)) if math.isfinite(z_score) else math.nan
    return i, variance, z_score, p


def incremental_spatial_autocorrelation(
    x: np.ndarray,
    y: np.ndarray,
    values: np.ndarray,
    *,
    distances: np.ndarray | None = None,
    n_bands: int = 10,
    start: float | None = None,
    increment: float | None = None,
) -> pd.DataFrame:
    """Global Moran's I over increasing distance bands (ArcGIS's Incremental SA).

    Parameters
    ----------
    x, y : array_like
        Feature coordinates (e.g. cell centroids) in projected metres.
    values : array_like
        Value of each feature (e.g. incident count per cell).
    distances : array_like, optional
        Distance bands to evaluate, in metres; overrides ``start``/``increment``/``n_bands``.
    n_bands : int, default 10
        Number of bands (ArcGIS's *Number of Distance Bands*, default 10).
    start : float, optional
        First band. Default: the smallest distance giving every feature that is not a
        locational outlier at least one neighbour (ArcGIS's default beginning distance).
    increment : float, optional
        Step between bands. Default: the mean distance from each feature to its nearest
        neighbour (ArcGIS's default distance increment).

    Returns
    -------
    pandas.DataFrame
        One row per band: ``distance``, ``i`` (Moran's I), ``expected``, ``variance``, ``z``,
        ``p`` (two-sided) and ``neighbours`` (mean neighbours per feature) — the fields of
        :class:`spatial.lisa.MoranResult`, which gives the same values band by band.

    Notes
    -----
    For each band ``d``: binary weights :math:`b_{ij} = 1` when :math:`0 < d_{ij} \\le d`,
    row-standardised (ArcGIS's default), and

    .. math::

        I = \\frac{n}{S_0} \\frac{\\sum_i \\sum_j w_{ij} z_i z_j}{\\sum_i z_i^2},
        \\qquad E[I] = \\frac{-1}{n - 1}

    with the variance under the randomisation assumption of Cliff and Ord (1981), as
    ArcGIS's Global Moran's I, ``esda.Moran(...).z_rand`` and
    :func:`spatial.lisa.global_moran` compute it (checked against both in the tests);
    :math:`p = 2(1 - \\Phi(|z|))`. All pairs within the largest band are found once with a
    KD-tree and each band is a threshold of them (no W is built per band), so tens of
    thousands of features take seconds. Features with no neighbour in a band (only possible
    below the default start, or for locational outliers) get a zero row, as esda does with
    islands.

    References
    ----------
    Esri. Incremental Spatial Autocorrelation (Spatial Statistics). ArcGIS Pro documentation.
    https://pro.arcgis.com/en/pro-app/latest/tool-reference/spatial-statistics/incremental-spatial-autocorrelation.htm

    Cliff, A. D. and Ord, J. K. (1981). Spatial Processes: Models and Applications. London:
    Pion.

    Moran, P. A. P. (1950). Notes on continuous stochastic phenomena. Biometrika 37(1/2),
    17-23. doi:10.2307/2332142
    """
    xy = _coordinates(x, y)
    v = np.asarray(values, dtype=float).ravel()
    n = v.size
    if xy.shape[0] != n:
        raise AnalysisError(f"values has {n} entries for {xy.shape[0]} features")
    if n < 4:
        raise AnalysisError(f"Moran's I needs at least 4 features, got {n}")
    if not np.all(np.isfinite(v)) or np.ptp(v) == 0:
        raise AnalysisError("values must be finite and not all equal")
    if distances is None:
        if n_bands < 1:
            raise AnalysisError(f"n_bands must be at least 1, got {n_bands}")
        nearest = _nearest_distinct(xy)
        outliers = nearest > nearest.mean() + 3.0 * nearest.std()
        if start is None:
            start = float(nearest[~outliers].max())
        if increment is None:
            increment = float(nearest.mean())
        distances = start + increment * np.arange(n_bands)
    bands = np.asarray(distances, dtype=float).ravel()
    if bands.size == 0 or np.any(~np.isfinite(bands)) or np.any(bands <= 0):
        raise AnalysisError("distances must be positive and finite")
    bands = np.sort(bands)
    tolerance = 1e-9 * max(1.0, float(bands[-1]))
    pairs = cKDTree(xy).query_pairs(float(bands[-1]) + tolerance, output_type="ndarray")
    length = np.hypot(*(xy[pairs[:, 0]] - xy[pairs[:, 1]]).T) if pairs.size else np.zeros(0)
    rows = []
    for band in bands:
        keep = length <= band + tolerance
        i_idx, j_idx = pairs[keep, 0], pairs[keep, 1]
        data = np.ones(2 * i_idx.size)
        binary = sparse.csr_matrix(
            (data, (np.concatenate([i_idx, j_idx]), np.concatenate([j_idx, i_idx]))),
            shape=(n, n),
        )
        moran_i, variance, z, p = _moran_sparse(v, binary)
        rows.append(
            {
                "distance": float(band),
                "i": moran_i,
                "expected": -1.0 / (n - 1),
                "variance": variance,
                "z": z,
                "p": p,
                "neighbours": 2.0 * i_idx.size / n,
            }
        )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class ScaleChoice:
    """The distance band chosen for a hot spot analysis.

    Attributes
    ----------
    distance : float
        Chosen distance band in metres.
    reason : str
        "first peak" (first statistically significant peak of z) or "maximum z".
    z, p : float
        Moran's I z-score and p-value at that distance.
    significant : bool
        Whether ``p < alpha`` at that distance.
    """

    distance: float
    reason: str
    z: float
    p: float
    significant: bool


def choose_scale(table: pd.DataFrame, *, alpha: float = 0.05) -> ScaleChoice:
    """Pick the distance band of an incremental spatial autocorrelation table.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`incremental_spatial_autocorrelation` (columns ``distance``, ``z``,
        ``p``), in increasing distance.
    alpha : float, default 0.05
        A peak must have ``p < alpha``.

    Returns
    -------
    ScaleChoice
        The first significant peak, else the distance of the largest z.

    Notes
    -----
    A peak is a band whose z-score is larger than both the previous and the next band's, so
    the first and last bands are never peaks (ArcGIS reports the first and the maximum peak
    the same way). Optimized Hot Spot Analysis uses the first statistically significant peak;
    when there is none we take the band with the largest z (``reason="maximum z"``), and
    ``significant`` tells whether even that one is significant.

    References
    ----------
    Esri. Incremental Spatial Autocorrelation (Spatial Statistics); How Optimized Hot Spot
    Analysis works. ArcGIS Pro documentation.
    https://pro.arcgis.com/en/pro-app/latest/tool-reference/spatial-statistics/incremental-spatial-autocorrelation.htm
    """
    missing = {"distance", "z", "p"} - set(table.columns)
    if missing:
        raise AnalysisError(f"the table lacks the columns {sorted(missing)}")
    ordered = table.sort_values("distance", ignore_index=True)
    z = ordered["z"].to_numpy(dtype=float)
    p = ordered["p"].to_numpy(dtype=float)
    distance = ordered["distance"].to_numpy(dtype=float)
    if not np.isfinite(z).any():
        raise AnalysisError("no distance band gave a Moran's I z-score")
    for k in range(1, z.size - 1):
        if z[k] > z[k - 1] and z[k] > z[k + 1] and p[k] < alpha:
            return ScaleChoice(float(distance[k]), "first peak", float(z[k]), float(p[k]), True)
    k = int(np.nanargmax(z))
    return ScaleChoice(
        float(distance[k]), "maximum z", float(z[k]), float(p[k]), bool(p[k] < alpha)
    )
