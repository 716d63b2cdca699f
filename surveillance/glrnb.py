"""Negative binomial (and Poisson) GLR CUSUM for a shift in level, as R surveillance's glrnb.

Matches ``surveillance::glrnb`` / ``algo.glrnb`` of R surveillance 1.20 (checked against
1.20.3) with ``change = "intercept"`` (Höhle and Paul 2008): the in-control means
``mu0`` are given or estimated by a GLM on the periods before the evaluated range; the
chart is the generalised likelihood ratio for a multiplicative change ``exp(kappa)`` of
``mu0`` since some unknown period, maximised over the change point (within the last
``M`` periods if ``M > 0``); it alarms when the statistic reaches ``c_arl`` and then
restarts after the alarm, as R does.

- ``alpha = 0``: Poisson chart (R's C routines ``glr_cusum``, ``glr_cusum_window``).
- ``alpha > 0``: negative binomial with variance ``mu + alpha mu^2`` (``glr_nb_window``);
  kappa is found by the same Newton iteration (tolerance 1e-6).
- ``alpha = None``: estimated with ``mu0`` (R's ``MASS::glm.nb``), alpha = 1 / theta.

The reported upper bound is, as R's ``ret``, either the GLR statistic ("value", compared
with ``c_arl``) or the smallest count that would have alarmed ("cases"; for the NB chart
R's brute-force search, with its quirks: 1e99 where the count is 0).
"""

from __future__ import annotations

import numpy as np

from surveillance import _glm
from surveillance.series import DetectorResult, as_counts, evaluation_range

__all__ = ["estimate_mu0", "glrnb"]

_NEG = -1e99  # C's initial "max" of the GLR statistic


def estimate_mu0(
    counts,
    freq: int,
    first: int,
    horizon: np.ndarray,
    *,
    harmonics: int = 1,
    trend: bool = False,
    alpha: float | None = None,
) -> tuple[np.ndarray, float]:
    """In-control means for ``horizon`` from a GLM on periods ``0 .. first - 1``.

    Matches R surveillance's ``estimateGLRNbHook`` (``mu0 = list(S, trend)``): the model
    ``y ~ 1 [+ t] + sum_s cos(2 s pi t / freq) + sin(2 s pi t / freq)`` with t 1-based,
    Poisson if ``alpha == 0``, negative binomial with fixed ``theta = 1 / alpha`` if
    ``alpha > 0``, and with theta estimated by maximum likelihood (``MASS::glm.nb``) if
    ``alpha`` is None. Returns the predicted means at ``horizon`` (0-based positions) and
    the alpha used.
    """
    y = as_counts(counts)[:first]
    if first < 2 or np.isnan(y).any():
        raise ValueError("mu0 needs complete counts before the evaluated range")

    def design(pos: np.ndarray) -> np.ndarray:
        t = pos + 1.0
        cols = [np.ones_like(t)]
        if trend:
            cols.append(t)
        for s in range(1, harmonics + 1):
            cols += [np.cos(2 * s * np.pi / freq * t), np.sin(2 * s * np.pi / freq * t)]
        return np.column_stack(cols)

    x = design(np.arange(first, dtype=float))
    if alpha is None:
        res, theta = _glm.fit_glm_nb(y, x)
        alpha = 1.0 / theta
    elif alpha == 0:
        res = _glm.fit(y, x, _glm.poisson_family())
    else:
        res = _glm.fit(y, x, _glm.negbin_family(1.0 / alpha))
    beta = res.params
    return np.exp(design(np.asarray(horizon, dtype=float)) @ beta), alpha


def _poisson_glr(sx: np.ndarray, smu: np.ndarray, direction: int) -> np.ndarray:
    """Poisson log likelihood ratio of the segments with sums ``sx``, ``smu`` at the MLE."""
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = direction * np.maximum(0.0, direction * np.log(sx / smu))
        return kappa * sx + (1 - np.exp(kappa)) * smu


def _segment_sums(v: np.ndarray, n: int, ks: np.ndarray) -> np.ndarray:
    """Sums of ``v[k..n]`` for every k in ``ks``."""
    c = np.concatenate([[0.0], np.cumsum(v[: n + 1])])
    return c[n + 1] - c[ks]


def _starts(n: int, m: int, m_tilde: int, kind: str) -> np.ndarray:
    """Change points k considered at period n, as each C routine chooses them."""
    if kind == "poisson":  # glr_cusum: every 0 <= k <= n
        return np.arange(0, n + 1)
    if kind == "poisson_window":  # glr_cusum_window: max(0, n - M) <= k <= n - Mtilde
        return np.arange(max(0, n - m), n - m_tilde + 1)
    low = 0 if m == -1 else max(0, n - m)  # glr_nb_window
    return np.arange(low, n - (m_tilde - 1) + 1)


def _max_or_neg(values: np.ndarray) -> float:
    """Maximum ignoring NaN (C's ``if (sum > max)``), ``-1e99`` if there is none."""
    values = values[~np.isnan(values)]
    return float(values.max()) if len(values) else _NEG


