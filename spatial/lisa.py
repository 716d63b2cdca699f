"""Local Moran's I (LISA) and global Moran's I, with esda / GeoDa conventions."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from libpysal.weights import W

from spatial import AnalysisError
from spatial.inference import fdr_mask, pseudo_p, resolved_seed, validated_values
from spatial.weights import SpatialWeights, plain_copy

__all__ = ["QUADRANT_LABELS", "LisaResult", "MoranResult", "global_moran", "local_moran"]

#: esda's quadrant codes (``geoda_quads=False``) and the labels used in results.
QUADRANT_LABELS = {1: "HH", 2: "LH", 3: "LL", 4: "HL"}
NOT_SIGNIFICANT = "not significant"
ISLAND = "island"

# Units per call of esda's permutation kernel: at most this many values are simulated
# and held at once (about 16 MB with 999 permutations), whatever n is.
_SIMULATED_VALUES_PER_CHUNK = 2_000_000


@dataclass(frozen=True)
class LisaResult:
    """Local Moran's I for every unit, in the order of the weights' ids.

    Attributes
    ----------
    i : numpy.ndarray of float, shape (n,)
        Local Moran's I (esda ``Is``; GeoDa's LISA value). spdep's ``Ii`` is
        ``i * n / (n - 1)``. 0 for islands.
    z_sim : numpy.ndarray of float, shape (n,), or None
        ``(i - mean) / sd`` of the i simulated under conditional permutation (esda
        ``z_sim``); None without permutations; NaN for islands.
    p_sim : numpy.ndarray of float, shape (n,), or None
        esda's folded pseudo p-value, ``(min(k, permutations - k) + 1) / (permutations +
        1)`` with k the number of simulated i >= the observed one; None without
        permutations; NaN for islands.
    quadrant : numpy.ndarray of int8, shape (n,)
        esda's Moran-scatterplot quadrant: 1 HH, 2 LH, 3 LL, 4 HL (value, spatial lag);
        0 for islands.
    label : numpy.ndarray of str, shape (n,)
        ``"HH"``, ``"LH"``, ``"LL"``, ``"HL"`` where significant, ``"not significant"``
        elsewhere, ``"island"`` for units without neighbours.
    significant : numpy.ndarray of bool, shape (n,)
        Where the label is a cluster or outlier type.
    seed : int or None
        Seed of the permutations (drawn when none was given); None without permutations.
    permutations : int
    alpha : float
    fdr : bool
    """

    i: np.ndarray
    z_sim: np.ndarray | None
    p_sim: np.ndarray | None
    quadrant: np.ndarray
    label: np.ndarray
    significant: np.ndarray
    seed: int | None = None
    permutations: int = 0
    alpha: float = 0.05
    fdr: bool = False


@dataclass(frozen=True)
class MoranResult:
    """Global Moran's I with its inference, named as esda's ``Moran`` attributes.

    Attributes
    ----------
    i : float
        Moran's I with row-standardised weights (esda ``I``).
    expected : float
        E[I] = -1 / (n - 1) (esda ``EI``).
    variance_norm : float
        Var[I] under the normality assumption (esda ``VI_norm``; spdep
        ``moran.test(randomisation = FALSE)``).
    variance_rand : float
        Var[I] under the randomisation assumption (esda ``VI_rand``; spdep
        ``moran.test``'s default; ArcGIS Pro's Spatial Autocorrelation).
    z_norm, z_rand : float
        (i - expected) / sqrt(variance_norm), and the same with variance_rand (esda
        ``z_norm``, ``z_rand``).
    p_norm, p_rand : float
        Two-sided normal p-values of z_norm and z_rand (esda ``p_norm``, ``p_rand`` with
        ``two_tailed=True``).
    p_sim : float or None
        Folded pseudo p-value from random permutations of y (esda ``p_sim``); None
        without permutations.
    seed : int or None
        Seed of the permutations; None without permutations.
    permutations : int
    """

    i: float
    expected: float
    variance_norm: float
    variance_rand: float
    z_norm: float
    z_rand: float
    p_norm: float
    p_rand: float
    p_sim: float | None
    seed: int | None = None
    permutations: int = 0


def local_moran(
    y: np.ndarray,
    w: SpatialWeights | W,
    *,
    permutations: int = 999,
    seed: int | None = None,
    alpha: float = 0.05,
    fdr: bool = False,
) -> LisaResult:
    """Local Moran's I with conditional permutation inference and cluster labels.

    Parameters
    ----------
    y : array_like of float, shape (n,)
        Value of each unit, aligned with the weights' ids; finite, not all equal.
    w : SpatialWeights or libpysal.weights.W
        Neighbours of each unit; row-standardised on a copy (never modified).
    permutations : int, default 999
        Conditional permutations for ``z_sim`` and ``p_sim``. With 0, no unit is labelled
        significant.
    seed : int, optional
        Seed of the permutations, in [0, 2**32). Drawn (and reported) when omitted.
    alpha : float, default 0.05
        Significance level of the labels.
    fdr : bool, default False
        Label as significant only the units whose ``p_sim`` passes Benjamini-Hochberg at
        ``alpha`` (islands left out of the count).

    Returns
    -------
    LisaResult

    Raises
    ------
    spatial.AnalysisError
        If ``y`` does not match the weights, holds NaN or infinite values, or has no
        variation.

    Notes
    -----
    esda / GeoDa convention (Anselin 1995): with ``z = (y - ȳ) / s`` (s with divisor n)
    and row-standardised ``w``, ``I_i = (n - 1) z_i Σ_j w_ij z_j / Σ_k z_k²`` — esda's
    ``Moran_Local(y, w, transformation="r")``; spdep divides by n instead of n - 1.
    Quadrants are esda's (1 HH, 2 LH, 3 LL, 4 HL).

    The permutations are esda's conditional randomisation: the same kernel
    (``esda.crand.compute_chunk`` with ``esda.moran._moran_local_crand``) and the same
    permuted ids for a given seed as ``Moran_Local(..., seed=seed)``, so ``p_sim`` and
    ``z_sim`` equal esda's with ``keep_simulations=True``. The kernel is called on chunks
    of units and each chunk's simulations are reduced to a mean, a standard deviation and
    a count before the next, so memory stays bounded (no n x permutations matrix).

    A unit is significant when ``p_sim < alpha`` (esda's ``get_cluster_labels``), or with
    ``fdr`` when BH at ``alpha`` rejects it. Islands get i = 0, quadrant 0, NaN p_sim and
    z_sim, and the label ``"island"``.

    References
    ----------
    Anselin, L. (1995). Local indicators of spatial association — LISA. *Geographical
    Analysis*, 27(2), 93-115. https://doi.org/10.1111/j.1538-4632.1995.tb00338.x

    Sokal, R. R., Oden, N. L. and Thomson, B. A. (1998). Local spatial autocorrelation in
    a biological model. *Geographical Analysis*, 30(4), 331-354.
    https://doi.org/10.1111/j.1538-4632.1998.tb00406.x
    """
    from esda.moran import Moran_Local

    if not 0.0 < alpha < 1.0:
        raise AnalysisError(f"alpha must lie in (0, 1); got {alpha!r}")
    w_r = plain_copy(w)
    values = validated_values(y, w_r.n, "Local Moran's I")
    seed = resolved_seed(seed, permutations)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # esda resets the sparse-efficiency filter, etc.
        ml = Moran_Local(values, w_r, transformation="r", permutations=0)
    i = np.asarray(ml.Is, dtype=float)
    quadrant = np.asarray(ml.q, dtype=np.int8)
    island = np.array([len(w_r.neighbors[k]) == 0 for k in w_r.id_order], dtype=bool)
    quadrant[island] = 0

    z_sim = p_sim = None
    significant = np.zeros(len(i), dtype=bool)
    if permutations:
        p_sim, z_sim = _conditional_permutations(ml.z, w_r, i, permutations, seed)
        p_sim[island] = np.nan
        z_sim[island] = np.nan
        significant = fdr_mask(p_sim, alpha) if fdr else np.nan_to_num(p_sim, nan=1.0) < alpha
    label = np.array([QUADRANT_LABELS.get(int(q), NOT_SIGNIFICANT) for q in quadrant], dtype=object)
    label[~significant] = NOT_SIGNIFICANT
    label[island] = ISLAND
    return LisaResult(
        i=i,
        z_sim=z_sim,
        p_sim=p_sim,
        quadrant=quadrant,
        label=label.astype(str),
        significant=significant & ~island,
        seed=seed,
        permutations=int(permutations),
        alpha=float(alpha),
        fdr=bool(fdr),
    )


def global_moran(
    y: np.ndarray,
    w: SpatialWeights | W,
    *,
    permutations: int = 999,
    seed: int | None = None,
) -> MoranResult:
    """Global Moran's I with row-standardised weights, and its inference under the
    normality and the randomisation assumptions and by permutation.

    Parameters
    ----------
    y : array_like of float, shape (n,)
        Value of each unit, aligned with the weights' ids; finite, not all equal; n >= 4.
    w : SpatialWeights or libpysal.weights.W
        Neighbours of each unit; row-standardised on a copy (never modified).
    permutations : int, default 999
        Random permutations of y for ``p_sim``; 0 for none.
    seed : int, optional
        Seed of the permutations. Drawn (and reported) when omitted.

    Returns
    -------
    MoranResult

    Notes
    -----
    ``I = (n / S0) Σ_ij w_ij z_i z_j / Σ_i z_i²`` with ``z = y - ȳ``, E[I] = -1/(n-1), and
    the variances under normality and under randomisation of Cliff and Ord (1981), from
    ``esda.Moran(y, w, transformation="r", two_tailed=True)``: I, E[I], ``VI_norm``,
    ``VI_rand``, ``z_norm``, ``z_rand``, ``p_norm``, ``p_rand``. The randomisation values
    equal spdep's ``moran.test(randomisation=TRUE)`` (Columbus: I = 0.500188557, Var =
    0.008689289, z = 5.5894), the normality ones ``moran.test(randomisation=FALSE)``
    (Columbus with ``COL.nb``: Var = 0.008779831, z = 5.6754); the tests pin them. The
    two z differ by the kurtosis of y: the randomisation variance uses it, the normality
    variance assumes y normal.

    The permutations reproduce esda's exactly (same draws as ``numpy.random.seed(seed)``
    followed by esda's ``Moran(..., permutations=...)``) but use a private
    ``numpy.random.RandomState(seed)``: numpy's global random state is never touched.

    References
    ----------
    Moran, P. A. P. (1950). Notes on continuous stochastic phenomena. *Biometrika*,
    37(1/2), 17-23. https://doi.org/10.2307/2332142

    Cliff, A. D. and Ord, J. K. (1981). *Spatial Processes: Models and Applications*.
    London: Pion.
    """
    from esda.moran import Moran

    w_r = plain_copy(w)
    values = validated_values(y, w_r.n, "Moran's I")
    if w_r.n < 4:
        raise AnalysisError(f"Moran's I needs at least 4 units; got {w_r.n}")
    seed = resolved_seed(seed, permutations)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mi = Moran(values, w_r, transformation="r", permutations=0, two_tailed=True)
    p_sim = None
    if permutations:
        # esda: z = y - mean(y); sim_k = n / s0 * (z_k · W z_k) / Σ z²; z_k a permutation.
        rng = np.random.RandomState(seed)
        z = values - values.mean()
        sparse = w_r.sparse
        n, s0, z2ss = len(z), w_r.s0, (z * z).sum()
        larger = 0
        observed = float(mi.I)
        for _ in range(permutations):
            zk = rng.permutation(z)
            larger += int(n / s0 * (zk * (sparse * zk)).sum() / z2ss >= observed)
        p_sim = float(pseudo_p(np.array([larger]), permutations)[0])
    return MoranResult(
        i=float(mi.I),
        expected=float(mi.EI),
        variance_norm=float(mi.VI_norm),
        variance_rand=float(mi.VI_rand),
        z_norm=float(mi.z_norm),
        z_rand=float(mi.z_rand),
        p_norm=float(mi.p_norm),
        p_rand=float(mi.p_rand),
        p_sim=p_sim,
        seed=seed,
        permutations=int(permutations),
    )


def _conditional_permutations(
    z: np.ndarray,
    w_r: W,
    observed: np.ndarray,
    permutations: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """esda's conditional randomisation of local Moran, chunk by chunk.

    Mirrors ``esda.crand.crand`` (serial branch) step for step — same sparse layout, same
    ``vec_permutations(max_card, n, permutations, seed)``, same kernel — but asks the
    kernel to keep each chunk's simulations and reduces them at once.

    Returns ``(p_sim, z_sim)``.
    """
    from esda.crand import compute_chunk, vec_permutations
    from esda.moran import _moran_local_crand

    n = len(z)
    adj = w_r.sparse.tocsr(copy=True)
    self_weights = adj.diagonal()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adj.setdiag(0)
        adj.eliminate_zeros()
    other_weights = adj.data.astype(z.dtype)
    cardinalities = np.asarray((adj != 0).sum(1)).ravel()
    offsets = np.concatenate([[0], np.cumsum(cardinalities)])
    max_card = int(cardinalities.max())
    scaling = np.float64((n - 1) / (z * z).sum())
    p_sim = np.empty(n, dtype=np.float64)
    z_sim = np.empty(n, dtype=np.float64)
    if max_card == 0:  # every unit an island: nothing to permute
        p_sim.fill(np.nan)
        z_sim.fill(np.nan)
        return p_sim, z_sim
    permuted_ids = vec_permutations(max_card, n, permutations, seed)
    chunk = max(1, _SIMULATED_VALUES_PER_CHUNK // permutations)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        _, sims = compute_chunk(
            start,
            z[start:stop],
            z,
            observed[start:stop],
            cardinalities[start:stop],
            self_weights[start:stop],
            other_weights[offsets[start] : offsets[stop]],
            permuted_ids,
            scaling,
            True,
            _moran_local_crand,
            0,
            "directed",
        )
        obs = observed[start:stop]
        p_sim[start:stop] = pseudo_p((sims >= obs[:, None]).sum(axis=1), permutations)
        with np.errstate(divide="ignore", invalid="ignore"):
            z_sim[start:stop] = (obs - sims.mean(axis=1)) / sims.std(axis=1)
    return p_sim, z_sim
