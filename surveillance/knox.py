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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pointpats.spacetime import Knox
from scipy.spatial import cKDTree

__all__ = ["KnoxBands", "knox_bands"]


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
        expected_analytic=_analytic(xy, t, d_edges, t_edges, np.bincount(d_band, minlength=nd)),
        knox_ratio=ratio,
        p_value=(exceed + 1) / (permutations + 1),
        permutations=permutations,
        global_knox=_global(xy, t, d_edges[0], t_edges[0]),
    )


def _analytic(xy, t, d_edges, t_edges, ns_band) -> np.ndarray:
    """Knox's expectation per cell: pairs in the distance band x pairs in the time band / pairs."""
    n = len(t)
    ts = np.sort(t)
    # pairs with |dt| <= edge, from the sorted times
    within = np.array(
        [np.sum(np.searchsorted(ts, ts + e, side="right") - np.arange(1, n + 1)) for e in t_edges]
    )
    nt_band = np.diff(np.concatenate([[0], within]))
    return np.outer(ns_band, nt_band) / (n * (n - 1) / 2)


def _global(xy, t, delta: float, tau: float) -> dict:
    """pointpats' global Knox test for the first cell (no permutations: analytic p-value)."""
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