def _nb_glr(x: np.ndarray, mu0: np.ndarray, alpha: float, ks: np.ndarray, n: int, direction: int):
    """Negative binomial GLR at period n: max over change points k of l_{n,k}(kappa_ml).

    Newton's method may overflow where the MLE runs off (C carries on with inf/NaN the
    same way and such change points never win the maximum), hence the silenced warnings.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _nb_glr_raw(x, mu0, alpha, ks, n, direction)


def _nb_glr_raw(x, mu0, alpha, ks, n, direction) -> float:
    xs, ms = x[: n + 1], mu0[: n + 1]
    mask = np.arange(n + 1)[None, :] >= ks[:, None]  # segment k..n per row
    kappa_new = np.full(len(ks), 0.5)
    kappa_old = np.full(len(ks), 0.4)
    active = np.ones(len(ks), dtype=bool)
    for _ in range(1000):  # R: Newton until |step| <= 1e-6, kappa <= -18 or 1000 steps
        active &= (kappa_new > -18) & (np.abs(kappa_new - kappa_old) > 1e-6)
        if not active.any():
            break
        e = np.exp(kappa_new[active])[:, None]
        denom = 1 + alpha * e * ms
        score = np.where(mask[active], (xs - e * ms) / denom, 0.0).sum(axis=1)
        fisher = e[:, 0] * np.where(mask[active], ms * (alpha * xs + 1) / denom**2, 0.0).sum(axis=1)
        kappa_old = kappa_old.copy()
        kappa_old[active] = kappa_new[active]
        kappa_new = kappa_new.copy()
        kappa_new[active] = kappa_new[active] + score / fisher
    kappa = direction * np.maximum(0.0, direction * kappa_new)[:, None]
    term = kappa * xs + (xs + 1 / alpha) * np.log(
        (1 + alpha * ms) / (1 + alpha * ms * np.exp(kappa))
    )
    return _max_or_neg(np.where(mask, term, 0.0).sum(axis=1))


def _chart(x, mu0, alpha, m, m_tilde, c_arl, direction, ret):
    """One run of R's chart on x: (index of the first alarm or len(x), values, cases)."""
    lx = len(x)
    val = np.zeros(lx)
    cases = np.zeros(lx)
    kind = "nb" if alpha > 0 else ("poisson_window" if m > 0 else "poisson")
    first = m_tilde if kind == "poisson_window" else max(m_tilde - 1, 0)
    stop = lx
    for n in range(first, lx):
        ks = _starts(n, m, m_tilde, kind)
        if alpha == 0:
            stat = _max_or_neg(
                _poisson_glr(_segment_sums(x, n, ks), _segment_sums(mu0, n, ks), direction)
            )
            if ret == "cases":
                cases[n] = _poisson_cases(x, mu0, n, ks, c_arl, direction)
        else:
            stat = _nb_glr(x, mu0, alpha, ks, n, direction)
        val[n] = stat
        # R: Poisson charts stop at >= c.ARL, as does the NB chart ("hoehle: now >=")
        if stat >= c_arl:
            stop = n
            break
    if alpha > 0 and ret == "cases":
        for pos in range(min(lx, stop + 1)):
            cases[pos] = _nb_cases(x, mu0, alpha, (m, m_tilde, c_arl, direction), pos, stop)
    return stop, val, cases


_X_MAX = 10000  # R's control$xMax


