"""Knox test per band: pointpats' documented Burkitt example reproduces."""

from __future__ import annotations

import geopandas
import libpysal
import numpy as np
import pytest
from pointpats.spacetime import Knox

from surveillance.knox import knox_bands


@pytest.fixture(scope="module")
def burkitt():
    """Burkitt's lymphoma cases (libpysal example): coordinates and days."""
    df = geopandas.read_file(libpysal.examples.get_path("burkitt.shp"))
    return df[["X", "Y"]].to_numpy(float), df["T"].to_numpy(float)


def test_pointpats_documented_example(burkitt) -> None:
    """Knox(delta=20, tau=5) on Burkitt: statistic 13, expected 10.1438161, p 0.146245..."""
    xy, t = burkitt
    res = knox_bands(xy, t, [20], [5], permutations=99, seed=1)
    assert res.observed[0, 0] == 13  # pointpats' docstring: global_knox.statistic_ == 13
    g = res.global_knox
    assert g["statistic"] == 13
    assert g["p_poisson"] == pytest.approx(0.14624558197140414, abs=1e-15)
    np.testing.assert_allclose(g["observed_table"], [[13, 3416], [39, 14110]])
    np.testing.assert_allclose(
        g["expected_table"], [[10.1438161, 3418.85618], [41.8561839, 14107.1438]], rtol=1e-8
    )
    assert res.expected_analytic[0, 0] == pytest.approx(10.1438161, abs=1e-7)


def test_bands_add_up_to_pointpats_cumulative_counts(burkitt) -> None:
    """Each band cell equals the inclusion-exclusion of pointpats' cumulative Knox counts."""
    xy, t = burkitt
    d_edges, t_edges = [10, 20, 40], [5, 15, 30]
    res = knox_bands(xy, t, d_edges, t_edges, permutations=19, seed=0)

    def cum(d: float, tau: float) -> int:
        if d == 0 or tau == 0:
            return 0
        return Knox(xy, t.reshape(-1, 1), delta=d, tau=tau, permutations=0).statistic_

    d_lo, t_lo = [0, *d_edges[:-1]], [0, *t_edges[:-1]]
    for a in range(3):
        for b in range(3):
            expect = cum(d_edges[a], t_edges[b]) - cum(d_lo[a], t_edges[b])
            expect -= cum(d_edges[a], t_lo[b]) - cum(d_lo[a], t_lo[b])
            assert res.observed[a, b] == expect


def test_seeded_and_planted_near_repeat() -> None:
    """Same seed, same p-values; planted near repeats give a ratio > 1 and p < 0.05."""
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 5000, (300, 2))
    t = rng.uniform(0, 365, 300)
    # 40 follow-up events within 50 m and 7 days of a random earlier event
    src = rng.integers(0, 300, 40)
    xy = np.vstack([xy, xy[src] + rng.uniform(-30, 30, (40, 2))])
    t = np.concatenate([t, t[src] + rng.uniform(0, 7, 40)])
    a = knox_bands(xy, t, [100, 200], [7, 14], permutations=199, seed=3)
    b = knox_bands(xy, t, [100, 200], [7, 14], permutations=199, seed=3)
    np.testing.assert_array_equal(a.p_value, b.p_value)
    assert a.knox_ratio[0, 0] > 3
    assert a.p_value[0, 0] == pytest.approx(1 / 200)
    assert len(a.rows()) == 4 and a.rows()[0]["distance_to"] == 100.0


def test_bad_input() -> None:
    """Non-increasing edges and mismatched arrays are refused."""
    with pytest.raises(ValueError, match="increasing"):
        knox_bands(np.zeros((5, 2)), np.arange(5), [20, 10], [5])
    with pytest.raises(ValueError, match="one time per event"):
        knox_bands(np.zeros((5, 2)), np.arange(4), [20], [5])


def test_global_table_equals_pointpats(burkitt) -> None:
    """The global test from our pair counts (used beyond POINTPATS_MAX_EVENTS) equals
    pointpats' Knox on its documented example and on other thresholds."""
    from surveillance.knox import _global, _global_table

    xy, t = burkitt
    for delta, tau in ((20, 5), (10, 30), (40, 60)):
        res = knox_bands(xy, t, [delta], [tau], permutations=1, seed=0)
        ns = int((np.hypot(*(xy[:, None] - xy[None]).transpose(2, 0, 1)) <= delta).sum() - len(t))
        nt = int((np.abs(t[:, None] - t[None]) <= tau).sum() - len(t))
        ours = _global_table(len(t), ns // 2, nt // 2, int(res.observed[0, 0]))
        theirs = _global(xy, t, delta, tau)
        assert ours["statistic"] == theirs["statistic"]
        assert ours["p_poisson"] == pytest.approx(theirs["p_poisson"], abs=1e-15)
        np.testing.assert_allclose(ours["observed_table"], theirs["observed_table"], rtol=1e-12)
        np.testing.assert_allclose(ours["expected_table"], theirs["expected_table"], rtol=1e-12)


def test_count_pairs_and_zone() -> None:
    """count_pairs is the number of pairs query_pairs lists; the zone of a planted near
    repeat (within 100 m and 7 days) is the first distance band and the first time band."""
    from scipy.spatial import cKDTree

    from surveillance.knox import count_pairs, near_repeat_zone

    rng = np.random.default_rng(11)
    xy = rng.uniform(0, 5000, (400, 2))
    t = rng.uniform(0, 365, 400)
    assert count_pairs(xy, 300) == len(cKDTree(xy).query_pairs(300))
    assert count_pairs(xy[:1], 300) == 0
    src = rng.integers(0, 400, 60)
    xy = np.vstack([xy, xy[src] + rng.uniform(-40, 40, (60, 2))])
    t = np.concatenate([t, t[src] + rng.uniform(0, 6, 60)])
    res = knox_bands(xy, t, [100, 200, 400], [7, 14, 28], permutations=99, seed=5)
    assert near_repeat_zone(res) == (0, 0)
    # no pattern: times shuffled away from the places
    flat = knox_bands(xy, rng.permutation(t), [100, 200], [7, 14], permutations=99, seed=5)
    assert near_repeat_zone(flat, alpha=0.01) is None
