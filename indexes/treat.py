"""Outlier treatment with the JRC rule as COINr's ``Treat()`` applies it by default.

For each indicator (COINr ``Treat.numeric`` with its default specifications):

1. **Check** (``check_SkewKurt``): the indicator *fails* when ``|skew| >= 2`` **and**
   ``kurtosis >= 3.5``; it passes otherwise.
2. **Winsorise** a failing indicator (``winsorise``): while it fails and fewer than
   ``winmax`` (5) points were winsorised, reassign the most extreme value(s) on the side of
   the skew (the maximum when skew >= 0, else the minimum; tied extremes together) to the
   next value inward. The count is the number of distinct units changed.
3. If the winsorised indicator **still fails**, discard the winsorisation and apply
   COINr's ``log_CT`` to the **original** values (``combine_treat = FALSE``):
   ``log(x - min(x) + 0.01 (max(x) - min(x)))``. The check is run again and recorded, but
   the log-transformed values are kept whatever its outcome.

**Not below a minimum number of units** (:data:`MIN_UNITS`, 20): the rule judges the
*shape* of a distribution, and with few units there is no shape to judge. ``n`` values can
have a skewness of at most :math:`\\sqrt n`, reached when one value stands apart from
``n - 1`` equal ones, so with 6 units (ceiling 2.45) a single unit well above the others
meets the rule by itself: it fires on the unit a ranking exists to show, and
winsorisation moves it to the runner-up's value. The estimates are also too noisy to test:
their standard errors under normality, :math:`\\sqrt{6n(n-1)/((n-2)(n+1)(n+3))}` for the
skewness and :math:`2\\,SE_s\\sqrt{(n^2-1)/((n-3)(n+5))}` for the kurtosis, are 0.85 and
1.74 at 6 units, so the thresholds (2 and 3.5) lie about two standard errors from a
symmetric distribution and whether an indicator is treated flips on a few incidents. At
20 units the standard errors are 0.51 and 0.99 and the thresholds lie 3.9 and 3.5 standard
errors away. Below the minimum, :func:`treat` leaves every value as it is and records
action ``below_min_units``; a definition that wants the rule anyway lowers ``min_units``.

Skewness and kurtosis are COINr's ``skew()`` / ``kurt()``, copied from e1071's
``skewness`` / ``kurtosis`` with ``type = 2`` (the "Excel" estimators; SAS/SPSS; scipy's
``skew(bias=False)`` / ``kurtosis(fisher=True, bias=False)``): the adjusted Fisher-Pearson
skewness :math:`G_1 = g_1 \\sqrt{n(n-1)}/(n-2)` and the bias-corrected *excess* kurtosis
:math:`G_2 = ((n+1) g_2 + 6)(n-1)/((n-2)(n-3))`, with :math:`g_1 = m_3/m_2^{3/2}`,
:math:`g_2 = m_4/m_2^2 - 3` and :math:`m_k` the central moments with divisor n.

References
----------
Becker, W. et al. (2022). COINr: An R package for developing composite indicators. JOSS
7(78), 4567. https://doi.org/10.21105/joss.04567 — source ``R/treat.R`` (``Treat.numeric``,
``winsorise``, ``log_CT``, ``skew``, ``kurt``, ``check_SkewKurt``), vignette "Outlier
Treatment".

Joanes, D. N., Gill, C. A. (1998). Comparing measures of sample skewness and kurtosis.
*The Statistician* 47(1), 183-189. https://doi.org/10.1111/1467-9884.00122

OECD/JRC (2008). Handbook on Constructing Composite Indicators. https://doi.org/10.1787/9789264043466-en
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

__all__ = [
    "MIN_UNITS",
    "TreatmentNote",
    "WinsorisationResult",
    "kurtosis",
    "log_ct",
    "passes_skew_kurtosis",
    "skewness",
    "treat",
    "treat_indicator",
    "treatment_rule",
    "winsorise",
]

#: Fewest units on which the JRC rule runs by itself (see the module docstring).
MIN_UNITS = 20


def skewness(x: np.ndarray) -> float:
    """COINr ``skew()`` (e1071 type 2, :math:`G_1`), NaN-skipping; NaN with fewer than 3 values.

    Notes
    -----
    :math:`G_1 = \\frac{\\sqrt{n}\\,\\sum d^3}{(\\sum d^2)^{3/2}}\\cdot\\frac{\\sqrt{n(n-1)}}{n-2}`
    with :math:`d = x - \\bar x`. A constant vector has no skewness (NaN).
    """
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    n = x.size
    if n < 3:
        return float("nan")
    d = x - x.mean()
    s2 = np.sum(d**2)
    if s2 == 0:
        return float("nan")
    g1 = np.sqrt(n) * np.sum(d**3) / s2**1.5
    return float(g1 * np.sqrt(n * (n - 1)) / (n - 2))


def kurtosis(x: np.ndarray) -> float:
    """COINr ``kurt()`` (e1071 type 2, excess :math:`G_2`), NaN-skipping; NaN below 4 values.

    Notes
    -----
    :math:`r = n \\sum d^4 / (\\sum d^2)^2`,
    :math:`G_2 = ((n+1)(r-3)+6)(n-1)/((n-2)(n-3))`. A normal sample gives about 0.
    """
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    n = x.size
    if n < 4:
        return float("nan")
    d = x - x.mean()
    s2 = np.sum(d**2)
    if s2 == 0:
        return float("nan")
    r = n * np.sum(d**4) / s2**2
    return float(((n + 1) * (r - 3) + 6) * (n - 1) / ((n - 2) * (n - 3)))


def passes_skew_kurtosis(
    x: np.ndarray, skew_threshold: float = 2.0, kurtosis_threshold: float = 3.5
) -> bool | None:
    """COINr ``check_SkewKurt``: ``|skew| < skew_threshold or kurtosis < kurtosis_threshold``.

    Returns None when either statistic is undefined (too few or constant values), where
    COINr returns NA and leaves the indicator untreated.
    """
    sk, kt = skewness(x), kurtosis(x)
    if np.isnan(sk) or np.isnan(kt):
        return None
    return bool(abs(sk) < skew_threshold or kt < kurtosis_threshold)


@dataclass(frozen=True)
class WinsorisationResult:
    """Outcome of :func:`winsorise`.

    Attributes
    ----------
    values : numpy.ndarray
        The winsorised vector (a new array).
    n_winsorised : int
        Distinct points changed (COINr ``nwin``).
    high : tuple of int
        Positions winsorised at the high end (COINr ``"winhi"``).
    low : tuple of int
        Positions winsorised at the low end (COINr ``"winlo"``).
    passes : bool or None
        Whether the result passes the skew / kurtosis check.
    """

    values: np.ndarray
    n_winsorised: int
    high: tuple[int, ...]
    low: tuple[int, ...]
    passes: bool | None


def winsorise(
    x: np.ndarray,
    *,
    winmax: int = 5,
    skew_threshold: float = 2.0,
    kurtosis_threshold: float = 3.5,
) -> WinsorisationResult:
    """Winsorise one point (or one tied group) at a time until the JRC check passes.

    Parameters
    ----------
    x : array_like of float
        One indicator; NaN values are ignored and kept.
    winmax : int
        Stop once this many distinct points were winsorised (COINr default 5).
    skew_threshold, kurtosis_threshold : float
        The check of :func:`passes_skew_kurtosis`.

    Returns
    -------
    WinsorisationResult

    Notes
    -----
    COINr ``winsorise()``: at each step, if :math:`G_1 \\ge 0` every point equal to the
    maximum takes the largest value among the others, else every point equal to the minimum
    takes the smallest among the others; then the check is repeated. Previously winsorised
    points stay tied with the extreme, so they move with it: after k high steps on distinct
    values the k largest points equal the (k+1)-th largest.
    """
    values = np.array(x, dtype=float, copy=True)
    passes = passes_skew_kurtosis(values, skew_threshold, kurtosis_threshold)
    high: set[int] = set()
    low: set[int] = set()
    while passes is False and len(high) + len(low) < winmax:
        finite = ~np.isnan(values)
        if skewness(values) >= 0:
            extreme = np.nanmax(values)
            at = np.flatnonzero(finite & (values == extreme))
            others = values[finite & (values != extreme)]
            if others.size == 0:
                break
            values[at] = others.max()
            high.update(int(i) for i in at)
        else:
            extreme = np.nanmin(values)
            at = np.flatnonzero(finite & (values == extreme))
            others = values[finite & (values != extreme)]
            if others.size == 0:
                break
            values[at] = others.min()
            low.update(int(i) for i in at)
        passes = passes_skew_kurtosis(values, skew_threshold, kurtosis_threshold)
    return WinsorisationResult(
        values, len(high | low), tuple(sorted(high)), tuple(sorted(low)), passes
    )


def log_ct(x: np.ndarray) -> np.ndarray:
    """COINr ``log_CT`` (the COIN Tool log): ``log(x - min + 0.01 * (max - min))``.

    The minimum maps to ``log(0.01 * range)``; order is preserved. NaN stays NaN.
    """
    x = np.asarray(x, dtype=float)
    lo, hi = np.nanmin(x), np.nanmax(x)
    return np.log(x - lo + 0.01 * (hi - lo))


@dataclass(frozen=True)
class TreatmentNote:
    """What the outlier treatment did to one indicator.

    Attributes
    ----------
    indicator : str
        Indicator code.
    action : {"none", "winsorised", "log", "skipped", "below_min_units"}
        ``none``: the indicator passed the check, or no treatment was asked for (nothing
        changed); ``winsorised``: winsorisation made it pass; ``log``: winsorisation up to
        ``winmax`` points did not, so ``log_CT`` was applied to the original values;
        ``skipped``: skew or kurtosis is undefined (fewer than 4 values, or constant), left
        untreated as COINr does; ``below_min_units``: fewer units than the rule needs, left
        untreated (``passes`` says what the check would have said).
    skew_before, kurtosis_before : float
        COINr ``skew`` / ``kurt`` of the untreated values.
    skew_after, kurtosis_after : float
        The same statistics of the values kept.
    n_winsorised : int
        Points winsorised (kept only when ``action == "winsorised"``; for ``log`` it is the
        number tried before falling back).
    winsorised_units : tuple
        Unit ids whose values were winsorised (empty unless ``action == "winsorised"``).
    passes : bool or None
        Whether the kept values pass the check.
    """

    indicator: str
    action: Literal["none", "winsorised", "log", "skipped", "below_min_units"]
    skew_before: float
    kurtosis_before: float
    skew_after: float
    kurtosis_after: float
    n_winsorised: int = 0
    winsorised_units: tuple = ()
    passes: bool | None = None


def treat_indicator(
    x: pd.Series,
    *,
    winmax: int = 5,
    skew_threshold: float = 2.0,
    kurtosis_threshold: float = 3.5,
) -> tuple[pd.Series, TreatmentNote]:
    """Apply the JRC / COINr default treatment to one indicator (see the module docstring).

    Parameters
    ----------
    x : pandas.Series
        One indicator, indexed by unit id; its name is the indicator code.
    winmax, skew_threshold, kurtosis_threshold
        COINr ``Treat()`` defaults: 5, 2 and 3.5.

    Returns
    -------
    treated : pandas.Series
        A new series.
    note : TreatmentNote
    """
    code = str(x.name)
    values = x.to_numpy(dtype=float)
    sk, kt = skewness(values), kurtosis(values)
    passes = passes_skew_kurtosis(values, skew_threshold, kurtosis_threshold)
    if passes is None or passes:
        action = "skipped" if passes is None else "none"
        return x.astype(float), TreatmentNote(code, action, sk, kt, sk, kt, passes=passes)
    win = winsorise(
        values, winmax=winmax, skew_threshold=skew_threshold, kurtosis_threshold=kurtosis_threshold
    )
    if win.passes:
        units = tuple(x.index[list(sorted(set(win.high) | set(win.low)))])
        note = TreatmentNote(
            code,
            "winsorised",
            sk,
            kt,
            skewness(win.values),
            kurtosis(win.values),
            win.n_winsorised,
            units,
            True,
        )
        return pd.Series(win.values, index=x.index, name=x.name), note
    logged = log_ct(values)
    note = TreatmentNote(
        code,
        "log",
        sk,
        kt,
        skewness(logged),
        kurtosis(logged),
        win.n_winsorised,
        (),
        passes_skew_kurtosis(logged, skew_threshold, kurtosis_threshold),
    )
    return pd.Series(logged, index=x.index, name=x.name), note


def treat(
    frame: pd.DataFrame,
    method: Literal["none", "jrc"] = "jrc",
    *,
    min_units: int = MIN_UNITS,
    winmax: int = 5,
    skew_threshold: float = 2.0,
    kurtosis_threshold: float = 3.5,
) -> tuple[pd.DataFrame, tuple[TreatmentNote, ...]]:
    """Treat every indicator of a table for outliers.

    Parameters
    ----------
    frame : pandas.DataFrame
        Rows = units, columns = indicators (not modified).
    method : {"none", "jrc"}
        ``none`` returns a copy and records, per indicator, its skew and kurtosis with
        action ``none``; ``jrc`` applies :func:`treat_indicator` to each column when the
        table has at least ``min_units`` rows.
    min_units : int
        Fewest units (rows) the JRC rule runs on (default :data:`MIN_UNITS`); below it
        every column is left as it is, with action ``below_min_units``.
    winmax, skew_threshold, kurtosis_threshold
        Parameters of the JRC rule (COINr defaults 5, 2, 3.5).

    Returns
    -------
    treated : pandas.DataFrame
    notes : tuple of TreatmentNote
        One per indicator, in column order.

    Notes
    -----
    Treatment runs on raw (direction-unadjusted) values, as in COINr where directions are
    applied by ``Normalise()``; ``log_CT`` is COINr's default second function and suits
    the positive skew of crime rates. See the module docstring for the rule and the
    minimum number of units.
    """
    if method not in ("none", "jrc"):
        raise ValueError(f"unknown treatment method {method!r} (none, jrc)")
    untouched = "none" if method == "none" else "below_min_units"
    applies = method == "jrc" and len(frame) >= min_units
    columns: dict[str, pd.Series] = {}
    notes: list[TreatmentNote] = []
    for code in frame.columns:
        column = frame[code]
        if not applies:
            values = column.to_numpy(dtype=float)
            sk, kt = skewness(values), kurtosis(values)
            passes = passes_skew_kurtosis(values, skew_threshold, kurtosis_threshold)
            columns[code] = column.astype(float)
            notes.append(TreatmentNote(str(code), untouched, sk, kt, sk, kt, passes=passes))
            continue
        columns[code], note = treat_indicator(
            column,
            winmax=winmax,
            skew_threshold=skew_threshold,
            kurtosis_threshold=kurtosis_threshold,
        )
        notes.append(note)
    return pd.DataFrame(columns, index=frame.index.copy()), tuple(notes)


def treatment_rule(
    method: str,
    units: int,
    *,
    min_units: int = MIN_UNITS,
    winmax: int = 5,
    skew_threshold: float = 2.0,
    kurtosis_threshold: float = 3.5,
) -> str:
    """Which outlier rule applied to a table of ``units`` units, in plain words."""
    rule = (
        f"the JRC rule (an indicator with |skewness| >= {skew_threshold:g} and excess "
        f"kurtosis >= {kurtosis_threshold:g} is winsorised, up to {winmax} values, else "
        "log-transformed)"
    )
    if method == "none":
        return "No outlier treatment: the definition asks for none."
    if units >= min_units:
        return f"Outlier treatment by {rule}, applied: {units} units, the rule needs {min_units}."
    return (
        f"No outlier treatment: {rule} is not applied to {units} units, fewer than the "
        f"{min_units} it needs to tell an outlier from a unit that simply stands apart. "
        "Every value is used as measured. (An index definition can still ask for the rule "
        "on fewer units, with treatment min_units.)"
    )
