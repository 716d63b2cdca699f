"""Farrington flexible (Noufaily et al. 2013), as R surveillance's farringtonFlexible.

Matches ``surveillance::farringtonFlexible`` of R surveillance 1.20 (checked against
1.20.3) for series indexed by period (R's sts without dates, ``epochAsDate = FALSE``:
the same week one year earlier is ``freq`` periods back). For each evaluated period t:

1. Reference data: the windows ``t - j*freq - w .. t - j*freq + w`` for j = 1..b and
   ``t - w .. t``, and with ``no_periods > 1`` the rest of each past year cut into
   ``no_periods - 1`` seasonal blocks; the last ``past_weeks_not_included`` periods
   (default w) and t itself are left out.
2. A quasi-Poisson GLM (statsmodels, started and stopped as R's glm.fit)
   ``y ~ 1 [+ t] [+ offset(log population)] [+ block]``; dispersion
   ``phi = max(Pearson chi2 / df, 1)``. Past outbreaks are down-weighted: observations
   whose Anscombe residual exceeds ``weights_threshold`` get weight ``gamma s^-2``.
3. The trend stays only if its p-value is below ``p_threshold_trend``, b >= 3 and the
   trend prediction does not exceed the largest reference count.
4. Threshold: "delta" (Farrington 1996: normal approximation on the ``powertrans``
   scale, with the prediction's variance), "nbPlugin" (negative binomial quantile with
   mean ``exp(eta)`` and dispersion phi) or "muan" (the same at the upper
   ``1 - alpha`` quantile of the mean).
5. Alarm when the score exceeds 1, the count is not 0, and the last ``limit54[1]``
   periods hold at least ``limit54[0]`` cases (else the period is "too few cases").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import nbinom, norm, poisson
from scipy.stats import t as student_t

from surveillance import _glm
from surveillance.series import (
    NO_CONVERGENCE,
    TOO_FEW_CASES,
    TOO_LITTLE_HISTORY,
    DetectorResult,
    as_counts,
    evaluation_range,
)

__all__ = ["farrington_flexible", "threshold_farrington", "threshold_noufaily"]

_POWERS = {"none": 1.0, "1/2": 0.5, "2/3": 2.0 / 3.0}


@dataclass(frozen=True)
class _Options:
    b: int
    w: int
    reweight: bool
    weights_threshold: float
    alpha: float
    trend: bool
    p_threshold_trend: float
    limit54: tuple[int, int]
    powertrans: str
    population_offset: bool
    no_periods: int
    past_weeks_not_included: int
    threshold_method: str


def _r_colon(a: int, b: int) -> np.ndarray:
    """R's ``a:b`` (descending when b < a)."""
    return np.arange(a, b + 1) if b >= a else np.arange(a, b - 1, -1)


