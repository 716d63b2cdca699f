"""Ranks (1 = highest priority), map classes and rank changes.

A higher index score means a higher priority, so rank 1 goes to the highest score. Ties get
the same, smallest rank and leave a gap ("competition" ranking, 1-2-2-4): R's
``rank(-x, ties.method = "min")``, as COINr's ``get_results()`` ranks. Units without a
score have no rank.

Classes come from mapclassify on the scores: ``quantiles`` (``Quantiles``),
``natural_breaks`` (Jenks' optimal breaks, ``FisherJenks`` — deterministic, unlike
mapclassify's k-means ``NaturalBreaks``) and ``equal_interval`` (``EqualInterval``).
Classes are numbered 1..k from the lowest scores to the highest (class k = highest
priority), the order of a map legend; k is reduced to the number of distinct scores when
there are fewer.

References
----------
Rey, S. J. et al. (2023). mapclassify: Classification schemes for choropleth maps.
https://doi.org/10.5281/zenodo.7526548

Jenks, G. F. (1977). Optimal data classification for choropleth maps. Occasional paper
no. 2, Department of Geography, University of Kansas.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata

__all__ = ["Classes", "classify", "rank_change", "rank_scores", "shared_ranks"]


def rank_scores(score: pd.Series) -> pd.Series:
    """Rank 1 = highest score; ties share the minimum rank; NaN scores get no rank.

    Returns
    -------
    pandas.Series of ``Int64``
    """
    values = score.to_numpy(dtype=float)
    ranks = pd.Series(pd.NA, index=score.index, dtype="Int64", name="rank")
    ok = ~np.isnan(values)
    ranks[ok] = rankdata(-values[ok], method="min").astype(np.int64)
    return ranks


def rank_change(current: pd.Series, previous: pd.Series) -> pd.Series:
    """``previous - current`` per unit: positive = moved up towards rank 1; NA if unranked."""
    prev = previous.reindex(current.index).astype("Int64")
    return (prev - current.astype("Int64")).rename("rank_change")


@dataclass(frozen=True)
class Classes:
    """Map classes of the scores.

    Attributes
    ----------
    classes : pandas.Series of Int64
        Class 1..k of each unit (1 = lowest scores).
    bins : tuple of float
        Upper bound of each class (mapclassify ``bins``).
    method : str
    k : int
        The number of classes actually used.
    """

    classes: pd.Series
    bins: tuple[float, ...]
    method: str
    k: int

    @classmethod
    def none(cls, score: pd.Series) -> Classes:
        """No classification: every class missing, no bins (method ``"none"``, k 0)."""
        return cls(pd.Series(pd.NA, index=score.index, dtype="Int64", name="class"), (), "none", 0)


def classify(score: pd.Series, method: str = "quantiles", k: int = 5) -> Classes:
    """Classify scores for a choropleth with mapclassify (see the module docstring)."""
    import mapclassify

    schemes = {
        "quantiles": mapclassify.Quantiles,
        "natural_breaks": mapclassify.FisherJenks,
        "equal_interval": mapclassify.EqualInterval,
    }
    if method not in schemes:
        raise ValueError(f"unknown classification {method!r} ({', '.join(schemes)})")
    values = score.to_numpy(dtype=float)
    ok = ~np.isnan(values)
    k_used = int(min(k, np.unique(values[ok]).size))
    classes = pd.Series(pd.NA, index=score.index, dtype="Int64", name="class")
    if k_used < 2:
        classes[ok] = 1
        top = float(values[ok].max()) if ok.any() else float("nan")
        return Classes(classes, (top,), method, 1)
    with warnings.catch_warnings():
        # Quantiles of tied scores may merge classes; mapclassify then warns and lowers k.
        warnings.simplefilter("ignore", UserWarning)
        scheme = schemes[method](values[ok], k=k_used)
    classes[ok] = scheme.yb.astype(np.int64) + 1
    return Classes(classes, tuple(float(b) for b in scheme.bins), method, int(scheme.k))


def shared_ranks(nominal: pd.Series, low: pd.Series, high: pd.Series) -> pd.DataFrame:
    """Units whose rank bands overlap share the range of ranks they occupy together.

    Parameters
    ----------
    nominal : pandas.Series
        The rank of each unit (1 = highest priority), indexed by unit; NaN: no rank.
    low, high : pandas.Series
        The ends of each unit's rank band (e.g. the 5 % and 95 % Monte Carlo quantiles),
        same index.

    Returns
    -------
    pandas.DataFrame
        Per unit (same index): ``first`` and ``last`` (Int64), the ranks the unit shares
        (equal when the data order it), and ``group`` (Int64, 0-based, in rank order).

    Notes
    -----
    Each unit's interval is its band widened to include its nominal rank; units whose
    intervals overlap, directly or through others, form one group. The intervals of
    different groups are disjoint, so a group occupies consecutive places in rank order:
    a group of k units whose best nominal rank is r shares ranks r to r + k - 1 ("1-2"),
    and the data cannot order the units within it. A singleton keeps its nominal rank.
    """
    frame = pd.DataFrame({"nominal": nominal, "low": low, "high": high}, dtype=float)
    out = pd.DataFrame(
        {"first": pd.NA, "last": pd.NA, "group": pd.NA}, index=frame.index, dtype="Int64"
    )
    ranked = frame.dropna()
    if ranked.empty:
        return out
    start = np.minimum(ranked["low"], ranked["nominal"]).to_numpy()
    end = np.maximum(ranked["high"], ranked["nominal"]).to_numpy()
    order = np.lexsort((ranked["nominal"].to_numpy(), start))
    group = np.empty(len(ranked), dtype=np.int64)
    current, reach = -1, -np.inf
    for i in order:  # a sweep over intervals sorted by their start
        if start[i] > reach:
            current += 1
        reach = max(reach, end[i]) if start[i] <= reach else end[i]
        group[i] = current
    groups = pd.Series(group, index=ranked.index)
    best = ranked["nominal"].groupby(groups).transform("min")
    size = groups.groupby(groups).transform("size")
    out.loc[ranked.index, "first"] = best.astype("int64")
    out.loc[ranked.index, "last"] = (best + size - 1).astype("int64")
    out.loc[ranked.index, "group"] = groups
    return out