def _nb_cases(x, mu0, alpha, chart, pos: int, stop: int) -> float:
    """R's brute-force "cases" of the NB chart at ``pos`` (0-based), quirks included.

    Before the alarm: the smallest count above x[pos] whose GLR at pos reaches c.ARL,
    1e99 if none up to xMax + 1 or if x[pos] is 0 (R's search starts only from counts
    >= 1). At the alarm: one more than the largest smaller count that would not alarm;
    NaN (later 0) if even 0 alarms or x[pos] is 0. The GLR at pos grows with x[pos],
    so a bisection finds what R's step-by-step search finds.
    """
    m, m_tilde, c_arl, direction = chart
    ks = _starts(pos, m, m_tilde, "nb")

    def alarms(v: float) -> bool:
        xv = x.copy()
        xv[pos] = v
        return _nb_glr(xv, mu0, alpha, ks, pos, direction) >= c_arl

    if x[pos] < 1:
        return np.nan if pos == stop else 1e99
    if pos == stop:  # largest v < x[pos] without alarm, plus one
        if alarms(0.0):
            return np.nan
        lo, hi = 0, int(x[pos])  # alarms(lo) False, alarms(hi) True
    else:
        lo, hi = int(x[pos]), int(x[pos]) + 1
        while not alarms(float(hi)):  # exponential search upwards
            if hi > _X_MAX:
                return 1e99
            lo, hi = hi, min(2 * hi, _X_MAX + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if alarms(float(mid)) else (mid, hi)
    return float(hi)


def _poisson_cases(x, mu0, n, ks, c_arl, direction) -> float:
    """Smallest count at period n whose GLR reaches ``c_arl`` (C's upward search from 0)."""
    sx_rest = _segment_sums(x, n, ks) - x[n]
    smu = _segment_sums(mu0, n, ks)
    lo = 0
    while True:
        cand = np.arange(lo, lo + 256, dtype=float)
        stats = _poisson_glr(sx_rest[None, :] + cand[:, None], smu[None, :], direction)
        stats = (
            np.where(np.isnan(stats), _NEG, stats).max(axis=1)
            if len(ks)
            else np.full(len(cand), _NEG)
        )
        hit = np.nonzero(stats >= c_arl)[0]
        if len(hit):
            return float(cand[hit[0]])
        lo += 256


def glrnb(
    counts,
    *,
    freq: int = 52,
    range_: range | list[int] | None = None,
    mu0=None,
    alpha: float | None = None,
    c_arl: float = 5.0,
    m_tilde: int = 1,
    m: int = -1,
    direction: str = "inc",
    ret: str = "value",
    harmonics: int = 1,
    trend: bool = False,
) -> DetectorResult:
    """GLR CUSUM for a level shift; matches R ``surveillance::glrnb`` (1.20), change "intercept".

    Parameters
    ----------
    counts : array-like of non-negative integers (complete in the evaluated range)
    freq : periods per year (for the harmonics of the estimated mu0)
    range_ : 0-based positions to evaluate, contiguous; default from ``2 * freq`` on
        (the first two years train mu0)
    mu0 : in-control means for the evaluated periods; None (default) estimates them as R
        does with ``mu0 = list(S = harmonics, trend = trend)`` on the periods before
        the range (:func:`estimate_mu0`)
    alpha : NB dispersion (variance ``mu + alpha mu^2``); 0 gives the Poisson chart;
        None (default, as R when ``alpha`` is not given) estimates it with mu0
    c_arl : alarm threshold of the GLR statistic (R ``c.ARL``, default 5)
    m_tilde, m : R ``Mtilde`` (default 1) and ``M`` (default -1: no window)
    direction : "inc" (default) or "dec"
    ret : "value" (default: upper bound is the GLR statistic) or "cases" (the number of
        cases needed for an alarm; direction "inc" only)

    Returns
    -------
    DetectorResult with expected = mu0, upperbound as ``ret``, score = GLR statistic,
    alarm where the chart reached ``c_arl`` (the chart restarts after each alarm).
    """
    _check_options(direction, ret, m, m_tilde, alpha)
    y = as_counts(counts)
    idx = evaluation_range(len(y), 2 * freq, range_)
    if len(idx) == 0 or np.any(np.diff(idx) != 1):
        raise ValueError("the evaluation range must be a non-empty run of consecutive periods")
    x = y[idx]
    if np.isnan(x).any():
        raise ValueError("glrnb needs complete counts in the evaluated range")
    if mu0 is None:
        mu, alpha = estimate_mu0(
            y, freq, int(idx[0]), idx, harmonics=harmonics, trend=trend, alpha=alpha
        )
    else:
        if alpha is None:
            raise ValueError("alpha must be given with mu0 (it is estimated only with mu0)")
        mu = np.asarray(mu0, dtype=float)
        if mu.shape != x.shape or not (mu > 0).all():
            raise ValueError("mu0 must hold one positive mean per evaluated period")
    if ret == "cases" and direction != "inc":
        raise ValueError("ret='cases' is implemented for direction 'inc' only")
    score, cases, alarm = _restarting(
        x, mu, alpha, m, m_tilde, c_arl, 1 if direction == "inc" else -1, ret
    )
    upper = cases if ret == "cases" else score
    upper = np.where(np.isnan(upper) | (upper < 0), 0.0, upper)
    return DetectorResult(
        detector="glrnb" if alpha > 0 else "glrpois",
        index=idx,
        observed=x,
        expected=mu,
        upperbound=upper,
        score=np.maximum(score, 0.0),
        alarm=alarm,
        reason=[None] * len(idx),
        extra={"alpha": np.full(len(idx), float(alpha))},
    )


def _check_options(direction: str, ret: str, m: int, m_tilde: int, alpha: float | None) -> None:
    """Refuse options R refuses or this port does not implement."""
    if direction not in ("inc", "dec"):
        raise ValueError("direction must be 'inc' or 'dec'")
    if ret not in ("value", "cases"):
        raise ValueError("ret must be 'value' or 'cases'")
    if m_tilde < 1 or (m != -1 and m < m_tilde):
        raise ValueError("need Mtilde >= 1 and M = -1 or M >= Mtilde")
    if alpha is not None and alpha < 0:
        raise ValueError("alpha must be non-negative")


def _restarting(x, mu, alpha, m, m_tilde, c_arl, direction, ret):
    """R's loop: run the chart, record up to the alarm, restart after it."""
    score = np.zeros(len(x))
    cases = np.zeros(len(x))
    alarm = np.zeros(len(x), dtype=bool)
    done = 0
    while done < len(x):
        stop, val, cs = _chart(x[done:], mu[done:], alpha, m, m_tilde, c_arl, direction, ret)
        end = min(stop + 1, len(x) - done)
        score[done : done + end] = val[:end]
        cases[done : done + end] = cs[:end]
        if stop < len(x) - done:
            alarm[done + stop] = True
        done += stop + 1
    return score, cases, alarm
