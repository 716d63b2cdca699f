"""How well a hot spot selection made on one period predicts the next: PAI and RRI.

A *selection* is a boolean mask over analysis units (grid cells, hexagons, small areas)
chosen on a training period — the hot cells of a Gi* run, the top KDE cells, an emerging
hot spot category. It is scored on the incidents of the following (test) period with the
Predictive Accuracy Index of Chainey, Tompson and Uhlig (2008) and the Recapture Rate Index
of Levine (2008), so a planner can compare methods and scales by how many future incidents
they would have caught on how little area.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from spatial import AnalysisError

__all__ = [
    "Evaluation",
    "compare_selections",
    "evaluate_selection",
    "pai",
    "rri",
    "select_top_area",
]


def _check_count(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise AnalysisError(f"{name} must be a finite number >= 0, got {value}")
    return value


def pai(
    hits_in_selected: float, total_hits: float, selected_area: float, total_area: float
) -> float:
    """Predictive Accuracy Index of a selection.

    Parameters
    ----------
    hits_in_selected : float
        Incidents of the test period inside the selected area (``n``).
    total_hits : float
        Incidents of the test period in the whole study area (``N``).
    selected_area : float
        Area of the selection (``a``), in any unit.
    total_area : float
        Area of the study area (``A``), same unit.

    Returns
    -------
    float
        ``(n / N) / (a / A)``; NaN when undefined (no incident, or an empty selection).

    Notes
    -----
    Chainey, Tompson and Uhlig (2008): the hit rate divided by the area share,

    .. math:: PAI = \\frac{n / N}{a / A}

    1 is what a random selection of the same size would score; higher is better. It rewards
    small selections that catch many incidents, so compare methods at similar area shares.

    References
    ----------
    Chainey, S., Tompson, L. and Uhlig, S. (2008). The utility of hotspot mapping for
    predicting spatial patterns of crime. Security Journal 21(1-2), 4-28.
    doi:10.1057/palgrave.sj.8350066

    Examples
    --------
    >>> pai(30, 100, 5.0, 100.0)
    6.0
    """
    n = _check_count("hits_in_selected", hits_in_selected)
    big_n = _check_count("total_hits", total_hits)
    a = _check_count("selected_area", selected_area)
    big_a = _check_count("total_area", total_area)
    if n > big_n:
        raise AnalysisError(f"hits_in_selected ({n:g}) exceeds total_hits ({big_n:g})")
    if a > big_a * (1 + 1e-9):
        raise AnalysisError(f"selected_area ({a:g}) exceeds total_area ({big_a:g})")
    if big_n == 0 or a == 0 or big_a == 0:
        return math.nan
    return (n * big_a) / (big_n * a)  # (n/N)/(a/A), with one rounding


def rri(hits_before: float, hits_after: float, total_before: float, total_after: float) -> float:
    """Recapture Rate Index of a selection.

    Parameters
    ----------
    hits_before : float
        Incidents of the training period inside the selection (``n1``).
    hits_after : float
        Incidents of the test period inside the selection (``n2``).
    total_before : float
        Incidents of the training period in the study area (``N1``).
    total_after : float
        Incidents of the test period in the study area (``N2``).

    Returns
    -------
    float
        ``(n2 / n1) / (N2 / N1)``; NaN when undefined (``n1``, ``N1`` or ``N2`` is 0).

    Notes
    -----
    Levine (2008) proposed the RRI to complement the PAI: how well the selection *recaptures*
    its incidents in the next period, relative to the change over the whole area,

    .. math:: RRI = \\frac{n_2 / n_1}{N_2 / N_1}

    1 means the selection keeps its share of incidents; below 1 it loses them (regression to
    the mean), above 1 it concentrates them further. It does not depend on area.

    References
    ----------
    Levine, N. (2008). The "hottest" part of a hotspot: comments on "The utility of hotspot
    mapping for predicting spatial patterns of crime". Security Journal 21(4), 295-302.
    doi:10.1057/sj.2008.5

    Examples
    --------
    >>> rri(40, 30, 200, 100)
    1.5
    """
    n1 = _check_count("hits_before", hits_before)
    n2 = _check_count("hits_after", hits_after)
    big_n1 = _check_count("total_before", total_before)
    big_n2 = _check_count("total_after", total_after)
    if n1 > big_n1:
        raise AnalysisError(f"hits_before ({n1:g}) exceeds total_before ({big_n1:g})")
    if n2 > big_n2:
        raise AnalysisError(f"hits_after ({n2:g}) exceeds total_after ({big_n2:g})")
    if n1 == 0 or big_n1 == 0 or big_n2 == 0:
        return math.nan
    return (n2 * big_n1) / (n1 * big_n2)  # (n2/n1)/(N2/N1), with one rounding


@dataclass(frozen=True)
class Evaluation:
    """Scores of one selection, with the numbers behind them.

    Attributes
    ----------
    units : int
        Selected units.
    selected_area, total_area : float
        ``a`` and ``A`` (the unit of ``areas``).
    hits_train, total_train : float
        Incidents of the training period in the selection and in the study area.
    hits_test, total_test : float
        Incidents of the test period in the selection and in the study area.
    hit_rate : float
        ``hits_test / total_test``: share of future incidents caught.
    area_share : float
        ``selected_area / total_area``.
    pai : float
        Predictive Accuracy Index on the test period (:func:`pai`).
    pai_train : float
        The same on the training period (how well the selection fits the data it came from).
    rri : float
        Recapture Rate Index (:func:`rri`).
    """

    units: int
    selected_area: float
    total_area: float
    hits_train: float
    total_train: float
    hits_test: float
    total_test: float
    hit_rate: float
    area_share: float
    pai: float
    pai_train: float
    rri: float


def _unit_arrays(
    selected_mask: np.ndarray,
    counts_train: np.ndarray,
    counts_test: np.ndarray,
    areas: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    counts_train = np.asarray(counts_train, dtype=float).ravel()
    counts_test = np.asarray(counts_test, dtype=float).ravel()
    n = counts_train.size
    mask = np.asarray(selected_mask).ravel()
    if mask.dtype != bool:
        raise AnalysisError("selected_mask must be a boolean array (one value per unit)")
    area = (
        np.broadcast_to(np.asarray(areas, dtype=float), (n,))
        if np.ndim(areas) == 0
        else (np.asarray(areas, dtype=float).ravel())
    )
    for name, values in (("counts_test", counts_test), ("areas", area), ("selected_mask", mask)):
        if values.size != n:
            raise AnalysisError(f"{name} has {values.size} values for {n} units")
    for name, values in (("counts_train", counts_train), ("counts_test", counts_test)):
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise AnalysisError(f"{name} must hold finite counts >= 0")
    if not np.all(np.isfinite(area)) or np.any(area <= 0):
        raise AnalysisError("areas must be finite and positive")
    return mask, counts_train, counts_test, area


def evaluate_selection(
    selected_mask: np.ndarray,
    counts_train: np.ndarray,
    counts_test: np.ndarray,
    areas: np.ndarray | float,
) -> Evaluation:
    """Score a selection of units made on one period against the next.

    Parameters
    ----------
    selected_mask : array_like of bool, shape (n_units,)
        Units selected as hot spots (from the training period).
    counts_train : array_like, shape (n_units,)
        Incidents per unit in the training period.
    counts_test : array_like, shape (n_units,)
        Incidents per unit in the test period.
    areas : array_like, shape (n_units,), or float
        Area of each unit (one number for a regular grid), any unit (km² is usual).

    Returns
    -------
    Evaluation
        Hit rate, area share, PAI (test and training), RRI and the counts.

    Notes
    -----
    ``hit_rate = n/N`` and ``area_share = a/A`` on the test period; ``pai`` after Chainey et
    al. (2008), ``rri`` after Levine (2008). Undefined ratios are NaN (e.g. RRI of a
    selection with no training incident).

    References
    ----------
    Chainey, S., Tompson, L. and Uhlig, S. (2008). The utility of hotspot mapping for
    predicting spatial patterns of crime. Security Journal 21(1-2), 4-28.
    doi:10.1057/palgrave.sj.8350066

    Levine, N. (2008). The "hottest" part of a hotspot. Security Journal 21(4), 295-302.
    doi:10.1057/sj.2008.5
    """
    mask, train, test, area = _unit_arrays(selected_mask, counts_train, counts_test, areas)
    a, big_a = float(area[mask].sum()), float(area.sum())
    n1, big_n1 = float(train[mask].sum()), float(train.sum())
    n2, big_n2 = float(test[mask].sum()), float(test.sum())
    return Evaluation(
        units=int(mask.sum()),
        selected_area=a,
        total_area=big_a,
        hits_train=n1,
        total_train=big_n1,
        hits_test=n2,
        total_test=big_n2,
        hit_rate=n2 / big_n2 if big_n2 else math.nan,
        area_share=a / big_a,
        pai=pai(n2, big_n2, a, big_a),
        pai_train=pai(n1, big_n1, a, big_a),
        rri=rri(n1, n2, big_n1, big_n2),
    )


def compare_selections(
    selections: Mapping[str, np.ndarray],
    counts_train: np.ndarray,
    counts_test: np.ndarray,
    areas: np.ndarray | float,
) -> pd.DataFrame:
    """Score several selections on the same periods, one row each.

    Parameters
    ----------
    selections : mapping of str to array_like of bool
        Name (e.g. "Gi* 1 km, 95 %", "KDE top 5 %") to selection mask over the same units.
    counts_train, counts_test, areas
        As in :func:`evaluate_selection`.

    Returns
    -------
    pandas.DataFrame
        Columns ``selection`` and every field of :class:`Evaluation`, in the order given,
        plus ``rank_pai`` (1 = highest PAI).
    """
    if not selections:
        raise AnalysisError("no selection to compare")
    rows = [
        {"selection": name, **asdict(evaluate_selection(mask, counts_train, counts_test, areas))}
        for name, mask in selections.items()
    ]
    frame = pd.DataFrame(rows)
    frame["rank_pai"] = frame["pai"].rank(ascending=False, method="min").astype("Int64")
    return frame


def select_top_area(
    scores: np.ndarray, areas: np.ndarray | float, *, area_share: float = 0.05
) -> np.ndarray:
    """Select the highest-scoring units until they cover a share of the study area.

    Parameters
    ----------
    scores : array_like, shape (n_units,)
        Any ranking score (Gi* z, KDE density, counts); NaN is never selected.
    areas : array_like, shape (n_units,), or float
        Area of each unit.
    area_share : float, default 0.05
        Target share of the total area, in (0, 1].

    Returns
    -------
    numpy.ndarray of bool
        Units in decreasing score order whose cumulative area stays within the share (at
        least the top unit). Ties at the cut are broken by unit order.

    Notes
    -----
    Comparing PAIs is fair only at similar area shares (Chainey et al. 2008); this gives each
    method the same budget of area.
    """
    scores = np.asarray(scores, dtype=float).ravel()
    n = scores.size
    area = np.full(n, float(areas)) if np.ndim(areas) == 0 else np.asarray(areas, float).ravel()
    if area.size != n:
        raise AnalysisError(f"areas has {area.size} values for {n} units")
    if not 0 < area_share <= 1:
        raise AnalysisError(f"area_share must be in (0, 1], got {area_share}")
    valid = np.isfinite(scores)
    if not valid.any():
        raise AnalysisError("no finite score to rank")
    order = np.argsort(-np.where(valid, scores, -np.inf), kind="stable")
    order = order[valid[order]]
    cumulative = np.cumsum(area[order])
    take = max(1, int(np.searchsorted(cumulative, area_share * area.sum(), side="right")))
    mask = np.zeros(n, dtype=bool)
    mask[order[:take]] = True
    return mask
