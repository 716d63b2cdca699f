"""EARS C1, C2 and C3 (CDC Early Aberration Reporting System), as R surveillance's earsC.

Matches ``surveillance::earsC`` of R surveillance 1.20 (checked against 1.20.3 on the
series in tests/data/surveillance): same baselines, thresholds and alarms.

- C1: the baseline is the ``baseline`` periods just before t; threshold
  ``mean + z(1 - alpha) * max(sd, min_sigma)``.
- C2: the same with a guard band of two periods (baseline ends at t - 3).
- C3: R's threshold is ``y_t + max(sd_t, min_sigma) * (z - (C2+_{t-1} + C2+_{t-2}))``,
  floored at 0, where ``C2+ = max(0, C2 - 1)`` and sd_t is C2's baseline sd at t. An
  alarm is ``y_t > threshold``: it sounds when the two lagged C2 terms together exceed z.
  The score reported is the classic C3 statistic, ``sum(max(0, C2_i - 1), i = t-2..t)``.

``sd`` is the sample standard deviation (n - 1), as R's ``sd``.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.stats import norm

from surveillance.series import (
    ALL_ZERO,
    NO_VARIANCE,
    TOO_LITTLE_HISTORY,
    DetectorResult,
    as_counts,
    evaluation_range,
)

__all__ = ["ears"]

_DEFAULT_ALPHA = {"C1": 0.001, "C2": 0.001, "C3": 0.025}
_GUARD = {"C1": 0, "C2": 2, "C3": 2}
_EXTRA_LAGS = {"C1": 0, "C2": 0, "C3": 2}


def _baseline_stats(y: np.ndarray, baseline: int, guard: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample sd of the ``baseline`` values ending ``guard + 1`` periods before t.

    Index t of the returned arrays is the statistic for period t; NaN where the
    window does not fit in the series.
    """
    n = len(y)
    mean = np.full(n, np.nan)
    sd = np.full(n, np.nan)
    first = baseline + guard  # first t with a complete window
    if n > first:
        windows = sliding_window_view(y, baseline)[: n - first]
        mean[first:] = windows.mean(axis=1)
        sd[first:] = windows.std(axis=1, ddof=1)
    return mean, sd


def ears(
    counts,
    method: str = "C1",
    *,
    baseline: int = 7,
    min_sigma: float = 0.0,
    alpha: float | None = None,
    range_: range | list[int] | None = None,
) -> DetectorResult:
    """EARS C1/C2/C3 on a count series; matches R ``surveillance::earsC`` (1.20).

    Parameters
    ----------
    counts : array-like of non-negative integers (NaN for missing periods)
    method : "C1", "C2" or "C3"
    baseline : number of past periods in the baseline (R default 7, at least 3)
    min_sigma : lower bound for the baseline sd (R ``minSigma``, default 0)
    alpha : one-sided level; default as R: 0.001 for C1 and C2, 0.025 for C3
    range_ : 0-based positions to evaluate; default as R: from the first period with a
        full baseline (``baseline``, ``baseline + 2``, ``baseline + 4`` for C1, C2, C3).
        Earlier positions are returned as not computable (R stops with an error).

    Returns
    -------
    DetectorResult with expected = baseline mean, upperbound = R's threshold,
    score = C1/C2/C3 statistic, alarm = observed > upperbound as in R.
    """
    if method not in _DEFAULT_ALPHA:
        raise ValueError("method must be one of C1, C2, C3")
    if baseline < 3:
        raise ValueError("the minimum baseline is 3")
    if min_sigma < 0:
        raise ValueError("min_sigma must be non-negative")
    alpha = _DEFAULT_ALPHA[method] if alpha is None else alpha
    if not 0 < alpha < 1:
        raise ValueError("alpha must lie in (0, 1)")
    y = as_counts(counts)
    z = norm.ppf(1 - alpha)
    mean, sd = _baseline_stats(y, baseline, _GUARD[method])
    sigma = np.maximum(sd, min_sigma)  # NaN stays NaN, as R's pmax
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = (y - mean) / sigma  # C1 or C2 statistic per period
        if method == "C3":
            upper, score = _c3(y, stat, sigma, z)
        else:
            upper, score = mean + z * sigma, stat

    first = baseline + _GUARD[method] + _EXTRA_LAGS[method]
    idx = evaluation_range(len(y), first, range_)
    reason: list[str | None] = []
    for t in idx:
        if t < first:
            reason.append(TOO_LITTLE_HISTORY)
        elif np.isnan(upper[t]) or np.isnan(y[t]):
            # C3 divides by a zero sd (R gives NA): say why
            reason.append(ALL_ZERO if mean[t] == 0 else NO_VARIANCE)
        else:
            reason.append(None)
    ok = np.array([r is None for r in reason], dtype=bool)
    up = np.where(ok, upper[idx], np.nan)
    with np.errstate(invalid="ignore"):
        alarm = ok & (y[idx] > up)
    return DetectorResult(
        detector=f"ears_{method}",
        index=idx,
        observed=y[idx],
        expected=np.where(ok, mean[idx], np.nan),
        upperbound=up,
        score=np.where(ok, score[idx], np.nan),
        alarm=alarm,
        reason=reason,
    )


def _c3(
    y: np.ndarray, c2: np.ndarray, sigma: np.ndarray, z: float
) -> tuple[np.ndarray, np.ndarray]:
    """R's C3 threshold and the classic C3 score from the C2 statistics."""
    plus = np.maximum(0.0, c2 - 1.0)  # NaN propagates, as R's pmax
    lag1 = np.concatenate([[np.nan], plus[:-1]])
    lag2 = np.concatenate([[np.nan, np.nan], plus[:-2]])
    upper = np.maximum(0.0, y + sigma * (z - (lag2 + lag1)))
    score = plus + lag1 + lag2
    return upper, score
