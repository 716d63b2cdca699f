"""Multiple-systems estimation: how many deaths did every agency miss?

Two lists
    Chapman's nearly unbiased form of the Lincoln-Petersen estimator,
    N = (n1 + 1)(n2 + 1) / (m + 1) - 1, with Seber's (1970) variance
    var = (n1 + 1)(n2 + 1)(n1 - m)(n2 - m) / ((m + 1)^2 (m + 2)). The interval is Chao's
    (1987) log-normal one on the number missed f0 = N - n (n the deaths seen):
    [n + f0 / C, n + f0 * C], C = exp(z * sqrt(log(1 + var / f0^2))), which never falls
    below the deaths seen (a normal interval can).
Three lists
    Poisson log-linear models on the 7 observed cells of the 2^3 table (Fienberg 1972):
    main effects (independence) plus any subset of the two-way interactions, fitted with
    statsmodels' GLM; the missing cell (seen by none) is exp(intercept). The model is chosen
    by BIC (log of the deaths seen as the sample size: Rcapture's ``closedpMS`` default) or
    AIC. With all three interactions the model has as many parameters as cells and
    reproduces the closed form z000 = z111 z100 z010 z001 / (z110 z101 z011) (no three-way
    interaction, an assumption the data cannot test). The interval is the profile
    likelihood one (Cormack 1992; Rcapture's ``closedpCI``): the N whose profile multinomial
    log-likelihood lies within chi2(1, 1 - alpha) / 2 of the maximum.

The estimates assume a closed population (one period), perfect linkage (hence after the
analysts' review), and for two lists independent sources; heterogeneity (deaths easier to
see for every agency, e.g. in Belize City) biases them down. Present them as an order of
magnitude with their interval, never as a count.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy.optimize import brentq
from scipy.special import gammaln
from scipy.stats import chi2, norm

from linkage.model import SOURCES, LinkageInputError

PATTERNS_3 = ("100", "010", "001", "110", "101", "011", "111")
_PAIRS = ((0, 1), (0, 2), (1, 2))


@dataclass(frozen=True)
class MseEstimate:
    """A multiple-systems estimate of the total, with its interval and how it was made."""

    observed: int  # deaths seen by at least one list
    missing: float  # estimated deaths seen by none
    total: float  # observed + missing
    lower: float
    upper: float
    model: str  # "Chapman", "independence", "[12,13]" ...
    method: str  # how the interval was computed
    alpha: float = 0.05
    criterion: str | None = None
    models: list[dict[str, Any]] = field(default_factory=list)  # every model tried

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form for the service (an unbounded limit is None: JSON has no inf)."""
        return {
            "observed": self.observed,
            "missing": self.missing,
            "total": self.total,
            "lower": _finite(self.lower),
            "upper": _finite(self.upper),
            "model": self.model,
            "method": self.method,
            "alpha": self.alpha,
            "criterion": self.criterion,
            "models": self.models,
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def chapman(n1: int, n2: int, m: int, *, alpha: float = 0.05) -> MseEstimate:
    """Two-list estimate: Chapman's estimator, Seber's variance, Chao's log-normal interval.

    ``n1``, ``n2``: deaths on each list; ``m``: deaths on both.
    """
    if min(n1, n2, m) < 0 or m > min(n1, n2):
        raise LinkageInputError("need 0 <= m <= min(n1, n2)")
    observed = n1 + n2 - m
    total = (n1 + 1) * (n2 + 1) / (m + 1) - 1
    var = (n1 + 1) * (n2 + 1) * (n1 - m) * (n2 - m) / ((m + 1) ** 2 * (m + 2))
    f0 = total - observed
    if f0 <= 0 or var <= 0:
        lower = upper = total
    else:
        c = math.exp(norm.ppf(1 - alpha / 2) * math.sqrt(math.log(1 + var / f0**2)))
        lower, upper = observed + f0 / c, observed + f0 * c
    return MseEstimate(
        observed=observed,
        missing=f0,
        total=total,
        lower=lower,
        upper=upper,
        model="Chapman",
        method="Seber variance, log-normal interval (Chao 1987)",
        alpha=alpha,
        models=[{"model": "Chapman", "total": total, "se": math.sqrt(var)}],
    )


def _design(interactions: tuple[tuple[int, int], ...], patterns: list[str]) -> np.ndarray:
    x = np.array([[int(c) for c in p] for p in patterns], dtype=float)
    cols = [np.ones(len(patterns)), x[:, 0], x[:, 1], x[:, 2]]
    cols += [x[:, i] * x[:, j] for i, j in interactions]
    return np.column_stack(cols)


def _name(interactions: tuple[tuple[int, int], ...]) -> str:
    if not interactions:
        return "independence"
    return "[" + ",".join(f"{i + 1}{j + 1}" for i, j in interactions) + "]"


def _fit(y: np.ndarray, x: np.ndarray) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-integer counts in the profile: intended
        return sm.GLM(y, x, family=sm.families.Poisson()).fit()


def _cells_vector(cells: dict[str, int]) -> np.ndarray:
    """The 7 observed cells in PATTERNS_3 order, checked for a three-list estimate."""
    unknown = set(cells) - set(PATTERNS_3)
    if unknown:
        raise LinkageInputError(f"unknown capture patterns: {sorted(unknown)}")
    y = np.array([float(cells.get(p, 0)) for p in PATTERNS_3])
    if (y < 0).any():
        raise LinkageInputError("cell counts must be >= 0")
    if y.sum() == 0:
        raise LinkageInputError("no deaths on any list")
    on_list = [sum(n for p, n in zip(PATTERNS_3, y, strict=True) if p[j] == "1") for j in range(3)]
    if min(on_list) == 0:
        raise LinkageInputError("every list needs at least one death for a three-list estimate")
    if y[3:].sum() == 0:
        raise LinkageInputError("no death is on two lists: the lists do not overlap")
    return y


def loglinear(cells: dict[str, int], *, alpha: float = 0.05, criterion: str = "bic") -> MseEstimate:
    """Three-list estimate from the 7 observed cells (``"110"``: on lists 1 and 2, not 3).

    Every hierarchical model from independence to all two-way interactions is fitted; the
    one with the smallest ``criterion`` (``bic`` or ``aic``) gives the estimate and its
    profile likelihood interval. Models whose missing cell cannot be estimated (an empty
    cell they need) are skipped.
    """
    if criterion not in ("aic", "bic"):
        raise LinkageInputError("criterion must be aic or bic")
    y = _cells_vector(cells)
    observed = int(y.sum())
    tried = []
    for k in range(4):
        for inter in itertools.combinations(_PAIRS, k):
            x = _design(inter, list(PATTERNS_3))
            try:
                res = _fit(y, x)
            except (ValueError, np.linalg.LinAlgError):
                continue
            missing = float(np.exp(res.params[0]))
            if not np.isfinite(missing) or missing > 1e9:
                continue
            n_params = x.shape[1]
            tried.append(
                {
                    "model": _name(inter),
                    "interactions": inter,
                    "missing": missing,
                    "total": observed + missing,
                    "deviance": float(res.deviance),
                    "df": len(y) - n_params,
                    "aic": float(2 * n_params - 2 * res.llf),
                    "bic": float(n_params * math.log(observed) - 2 * res.llf),
                }
            )
    if not tried:
        raise LinkageInputError("no log-linear model could be fitted to these cells")
    best = min(tried, key=lambda m: m[criterion])
    lower, upper = _profile_interval(y, best["interactions"], best["missing"], alpha)
    models = [{k: v for k, v in m.items() if k != "interactions"} for m in tried]
    return MseEstimate(
        observed=observed,
        missing=best["missing"],
        total=best["total"],
        lower=lower,
        upper=upper,
        model=best["model"],
        method="profile likelihood (Cormack 1992)",
        alpha=alpha,
        criterion=criterion,
        models=models,
    )


def _profile_loglik(y: np.ndarray, x_full: np.ndarray, z0: float) -> float:
    """Multinomial log-likelihood of N = n + z0, the model refitted with z0 as the 8th cell."""
    counts = np.concatenate([[z0], y])
    n_total = counts.sum()
    res = _fit(counts, x_full)
    p = np.clip(res.fittedvalues / res.fittedvalues.sum(), 1e-300, None)
    return float(gammaln(n_total + 1) - gammaln(counts + 1).sum() + (counts * np.log(p)).sum())


def _profile_interval(
    y: np.ndarray, inter: tuple[tuple[int, int], ...], z0_hat: float, alpha: float
) -> tuple[float, float]:
    observed = y.sum()
    x_full = _design(inter, ["000", *PATTERNS_3])
    z_grid = np.unique(np.concatenate([[0.0], np.geomspace(0.5, 1e3 * (z0_hat + observed), 200)]))
    z_grid = np.sort(np.append(z_grid, z0_hat))
    profile = np.array([_profile_loglik(y, x_full, z) for z in z_grid])
    peak = int(np.argmax(profile))
    cut = profile[peak] - chi2.ppf(1 - alpha, 1) / 2

    def gap(z: float) -> float:
        return _profile_loglik(y, x_full, z) - cut

    lower_z = 0.0
    below = np.flatnonzero(profile[:peak] < cut)
    if len(below):
        lower_z = brentq(gap, z_grid[below[-1]], z_grid[peak])
    above = np.flatnonzero(profile[peak:] < cut)
    upper_z = math.inf
    if len(above):
        upper_z = brentq(gap, z_grid[peak], z_grid[peak + above[0]])
    return float(observed + lower_z), float(observed + upper_z)


def overlap_cells(consolidated: pd.DataFrame, lists: tuple[str, ...] = SOURCES) -> dict[str, int]:
    """Capture-pattern counts from consolidated deaths (``sources`` column, ``a+b`` form).

    Pattern characters follow ``lists``: with the default order, ``"101"`` counts deaths
    seen by the police and the health registry but not the forensic service.
    """
    if "sources" not in consolidated.columns:
        raise LinkageInputError("consolidated deaths need a sources column")
    cells: dict[str, int] = {}
    for sources in consolidated["sources"]:
        seen = set(str(sources).split("+"))
        pattern = "".join("1" if s in seen else "0" for s in lists)
        if "1" in pattern:
            cells[pattern] = cells.get(pattern, 0) + 1
    return cells
