"""Emerging hot spot analysis: space-time Gi*, Mann-Kendall trends, ArcGIS Pro patterns.

The analysis follows ArcGIS Pro's *Emerging Hot Spot Analysis* (Space Time Pattern Mining
toolbox): a Getis-Ord Gi* z-score for every bin of a space-time cube, computed over a
space-time neighbourhood (the spatial neighbours of a unit, itself included, in the current
and the previous ``time_lag`` time steps); a Mann-Kendall trend test on each unit's series of
z-scores; and one category per unit taken from :data:`PATTERNS`, the single table that holds
the rule of every category.

Everything here is pure: arrays in, frozen dataclasses out, inputs never modified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse, stats

from spatial import AnalysisError
from spatial.inference import fdr_mask

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_TREND_ALPHA",
    "HIGH_SHARE",
    "PATTERNS",
    "EmergingResult",
    "Pattern",
    "SpaceTimeGi",
    "Trend",
    "classify",
    "emerging_hot_spots",
    "mann_kendall",
    "space_time_gi",
]

#: Significance level of a space-time Gi* bin. ArcGIS Pro counts a bin as a hot (cold) spot
#: when its Gi_Bin is +1..+3 (-1..-3), i.e. at 90 % confidence or more: two-sided p < 0.10.
DEFAULT_ALPHA = 0.10
#: Significance level of the Mann-Kendall trend of a unit's z-scores. ArcGIS's pattern
#: definitions say only "statistically significant" and its trend bins are reported at
#: 90/95/99 % confidence; we default to 95 % (p < 0.05) so that "intensifying" and
#: "diminishing" need a clear trend. Pass ``trend_alpha=0.10`` for ArcGIS's loosest reading.
DEFAULT_TREND_ALPHA = 0.05
#: "90 percent of the time-step intervals" in ArcGIS's definitions: share >= 0.9 is "high".
HIGH_SHARE = 0.9


# ------------------------------------------------------------------------------------------
# The pattern table
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """One row of the ArcGIS Pro emerging hot spot pattern table.

    Every condition is stated for the row's ``sign`` (+1 hot, -1 cold); ``None`` means the
    condition does not matter. A unit takes the first row of :data:`PATTERNS` whose
    conditions all hold.

    Attributes
    ----------
    code : int
        ArcGIS's ``CATEGORY`` code: 1 new … 8 historical for hot spots, the negatives for
        cold spots, 0 for no pattern.
    name : str
        ArcGIS's pattern name, lower case ("new hot spot").
    sign : int
        +1 for hot spot patterns, -1 for cold spot patterns, 0 for "no pattern detected".
    final : bool or None
        True: the final time step is a significant spot of this sign; False: it is not.
    share : {"high", "low"} or None
        Share of time steps that are significant spots of this sign: "high" is at least
        :data:`HIGH_SHARE` (90 %), "low" is less.
    final_run : tuple of (int, int or None) or None
        Minimum and maximum (None: unbounded) length of the uninterrupted run of spots of
        this sign that ends at the final time step.
    before_run : {"none", "some"} or None
        Whether spots of this sign occur before that final run.
    opposite : {"none", "some"} or None
        Whether significant spots of the opposite sign occur in any time step.
    trend : int or None
        Mann-Kendall trend of the z-scores relative to ``sign``: +1 the clustering
        intensifies (z rises for hot, falls for cold), -1 it weakens, 0 no significant trend.
    definition : str
        ArcGIS Pro's definition, paraphrased.
    """

    code: int
    name: str
    sign: int
    final: bool | None = None
    share: str | None = None
    final_run: tuple[int, int | None] | None = None
    before_run: str | None = None
    opposite: str | None = None
    trend: int | None = None
    definition: str = ""


def _hot_and_cold(code: int, name: str, definition: str, **rule: Any) -> tuple[Pattern, Pattern]:
    cold_definition = (
        definition.replace("hot spot", "cold spot")
        .replace("high counts", "low counts")
        .replace("@opposite", "hot spot")
    )
    definition = definition.replace("@opposite", "cold spot")
    return (
        Pattern(code, f"{name} hot spot", +1, definition=definition, **rule),
        Pattern(-code, f"{name} cold spot", -1, definition=cold_definition, **rule),
    )


_NEW = _hot_and_cold(
    1,
    "new",
    "A significant hot spot in the final time step that has never been a significant "
    "hot spot before (nor a significant @opposite: that would be oscillating).",
    final=True,
    final_run=(1, 1),
    before_run="none",
    opposite="none",
)
_CONSECUTIVE = _hot_and_cold(
    2,
    "consecutive",
    "A single uninterrupted run of at least two significant hot spot bins in the final "
    "time steps, never a significant hot spot before that run, and less than 90 % of all "
    "bins significant hot spots.",
    final=True,
    share="low",
    final_run=(2, None),
    before_run="none",
    opposite="none",
)
_INTENSIFYING = _hot_and_cold(
    3,
    "intensifying",
    "A significant hot spot for 90 % of the time steps, the final one included, whose "
    "clustering of high counts increases over time with a significant trend.",
    final=True,
    share="high",
    trend=+1,
)
_PERSISTENT = _hot_and_cold(
    4,
    "persistent",
    "A significant hot spot for 90 % of the time steps (the final one included: otherwise "
    "it is historical) with no significant trend in the intensity of clustering.",
    final=True,
    share="high",
    trend=0,
)
_DIMINISHING = _hot_and_cold(
    5,
    "diminishing",
    "A significant hot spot for 90 % of the time steps, the final one included, whose "
    "clustering decreases over time with a significant trend.",
    final=True,
    share="high",
    trend=-1,
)
_SPORADIC = _hot_and_cold(
    6,
    "sporadic",
    "A significant hot spot in the final time step with a history of being an on-again, "
    "off-again hot spot: less than 90 % of the time steps significant hot spots and none a "
    "significant @opposite.",
    final=True,
    share="low",
    before_run="some",
    opposite="none",
)
_OSCILLATING = _hot_and_cold(
    7,
    "oscillating",
    "A significant hot spot in the final time step that has been a significant "
    "@opposite in a prior time step; less than 90 % of the time steps significant hot spots.",
    final=True,
    share="low",
    opposite="some",
)
_HISTORICAL = _hot_and_cold(
    8,
    "historical",
    "The final time step is not a significant hot spot, but at least 90 % of the time "
    "steps have been.",
    final=False,
    share="high",
)

#: The ArcGIS Pro emerging hot spot pattern table, in evaluation order (first match wins).
#: Rules describing the final time step come first, hot then cold; "historical" comes after
#: them (a unit that is a significant cold spot now but was hot for 90 % of the time is
#: "oscillating cold spot", as in R's sfdep), and "no pattern detected" matches everything.
PATTERNS: tuple[Pattern, ...] = (
    *(pair[0] for pair in (_NEW, _CONSECUTIVE, _INTENSIFYING, _PERSISTENT, _DIMINISHING)),
    *(pair[0] for pair in (_SPORADIC, _OSCILLATING)),
    *(pair[1] for pair in (_NEW, _CONSECUTIVE, _INTENSIFYING, _PERSISTENT, _DIMINISHING)),
    *(pair[1] for pair in (_SPORADIC, _OSCILLATING)),
    *_HISTORICAL,
    Pattern(
        0,
        "no pattern detected",
        0,
        definition="Does not fall into any of the hot or cold spot patterns above.",
    ),
)


# ------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpaceTimeGi:
    """Space-time Gi* of every bin of a cube.

    Attributes
    ----------
    z : numpy.ndarray, shape (n_units, n_steps)
        Gi* z-score of each bin.
    p : numpy.ndarray, shape (n_units, n_steps)
        Two-sided p-value of ``z`` under the normal approximation.
    n_neighbours : numpy.ndarray, shape (n_units, n_steps)
        Number of bins in each bin's space-time neighbourhood, itself included.
    time_lag : int
        Number of previous time steps in the neighbourhood.
    """

    z: np.ndarray
    p: np.ndarray
    n_neighbours: np.ndarray
    time_lag: int


@dataclass(frozen=True)
class Trend:
    """Mann-Kendall trend test of each row of a 2-D array.

    Attributes
    ----------
    z : numpy.ndarray, shape (n_units,)
        Mann-Kendall z (continuity corrected, ties corrected).
    p : numpy.ndarray, shape (n_units,)
        Two-sided p-value.
    trend : numpy.ndarray of int, shape (n_units,)
        +1 significant upward trend, -1 downward, 0 none, at ``alpha``.
    tau : numpy.ndarray, shape (n_units,)
        Kendall's tau, ``s / (n (n - 1) / 2)``.
    s : numpy.ndarray, shape (n_units,)
        Mann-Kendall score.
    alpha : float
        Significance level used for ``trend``.
    """

    z: np.ndarray
    p: np.ndarray
    trend: np.ndarray
    tau: np.ndarray
    s: np.ndarray
    alpha: float


@dataclass(frozen=True)
class EmergingResult:
    """Emerging hot spot analysis of a space-time cube.

    Attributes
    ----------
    category : numpy.ndarray of str, shape (n_units,)
        Pattern name of each unit (a ``name`` of :data:`PATTERNS`).
    code : numpy.ndarray of int, shape (n_units,)
        ArcGIS ``CATEGORY`` code of each unit (-8..8).
    gi : SpaceTimeGi
        Per-bin z-scores and p-values.
    trend : Trend
        Mann-Kendall trend of each unit's z-scores.
    significant : numpy.ndarray of bool, shape (n_units, n_steps)
        Bins counted as significant (after FDR when requested).
    alpha, trend_alpha : float
        Significance levels used.
    fdr : bool
        Whether bin significance used the Benjamini-Hochberg false discovery rate.
    """

    category: np.ndarray
    code: np.ndarray
    gi: SpaceTimeGi
    trend: Trend
    significant: np.ndarray
    alpha: float
    trend_alpha: float
    fdr: bool

    @property
    def z(self) -> np.ndarray:
        """Per-bin Gi* z-scores, shape (n_units, n_steps)."""
        return self.gi.z

    @property
    def p(self) -> np.ndarray:
        """Per-bin two-sided p-values, shape (n_units, n_steps)."""
        return self.gi.p


# ------------------------------------------------------------------------------------------
# Space-time Gi*
# ------------------------------------------------------------------------------------------


def _binary_with_self(w: Any, n_units: int) -> sparse.csr_matrix:
    """Binary CSR copy of ``w`` (SpatialWeights, libpysal W or scipy sparse), diagonal 1."""
    # SpatialWeights and libpysal W both have .sparse (SpatialWeights: no W is built).
    matrix = w.sparse if hasattr(w, "sparse") else w
    if not sparse.issparse(matrix):
        raise AnalysisError("w must be a libpysal W or a scipy sparse matrix")
    matrix = sparse.csr_matrix(matrix, dtype=float, copy=True)
    if matrix.shape != (n_units, n_units):
        raise AnalysisError(
            f"the weights describe {matrix.shape[0]} units but the cube has {n_units} rows"
        )
    matrix.data = (matrix.data != 0).astype(float)
    matrix.setdiag(1.0)
    matrix.eliminate_zeros()
    return matrix


def _window_sum(values: np.ndarray, time_lag: int) -> np.ndarray:
    """Sum over the last ``time_lag + 1`` columns (fewer at the start of the series)."""
    csum = np.cumsum(values, axis=1)
    out = csum.copy()
    out[:, time_lag + 1 :] -= csum[:, : -(time_lag + 1)]
    return out


def space_time_gi(cube: np.ndarray, w: Any, *, time_lag: int = 1) -> SpaceTimeGi:
    """Getis-Ord Gi* of every bin of a space-time cube, ArcGIS Pro style.

    Parameters
    ----------
    cube : array_like, shape (n_units, n_steps)
        Counts (or values) of each unit in each time step, rows in the order of ``w``
        (``w.id_order`` for a libpysal W).
    w : SpatialWeights, libpysal.weights.W or scipy.sparse matrix
        Spatial neighbours of the units. Weights are made binary and each unit is its own
        neighbour (Gi*), whatever ``w`` holds; ``w`` itself is not modified.
    time_lag : int, default 1
        ArcGIS's *Neighborhood Time Step*: how many previous time steps belong to a bin's
        neighbourhood. 0 gives a Gi* per time slice.

    Returns
    -------
    SpaceTimeGi
        ``z``, two-sided ``p`` and the neighbourhood size of every bin.

    Notes
    -----
    The cube is treated as one set of ``n = n_units * n_steps`` bins. Bin ``(i, t)`` has the
    binary weight :math:`w_{(i,t),(j,s)} = 1` when ``j`` is ``i`` or a spatial neighbour of
    ``i`` and :math:`t - \\text{time\\_lag} \\le s \\le t` (ArcGIS's space-time neighbourhood:
    neighbours in the current and the previous time steps, never in future ones). With
    :math:`W_b = \\sum w` and :math:`S_{1b} = \\sum w^2 = W_b` (binary weights), the Gi*
    z-score of Getis and Ord (1992) and Ord and Getis (1995), as ArcGIS computes it, is

    .. math::

        z_b = \\frac{\\sum w x - \\bar{x} W_b}
                    {S \\sqrt{(n S_{1b} - W_b^2) / (n - 1)}},
        \\qquad \\bar{x} = \\frac{1}{n}\\sum x, \\quad S = \\sqrt{\\frac{1}{n}\\sum x^2 -
        \\bar{x}^2}

    with the mean and standard deviation taken over all bins of the cube, and
    :math:`p = 2\\,(1 - \\Phi(|z|))`. It equals ``esda.G_Local(..., transform="B",
    star=True)`` on the flattened space-time graph (checked in the tests), but is computed
    with one sparse product and a cumulative sum over time, so a 30,000 x 60 cube takes well
    under a second.

    References
    ----------
    Esri. How Emerging Hot Spot Analysis works. ArcGIS Pro documentation, Space Time Pattern
    Mining toolbox.
    https://pro.arcgis.com/en/pro-app/latest/tool-reference/space-time-pattern-mining/learnmoreemerging.htm

    Getis, A. and Ord, J. K. (1992). The analysis of spatial association by use of distance
    statistics. Geographical Analysis 24(3), 189-206. doi:10.1111/j.1538-4632.1992.tb00261.x

    Ord, J. K. and Getis, A. (1995). Local spatial autocorrelation statistics: distributional
    issues and an application. Geographical Analysis 27(4), 286-306.
    doi:10.1111/j.1538-4632.1995.tb00912.x
    """
    x = np.asarray(cube, dtype=float)
    if x.ndim != 2:
        raise AnalysisError(f"cube must be 2-D (units x time steps), got {x.ndim} dimensions")
    if not np.all(np.isfinite(x)):
        raise AnalysisError("cube holds missing or infinite values")
    if time_lag < 0 or int(time_lag) != time_lag:
        raise AnalysisError(f"time_lag must be a non-negative integer, got {time_lag}")
    time_lag = int(time_lag)
    n_units, n_steps = x.shape
    n = n_units * n_steps
    if n < 3:
        raise AnalysisError(f"the cube has {n} bins; space-time Gi* needs at least 3")
    a = _binary_with_self(w, n_units)

    mean = x.mean()
    std = np.sqrt((x**2).mean() - mean**2)
    if not std > 0:
        raise AnalysisError("every bin of the cube has the same value: Gi* is undefined")

    local_sum = _window_sum(np.asarray(a @ x), time_lag)
    k = np.asarray(a.sum(axis=1)).ravel()  # spatial neighbours, self included
    steps = np.minimum(np.arange(n_steps), time_lag) + 1  # time steps in the window
    weight = k[:, None] * steps[None, :]  # W_b = S1_b for binary weights
    denominator = std * np.sqrt((n * weight - weight**2) / (n - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (local_sum - mean * weight) / denominator
    z = np.where(denominator > 0, z, 0.0)
    p = 2.0 * stats.norm.sf(np.abs(z))
    return SpaceTimeGi(z=z, p=p, n_neighbours=weight.astype(int), time_lag=time_lag)


# ------------------------------------------------------------------------------------------
# Mann-Kendall
# ------------------------------------------------------------------------------------------


def mann_kendall(series_2d: np.ndarray, *, alpha: float = DEFAULT_TREND_ALPHA) -> Trend:
    """Mann-Kendall trend test of each row, vectorised.

    Parameters
    ----------
    series_2d : array_like, shape (n_units, n_steps)
        One time series per row, equally spaced, no missing values.
    alpha : float, default 0.05
        Significance level of ``trend``.

    Returns
    -------
    Trend
        ``z``, ``p``, ``trend`` (-1/0/1), ``tau`` and ``s`` per row.

    Notes
    -----
    The original test of Mann (1945) and Kendall (1975), with the tie correction, exactly as
    ``pymannkendall.original_test`` computes it (the tests compare both):

    .. math::

        s = \\sum_{k < j} \\operatorname{sgn}(x_j - x_k), \\quad
        \\operatorname{Var}(s) = \\frac{n(n-1)(2n+5) - \\sum_g t_g (t_g - 1)(2 t_g + 5)}{18},
        \\quad z = \\frac{s - \\operatorname{sgn}(s)}{\\sqrt{\\operatorname{Var}(s)}}

    where :math:`t_g` is the size of each group of tied values; ``p`` is two-sided and
    ``trend`` is ``sgn(z)`` where ``p < alpha``. ArcGIS Pro applies this test to each
    location's series of Gi* z-scores. Rows are processed in blocks with numpy instead of one
    Python call per unit, so 30,000 series of 60 steps take a fraction of a second.

    References
    ----------
    Mann, H. B. (1945). Nonparametric tests against trend. Econometrica 13(3), 245-259.
    doi:10.2307/1907187

    Kendall, M. G. (1975). Rank Correlation Methods. 4th ed. London: Charles Griffin.

    Hussain, M. and Mahmud, I. (2019). pyMannKendall: a python package for non parametric
    Mann Kendall family of trend tests. Journal of Open Source Software 4(39), 1556.
    doi:10.21105/joss.01556
    """
    x = np.asarray(series_2d, dtype=float)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise AnalysisError("series_2d must be a 2-D array (units x time steps)")
    if not np.all(np.isfinite(x)):
        raise AnalysisError("series_2d holds missing or infinite values")
    n_units, n = x.shape
    if n < 3:
        raise AnalysisError(f"the Mann-Kendall test needs at least 3 time steps, got {n}")

    s = np.zeros(n_units)
    ties = np.zeros(n_units)
    block = max(1, 4_000_000 // (n * n))
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    for start in range(0, n_units, block):
        xb = x[start : start + block]
        diff = xb[:, None, :] - xb[:, :, None]  # diff[u, k, j] = x_j - x_k
        s[start : start + block] = np.sign(diff)[:, upper].sum(axis=1)
        equal = (diff == 0).sum(axis=2)  # c_i: values equal to x_i, itself included
        # sum over tie groups of t (t-1)(2t+5) == sum over values of (c-1)(2c+5)
        ties[start : start + block] = ((equal - 1) * (2 * equal + 5)).sum(axis=1)
    var_s = (n * (n - 1) * (2 * n + 5) - ties) / 18.0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(var_s > 0, (s - np.sign(s)) / np.sqrt(var_s), 0.0)
    p = 2.0 * stats.norm.sf(np.abs(z))
    trend = np.where(p < alpha, np.sign(z), 0).astype(int)
    tau = s / (0.5 * n * (n - 1))
    return Trend(z=z, p=p, trend=trend, tau=tau, s=s, alpha=alpha)


# ------------------------------------------------------------------------------------------
# Classification
# ------------------------------------------------------------------------------------------


def _final_run(spots: np.ndarray) -> np.ndarray:
    """Length of the uninterrupted run of True that ends at the last column."""
    n_steps = spots.shape[1]
    misses = ~spots[:, ::-1]
    first_miss = np.where(misses.any(axis=1), misses.argmax(axis=1), n_steps)
    return first_miss


def _matches(pattern: Pattern, features: dict[int, dict[str, np.ndarray]]) -> np.ndarray:
    if pattern.sign == 0:
        return np.ones_like(features[1]["final"])
    f = features[pattern.sign]
    ok = np.ones_like(f["final"])
    if pattern.final is not None:
        ok &= f["final"] == pattern.final
    if pattern.share is not None:
        high = f["share"] >= HIGH_SHARE
        ok &= high if pattern.share == "high" else ~high
    if pattern.final_run is not None:
        low, high_run = pattern.final_run
        ok &= f["run"] >= low
        if high_run is not None:
            ok &= f["run"] <= high_run
    if pattern.before_run is not None:
        ok &= f["before"] if pattern.before_run == "some" else ~f["before"]
    if pattern.opposite is not None:
        other = features[-pattern.sign]["any"]
        ok &= other if pattern.opposite == "some" else ~other
    if pattern.trend is not None:
        ok &= f["trend"] == pattern.trend
    return ok


def _significant(p: np.ndarray, alpha: float, fdr: bool) -> np.ndarray:
    return fdr_mask(p, alpha) if fdr else p < alpha


def classify(
    z: np.ndarray,
    p: np.ndarray,
    trend_z: np.ndarray,
    trend_p: np.ndarray,
    *,
    alpha: float = DEFAULT_ALPHA,
    trend_alpha: float = DEFAULT_TREND_ALPHA,
    fdr: bool = False,
) -> np.ndarray:
    """Emerging hot spot category of each unit, following :data:`PATTERNS`.

    Parameters
    ----------
    z, p : array_like, shape (n_units, n_steps)
        Space-time Gi* z-scores and two-sided p-values of every bin.
    trend_z, trend_p : array_like, shape (n_units,)
        Mann-Kendall z and p of each unit's series of z-scores.
    alpha : float, default 0.10
        A bin is a hot (cold) spot when ``p < alpha`` and ``z > 0`` (``z < 0``): 90 %
        confidence as ArcGIS's Gi_Bin ±1..±3.
    trend_alpha : float, default 0.05
        The trend is significant when ``trend_p < trend_alpha``.
    fdr : bool, default False
        Use the Benjamini-Hochberg false discovery rate over all bins of the cube at
        ``alpha`` (:func:`spatial.inference.fdr_mask`) instead of ``p < alpha``. ArcGIS Pro
        applies an FDR correction to the space-time Gi* bins; set True to mirror it.

    Returns
    -------
    numpy.ndarray of str, shape (n_units,)
        The ``name`` of the first pattern of :data:`PATTERNS` whose rule holds.

    Notes
    -----
    For each unit and each sign (hot +1, cold -1) the rules use: whether the final step is a
    significant spot of that sign; the share of steps that are (``>= 0.9`` is "90 percent of
    the time-step intervals"); the length of the run of such spots ending at the final step;
    whether such spots occur before that run; whether spots of the opposite sign occur at
    all; and the sign of the significant Mann-Kendall trend of the z-scores (relative to the
    pattern's sign). ArcGIS's wording leaves two overlaps open, settled here by the order of
    :data:`PATTERNS`: "persistent" needs the final step to be a spot (else "historical"), and
    "new"/"consecutive" need no significant opposite spot before (else "oscillating"), as in
    R's sfdep.

    References
    ----------
    Esri. How Emerging Hot Spot Analysis works. ArcGIS Pro documentation.
    https://pro.arcgis.com/en/pro-app/latest/tool-reference/space-time-pattern-mining/learnmoreemerging.htm

    Parry, J. (2023). sfdep: Spatial Dependence for Simple Features. R package,
    emerging_hotspot_analysis(). https://github.com/JosiahParry/sfdep
    """
    z = np.asarray(z, dtype=float)
    p = np.asarray(p, dtype=float)
    trend_z = np.asarray(trend_z, dtype=float).ravel()
    trend_p = np.asarray(trend_p, dtype=float).ravel()
    if z.ndim != 2 or z.shape != p.shape:
        raise AnalysisError("z and p must be 2-D arrays of the same shape (units x steps)")
    if trend_z.shape != (z.shape[0],) or trend_p.shape != (z.shape[0],):
        raise AnalysisError("trend_z and trend_p need one value per unit (row of z)")
    significant = _significant(p, alpha, fdr)
    trend = np.where(trend_p < trend_alpha, np.sign(trend_z), 0).astype(int)
    return _classify_significant(z, significant, trend)[0]


def _classify_significant(
    z: np.ndarray, significant: np.ndarray, trend: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    n_units, n_steps = z.shape
    features: dict[int, dict[str, np.ndarray]] = {}
    for sign in (+1, -1):
        spots = significant & (np.sign(z) == sign)
        run = _final_run(spots)
        count = spots.sum(axis=1)
        features[sign] = {
            "final": spots[:, -1],
            "share": count / n_steps,
            "run": run,
            "before": count > run,
            "any": count > 0,
            "trend": trend * sign,
        }
    names = np.full(n_units, "", dtype=object)
    codes = np.zeros(n_units, dtype=int)
    pending = np.ones(n_units, dtype=bool)
    for pattern in PATTERNS:
        hit = pending & _matches(pattern, features)
        names[hit] = pattern.name
        codes[hit] = pattern.code
        pending &= ~hit
    return names.astype(str), codes


def emerging_hot_spots(
    cube: np.ndarray,
    w: Any,
    *,
    time_lag: int = 1,
    alpha: float = DEFAULT_ALPHA,
    trend_alpha: float = DEFAULT_TREND_ALPHA,
    fdr: bool = False,
) -> EmergingResult:
    """ArcGIS Pro's Emerging Hot Spot Analysis of a space-time cube.

    Parameters
    ----------
    cube : array_like, shape (n_units, n_steps)
        Counts per unit (rows, in the order of ``w``) and time step (columns, oldest first).
        Every unit takes part, zeros included.
    w : SpatialWeights, libpysal.weights.W or scipy.sparse matrix
        Spatial neighbours of the units (made binary, self included).
    time_lag : int, default 1
        ArcGIS's *Neighborhood Time Step*.
    alpha : float, default 0.10
        Significance of a bin (90 % confidence as ArcGIS).
    trend_alpha : float, default 0.05
        Significance of the Mann-Kendall trend.
    fdr : bool, default False
        Benjamini-Hochberg FDR over all bins (ArcGIS Pro applies one).

    Returns
    -------
    EmergingResult
        Category and code per unit, the per-bin z/p, the trend and the parameters.

    Notes
    -----
    Three steps, as ArcGIS Pro: :func:`space_time_gi` for every bin, :func:`mann_kendall`
    on each unit's series of z-scores, and :func:`classify` with :data:`PATTERNS`.

    References
    ----------
    Esri. How Emerging Hot Spot Analysis works. ArcGIS Pro documentation.
    https://pro.arcgis.com/en/pro-app/latest/tool-reference/space-time-pattern-mining/learnmoreemerging.htm
    """
    gi = space_time_gi(cube, w, time_lag=time_lag)
    if gi.z.shape[1] < 3:
        raise AnalysisError(
            f"emerging hot spot analysis needs at least 3 time steps, got {gi.z.shape[1]}"
        )
    trend = mann_kendall(gi.z, alpha=trend_alpha)
    significant = _significant(gi.p, alpha, fdr)
    names, codes = _classify_significant(gi.z, significant, trend.trend)
    return EmergingResult(
        category=names,
        code=codes,
        gi=gi,
        trend=trend,
        significant=significant,
        alpha=alpha,
        trend_alpha=trend_alpha,
        fdr=fdr,
    )
