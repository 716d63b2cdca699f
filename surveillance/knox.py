"""Knox test for near repeat over distance x time bands (Ratcliffe's Near Repeat Calculator).

For every pair of events, the spatial distance and the time difference fall in one
distance band and one time band (or beyond the last). Per band cell the result gives the
observed number of pairs, the expected number under no space-time interaction (the mean
over Monte Carlo permutations of the event times among the events, as the Near Repeat
Calculator does), the Knox ratio observed / expected, and the pseudo p-value
``(#{simulated >= observed} + 1) / (permutations + 1)``. It also gives the analytic
expectation ``NS * NT / pairs`` of Knox's 2 x 2 table.

Bands are closed on the right: the first distance band is ``[0, d1]``, the next
``(d1, d2]``, and so on; likewise for time. So the first cell is exactly the "close in
space and time" count of ``pointpats.spacetime.Knox(delta=d1, tau=t1)``, whose global
test (observed and expected tables, Poisson p-value) is reported alongside.

The global test is computed here from the same pair counts, with pointpats' formulas
(``pointpats.spacetime._knox``): pointpats keeps a Python set of temporal neighbours per
event, about 40 million entries for 60,000 incidents over five years and a 14-day
window, so it is run for small inputs only (``POINTPATS_MAX_EVENTS``, where it costs
well under a second) and must agree; the tests pin both on pointpats' own example.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pointpats.spacetime import Knox
from scipy.spatial import cKDTree
from scipy.stats import poisson

__all__ = ["POINTPATS_MAX_EVENTS", "KnoxBands", "count_pairs", "knox_bands", "near_repeat_zone"]

# Up to this many events the global test is also pointpats' own (and must agree).
POINTPATS_MAX_EVENTS = 2000


@dataclass(frozen=True)
class KnoxBands:
    """Per band cell (distance band i, time band j) arrays of shape (len(d), len(t)).

    ``distance_edges``/``time_edges`` are the upper edges of the bands. ``global_knox``
    is pointpats' Knox for the first cell: statistic, expected, p_poisson, observed and
    expected 2 x 2 tables.
    """

    distance_edges: np.ndarray
    time_edges: np.ndarray
    observed: np.ndarray  # pairs per band cell
    expected: np.ndarray  # mean over permutations
    expected_analytic: np.ndarray  # NS_band * NT_band / pairs
    knox_ratio: np.ndarray  # observed / expected (NaN if expected is 0)
    p_value: np.ndarray  # one-sided Monte Carlo p-value
    permutations: int
    global_knox: dict

    def rows(self) -> list[dict]:
        """One dict per band cell, for JSON or CSV."""
        out = []
        d_lo = np.concatenate([[0.0], self.distance_edges[:-1]])
        t_lo = np.concatenate([[0.0], self.time_edges[:-1]])
        for i, j in np.ndindex(self.observed.shape):
            ratio = self.knox_ratio[i, j]
            out.append(
                {
                    "distance_from": float(d_lo[i]),
                    "distance_to": float(self.distance_edges[i]),
                    "time_from": float(t_lo[j]),
                    "time_to": float(self.time_edges[j]),
                    "observed": int(self.observed[i, j]),
                    "expected": float(self.expected[i, j]),
                    "knox_ratio": None if np.isnan(ratio) else float(ratio),
                    "p_value": float(self.p_value[i, j]),
                }
            )
        return out


def _edges(values, name: str) -> np.ndarray:
    edges = np.asarray(values, dtype=float)
    if edges.ndim != 1 or len(edges) == 0 or (edges <= 0).any() or (np.diff(edges) <= 0).any():
        raise ValueError(f"{name} must be positive and increasing")
    return edges


def _band(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Band index of each value (edges closed on the right); len(edges) beyond the last."""
    return np.searchsorted(edges, values, side="left")