def _blocks(n: int, k1: int, freq: int, o: _Options) -> np.ndarray:
    """R's ``blocks``: the seasonal block (1..p) of each period, NaN outside (1-based k1).

    Returns an array of length n + 1 indexed by R's 1-based positions (slot 0 unused).
    """
    p = o.no_periods
    factors = np.full(n + 1, np.nan)
    factors[k1 - o.w : k1 + 1] = p
    ref_weeks = [k1 - j * freq for j in range(o.b + 1)]
    for i in range(1, o.b + 1):
        ref = ref_weeks[i]
        factors[ref - o.w : ref + o.w + 1] = p
        if p == 1:
            continue
        period = ref_weeks[i - 1] - 2 * o.w - 1 - ref
        if period < p - (2 * o.w + 1):
            raise ValueError("no_periods is too large for the window w")
        lengths = np.full(p - 1, period // (p - 1))
        lengths[: period % (p - 1)] += 1
        cum = np.concatenate([[0], np.cumsum(lengths)])
        for j in range(1, p):
            # R assigns with a:b, which runs backwards for empty blocks
            factors[_r_colon(ref + o.w + 1 + cum[j - 1], ref + o.w + cum[j])] = j
    return factors


def _design(wtime, groups, levels, time_trend: bool, factors: bool) -> np.ndarray:
    """Model matrix of ``response ~ 1 [+ wtime] [+ seasgroups]`` (treatment contrasts)."""
    cols = [np.ones(len(wtime))]
    if time_trend:
        cols.append(np.asarray(wtime, dtype=float))
    if factors:
        cols += [(groups == lev).astype(float) for lev in levels[1:]]
    return np.column_stack(cols)


@dataclass
class _Data:
    response: np.ndarray
    wtime: np.ndarray
    groups: np.ndarray
    levels: np.ndarray
    offset: np.ndarray | None


def _data(y, pop, k1: int, freq: int, o: _Options) -> _Data:
    """R's ``algo.farrington.data.glm`` for 1-based period k1."""
    n = len(y)
    blocks = _blocks(n, k1, freq, o)
    ids = blocks.copy()
    ids[max(k1 - o.past_weeks_not_included, 0) : k1 + 1] = np.nan
    pos = np.nonzero(~np.isnan(ids))[0]  # 1-based positions
    pos = pos[~np.isnan(y[pos - 1])]
    groups = blocks[pos]
    offset = np.log(pop[pos - 1]) if o.population_offset else None
    return _Data(y[pos - 1], pos.astype(float), groups, np.unique(groups), offset)


@dataclass
class _Fit:
    res: object  # statsmodels GLMResults
    phi: float  # max(dispersion, 1) of the final fit
    time_trend: bool  # whether the fit has the wtime term
    dispersion: float  # what R's summary.glm / predict.glm use afterwards (see _fit)


def _fit(d: _Data, time_trend: bool, o: _Options) -> _Fit | None:
    """R's ``algo.farrington.fitGLM.flexible``; None if no fit converged.

    R then replaces the model's IRLS working weights by the down-weighting weights
    (``model$weights <- omega``), so the ``summary.glm`` and ``predict.glm`` that follow
    (trend p-value, standard error of the prediction) use the dispersion
    ``sum(omega (y - mu)^2 / mu^2) / df`` rather than phi. Kept here, to equal R.
    """
    factors = o.no_periods != 1
    x = _design(d.wtime, d.groups, d.levels, time_trend, factors)
    res = _glm.fit(d.response, x, _glm.poisson_family(), offset=d.offset)
    if not res.converged:
        if not time_trend:
            return None
        time_trend = False
        x = _design(d.wtime, d.groups, d.levels, False, factors)
        res = _glm.fit(d.response, x, _glm.poisson_family(), offset=d.offset)
        if not res.converged:
            return None
    phi = max(_glm.r_dispersion(res), 1.0)
    if not o.reweight:
        return _Fit(res, phi, time_trend, _glm.r_dispersion(res))
    s = _anscombe(d.response, res.mu, _glm.r_hatvalues(res), phi)
    omega = _weights(s, o.weights_threshold)
    res = _glm.fit(d.response, x, _glm.poisson_family(), offset=d.offset, var_weights=omega)
    phi = max(_glm.r_dispersion(res), 1.0)
    dispersion = float(np.sum(omega * ((d.response - res.mu) / res.mu) ** 2) / res.df_resid)
    return _Fit(res, phi, time_trend, dispersion)


def _anscombe(y, mu, hat, phi) -> np.ndarray:
    """R's ``anscombe.residuals``: Anscombe residuals scaled by sqrt(phi (1 - h))."""
    a = 1.5 * (y ** (2 / 3) * mu ** (-1 / 6) - mu**0.5)
    return a / np.sqrt(phi * (1 - hat))


def _weights(s: np.ndarray, threshold: float) -> np.ndarray:
    """R's ``algo.farrington.assign.weights``: gamma s^-2 above the threshold, gamma below."""
    high = s > threshold
    with np.errstate(divide="ignore"):
        inv = s**-2.0
    gamma = len(s) / np.sum(np.where(high, inv, 1.0))
    return np.where(high, gamma * inv, gamma)


def _predict(f: _Fit, d: _Data, k1: int, pop_now: float, link: bool) -> tuple[float, float]:
    """Prediction at period k1 and its standard error (R's predict.glm, se.fit)."""
    res = f.res
    factors = len(res.params) > (2 if f.time_trend else 1)  # block dummies in the model
    x0 = _design([k1], np.array([d.levels[-1]]), d.levels, f.time_trend, factors)[0]
    eta = float(x0 @ res.params) + (np.log(pop_now) if d.offset is not None else 0.0)
    se = float(np.sqrt(x0 @ _glm.r_cov(res, f.dispersion) @ x0))
    if link:
        return eta, se
    mu = np.exp(eta)
    return mu, se * mu


def _trend_pvalue(f: _Fit) -> float:
    """p-value of the wtime coefficient (t test on the residual df, as summary.glm)."""
    tval = f.res.params[1] / np.sqrt(_glm.r_cov(f.res, f.dispersion)[1, 1])
    return float(2 * student_t.sf(abs(tval), f.res.df_resid))


def _final_model(d: _Data, k1: int, pop_now: float, o: _Options):
    """R's ``algo.farrington.glm``: (prediction, se, trend kept, phi) or None."""
    f = _fit(d, o.trend, o)
    if f is None:
        return None
    do_trend = False
    if f.time_trend:
        mu, _ = _predict(f, d, k1, pop_now, link=False)
        do_trend = o.b >= 3 and _trend_pvalue(f) < o.p_threshold_trend and mu <= d.response.max()
        if not do_trend:
            f = _fit(d, False, o)
            if f is None:
                return None
    fit, se = _predict(f, d, k1, pop_now, link=o.threshold_method != "delta")
    return fit, se, do_trend, f.phi


def threshold_farrington(pred_fit, pred_se, phi, powertrans, alpha, y):
    """R's ``algo.farrington.threshold.farrington`` (thresholdMethod "delta").

    ``pred_fit``/``pred_se`` are the prediction and its standard error on the response
    scale. Returns (lower, upper, probability of >= y, score), as R's list.
    """
    if powertrans not in _POWERS:
        raise ValueError("powertrans must be 'none', '1/2' or '2/3'")
    e = _POWERS[powertrans]
    mu0 = pred_fit
    tau = phi + pred_se**2 / mu0
    se = {
        "none": np.sqrt(mu0 * tau),
        "1/2": np.sqrt(tau / 4),
        "2/3": np.sqrt(4 / 9 * mu0 ** (1 / 3) * tau),
    }[powertrans]
    z = norm.ppf(1 - alpha)
    with np.errstate(invalid="ignore"):
        lo = (mu0**e - z * se) ** (1 / e)
    upper = (mu0**e + z * se) ** (1 / e)
    lower = 0.0 if np.isnan(lo) else max(0.0, lo)
    prob = norm.sf(y**e, loc=mu0**e, scale=se)
    score = (y - pred_fit) / (upper - pred_fit)
    return lower, upper, prob, score


def threshold_noufaily(pred_fit, pred_se, phi, alpha, y, method):
    """R's ``algo.farrington.threshold.noufaily`` ("nbPlugin" or "muan").

    ``pred_fit``/``pred_se`` are on the link (log) scale. The score is R's
    ``(y - pred_fit) / (upper - pred_fit)``, with pred_fit on the log scale as in R.
    Returns (lower, upper, probability of >= y, score).
    """
    if method == "nbPlugin":
        mu_q = np.exp(pred_fit)
    else:
        mu_q = np.exp(norm.ppf(1 - alpha, loc=pred_fit, scale=pred_se))
    if np.isinf(mu_q):
        return np.nan, np.nan, np.nan, np.nan
    if phi > 1:
        size, prob = mu_q / (phi - 1), 1 / phi
        lower, upper = nbinom.ppf([alpha, 1 - alpha], size, prob)
    else:
        lower, upper = poisson.ppf([alpha, 1 - alpha], mu_q)
    q = nbinom.sf(y - 1, mu_q / (phi - 1), 1 / phi) if phi != 1 else poisson.sf(y - 1, mu_q)
    score = (y - pred_fit) / (upper - pred_fit)
    return max(0.0, float(lower)), float(upper), float(q), float(score)


def farrington_flexible(
    counts,
    freq: int,
    *,
    range_: range | list[int] | None = None,
    b: int = 5,
    w: int = 3,
    reweight: bool = True,
    weights_threshold: float = 2.58,
    alpha: float = 0.05,
    trend: bool = True,
    p_threshold_trend: float = 0.05,
    limit54: tuple[int, int] = (5, 4),
    powertrans: str = "2/3",
    population=None,
    population_offset: bool = False,
    no_periods: int = 1,
    past_weeks_not_included: int | None = None,
    threshold_method: str = "delta",
) -> DetectorResult:
    """Farrington flexible; matches R ``surveillance::farringtonFlexible`` (1.20).

    Defaults are R's: b = 5 years back, w = 3 periods half-window, reweight with
    weights_threshold 2.58, alpha 0.05, trend kept if p < 0.05, limit54 = (5 cases, 4
    periods), powertrans "2/3", no population offset, no_periods 1, past periods not
    included = w, threshold "delta". Noufaily et al. (2013) recommend no_periods 10,
    past_weeks_not_included 26, threshold "nbPlugin" (weekly data).

    ``range_`` are 0-based positions (default: from ``freq * b + w`` on, as R);
    positions without b years of history are "too little history" (R stops).

    Returns a DetectorResult with expected (R's ``control$expected``), upperbound,
    score, alarm, and extra ``pvalue``, ``phi``, ``trend`` (1 if the trend was kept).
    """
    if threshold_method not in ("delta", "nbPlugin", "muan"):
        raise ValueError("threshold_method must be 'delta', 'nbPlugin' or 'muan'")
    if powertrans not in _POWERS:
        raise ValueError("powertrans must be 'none', '1/2' or '2/3'")
    if not (limit54[0] >= 0 and limit54[1] > 0):
        raise ValueError("limit54 must be (cases >= 0, periods > 0)")
    y = as_counts(counts)
    pop = np.ones(len(y)) if population is None else np.asarray(population, dtype=float)
    past = w if past_weeks_not_included is None else past_weeks_not_included
    o = _Options(
        b, w, reweight, weights_threshold, alpha, trend, p_threshold_trend, tuple(limit54),
        powertrans, population_offset, no_periods, past, threshold_method,
    )  # fmt: skip
    idx = evaluation_range(len(y), freq * b + w, range_)
    rows = [_evaluate(y, pop, int(t), freq, o) for t in idx]
    cols = {name: np.array([r[name] for r in rows], dtype=float) for name in _COLUMNS}
    reason = [r["reason"] for r in rows]
    return DetectorResult(
        detector=f"farrington_{threshold_method}",
        index=idx,
        observed=y[idx],
        expected=cols["expected"],
        upperbound=cols["upperbound"],
        score=cols["score"],
        alarm=cols["alarm"].astype(bool),
        reason=reason,
        extra={"pvalue": cols["pvalue"], "phi": cols["phi"], "trend": cols["trend"]},
    )


_COLUMNS = ("expected", "upperbound", "score", "alarm", "pvalue", "phi", "trend")


def _evaluate(y, pop, t: int, freq: int, o: _Options) -> dict:
    """All outputs for 0-based period t."""
    out = dict.fromkeys(_COLUMNS, np.nan)
    out["alarm"] = 0.0
    k1 = t + 1
    if k1 - o.b * freq - o.w < 1 or np.isnan(y[t]):
        return {**out, "reason": TOO_LITTLE_HISTORY}
    d = _data(y, pop, k1, freq, o)
    final = None if len(d.response) == 0 else _final_model(d, k1, pop[t], o)
    if final is None:
        return {**out, "reason": NO_CONVERGENCE}
    fit, se, do_trend, phi = final
    if o.threshold_method == "delta":
        _, upper, prob, score = threshold_farrington(fit, se, phi, o.powertrans, o.alpha, y[t])
        expected = fit
    else:
        _, upper, prob, score = threshold_noufaily(fit, se, phi, o.alpha, y[t], o.threshold_method)
        expected = np.exp(fit)
    out.update(pvalue=prob, phi=phi, trend=1.0 if do_trend else 0.0)
    recent = y[max(k1 - o.limit54[1], 0) : k1]
    if not np.nansum(recent) >= o.limit54[0] or np.isnan(recent).any():
        return {**out, "reason": TOO_FEW_CASES}
    if np.isnan(upper):
        return {**out, "reason": NO_CONVERGENCE}
    alarm = score > 1 and y[t] != 0
    return {
        **out,
        "expected": expected,
        "upperbound": upper,
        "score": score,
        "alarm": float(alarm),
        "reason": None,
    }