def knox_bands(
    coords,
    times,
    distance_edges,
    time_edges,
    *,
    permutations: int = 999,
    seed: int | None = None,
) -> KnoxBands:
    """Knox test per distance x time band with Monte Carlo permutations of the times.

    Parameters
    ----------
    coords : (n, 2) projected coordinates (metres)
    times : (n,) event times as numbers (e.g. days)
    distance_edges : upper edges of the distance bands, increasing (first band from 0)
    time_edges : upper edges of the time bands, increasing (first band from 0)
    permutations : number of random permutations of the times (default 999)
    seed : seed of numpy's default_rng, for reproducible p-values

    The first band cell's count equals ``pointpats.spacetime.Knox(coords, times,
    delta=distance_edges[0], tau=time_edges[0]).statistic_``.
    """
    xy = np.asarray(coords, dtype=float)
    t = np.asarray(times, dtype=float).reshape(-1)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) != len(t):
        raise ValueError("coords must be (n, 2) with one time per event")
    if len(t) < 3:
        raise ValueError("the Knox test needs at least 3 events")
    if not (np.isfinite(xy).all() and np.isfinite(t).all()):
        raise ValueError("coordinates and times must be finite")
    if permutations < 1:
        raise ValueError("permutations must be at least 1")
    d_edges, t_edges = _edges(distance_edges, "distance_edges"), _edges(time_edges, "time_edges")
    nd, nt = len(d_edges), len(t_edges)

    # pairs close enough in space for some band; their distance band never changes
    pairs = cKDTree(xy).query_pairs(r=d_edges[-1], output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    d_band = _band(np.hypot(*(xy[i] - xy[j]).T), d_edges)

    def table(tt: np.ndarray) -> np.ndarray:
        t_band = _band(np.abs(tt[i] - tt[j]), t_edges)
        keep = t_band < nt
        cells = np.bincount(d_band[keep] * nt + t_band[keep], minlength=nd * nt)
        return cells.reshape(nd, nt)

    observed = table(t)
    ns_band = np.bincount(d_band, minlength=nd)
    within = _within(t, t_edges)
    expected_analytic = np.outer(ns_band, np.diff(np.concatenate([[0], within])))
    expected_analytic = expected_analytic / (len(t) * (len(t) - 1) / 2)
    global_knox = _global_table(len(t), ns_band[0], within[0], observed[0, 0])
    global_knox = {"delta": float(d_edges[0]), "tau": float(t_edges[0]), **global_knox}
    if len(t) <= POINTPATS_MAX_EVENTS:
        global_knox = _global(xy, t, d_edges[0], t_edges[0])
    rng = np.random.default_rng(seed)
    total = np.zeros((nd, nt))
    exceed = np.zeros((nd, nt))
    for _ in range(permutations):
        sim = table(rng.permutation(t))
        total += sim
        exceed += sim >= observed
    expected = total / permutations
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(expected > 0, observed / expected, np.nan)
    return KnoxBands(
        distance_edges=d_edges,
        time_edges=t_edges,
        observed=observed,
        expected=expected,
        expected_analytic=expected_analytic,
        knox_ratio=ratio,
        p_value=(exceed + 1) / (permutations + 1),
        permutations=permutations,
        global_knox=global_knox,
    )


def _within(t: np.ndarray, t_edges: np.ndarray) -> np.ndarray:
    """Pairs with ``|dt| <= edge`` for each edge, from the sorted times."""
    n = len(t)
    ts = np.sort(t)
    return np.array(
        [np.sum(np.searchsorted(ts, ts + e, side="right") - np.arange(1, n + 1)) for e in t_edges]
    )


def _global_table(n: int, ns: int, nt: int, nst: int) -> dict:
    """Knox's 2 x 2 test from the pair counts, with pointpats' formulas (``_knox``):
    ``E[NST] = NS * NT / pairs`` and the one-sided Poisson p ``1 - F(NST; E[NST])``."""
    pairs = n * (n - 1) / 2
    ns, nt, nst = float(ns), float(nt), float(nst)
    e = ns * nt / pairs
    observed = [[nst, ns - nst], [nt - nst, pairs - ns - nt + nst]]
    expected = [[e, ns - e], [nt - e, 0.0]]
    expected[1][1] = pairs - (e + (ns - e) + (nt - e))
    return {
        "statistic": int(nst),
        "expected": e,
        "p_poisson": float(1 - poisson.cdf(nst, e)),
        "observed_table": observed,
        "expected_table": expected,
    }


def _global(xy, t, delta: float, tau: float) -> dict:
    """pointpats' global Knox test for the first cell (no permutations: analytic p-value);
    the same numbers as :func:`_global_table` (small inputs only: see the module's notes)."""
    k = Knox(xy, t.reshape(-1, 1), delta=delta, tau=tau, permutations=0)
    return {
        "delta": float(delta),
        "tau": float(tau),
        "statistic": int(k.statistic_),
        "expected": float(k.expected[0, 0]),
        "p_poisson": float(k.p_poisson),
        "observed_table": k.observed.tolist(),
        "expected_table": k.expected.tolist(),
    }


def count_pairs(coords, max_distance: float) -> int:
    """How many unordered pairs of events lie within ``max_distance`` of each other: the
    pairs :func:`knox_bands` tallies once per permutation (its cost), counted without
    listing them (a k-d tree's dual count)."""
    xy = np.asarray(coords, dtype=float)
    if len(xy) < 2:
        return 0
    tree = cKDTree(xy)
    ordered = int(tree.count_neighbors(tree, float(max_distance)))
    return (ordered - len(xy)) // 2  # every event counts itself once


def near_repeat_zone(result: KnoxBands, alpha: float = 0.05) -> tuple[int, int] | None:
    """The near-repeat zone of a result: the indices (distance band, time band) of its
    outer corner, or None when the closest cell is not significant.

    A cell is significant when its Monte Carlo p-value is at most ``alpha`` and its Knox
    ratio above 1. The zone starts at the closest cell (same place, soon after) and
    reaches outwards while the cells stay significant: along distance in the first time
    band, along time in the first distance band (Ratcliffe's reading of the Near Repeat
    Calculator's table: "within d metres and t days of an incident, the risk is raised").
    """
    ratio = np.nan_to_num(result.knox_ratio, nan=0.0)
    significant = (result.p_value <= alpha) & (ratio > 1)
    if not significant[0, 0]:
        return None

    def reach(flags: np.ndarray) -> int:
        stops = np.flatnonzero(~flags)
        return int(stops[0] - 1) if len(stops) else len(flags) - 1

    return reach(significant[:, 0]), reach(significant[0, :])
