"""Rates, Poisson RSE and Empirical Bayes smoothing against esda and hand arithmetic."""

from __future__ import annotations

import libpysal
import numpy as np
import pytest
from esda.smoothing import Empirical_Bayes, Spatial_Empirical_Bayes
from numpy.testing import assert_allclose

from spatial import AnalysisError
from spatial.rates import (
    between_area_variance,
    crude_rate,
    empirical_bayes,
    poisson_rse,
)
from spatial.weights import from_neighbours
from tests.unit.spatial.conftest import RTOL, lattice_with_island


@pytest.fixture(scope="module")
def stl() -> tuple[np.ndarray, np.ndarray, libpysal.weights.W]:
    """St Louis homicides 1979-84 (HC7984) and population (PO7984), 78 counties, with
    ``stl.gal``: the data of esda's smoothing docstrings, as shipped in the libpysal wheel."""
    table = libpysal.io.open(libpysal.examples.get_path("stl_hom.csv"))
    e, b = np.array(table[:, 10], dtype=float), np.array(table[:, 13], dtype=float)
    w = libpysal.io.open(libpysal.examples.get_path("stl.gal")).read()
    return e, b, w


def test_global_eb_matches_esda_documented_values(stl):
    e, b, _ = stl
    assert between_area_variance(e, b) > 0  # esda and we agree only where it is positive
    # esda 2.9 ``Empirical_Bayes`` docstring: ``eb.r[:10]`` (per person, printed to 9 digits).
    documented = [
        2.36718950e-05, 4.54539167e-05, 4.78114019e-05, 2.76907146e-05, 6.58989323e-05,
        3.66494122e-05, 5.79952721e-05, 2.03064590e-05, 3.31152999e-05, 3.02748380e-05,
    ]  # fmt: skip
    smoothed = empirical_bayes(e, b)
    assert_allclose(smoothed[:10], np.array(documented) * 1e5, rtol=5e-9)
    assert_allclose(smoothed, Empirical_Bayes(e, b).r.ravel() * 1e5, rtol=RTOL)


def test_spatial_eb_matches_esda_documented_values(stl):
    e, b, w = stl
    # esda 2.9 ``Spatial_Empirical_Bayes`` docstring: ``s_eb.r[:10]``.
    documented = [
        4.01485749e-05, 3.62437513e-05, 4.93034844e-05, 5.09387329e-05, 3.72735210e-05,
        3.69333797e-05, 5.40245456e-05, 2.99806055e-05, 3.73034109e-05, 3.47270722e-05,
    ]  # fmt: skip
    smoothed = empirical_bayes(e, b, w=w)
    assert_allclose(smoothed[:10], np.array(documented) * 1e5, rtol=5e-9)
    reference = Spatial_Empirical_Bayes(e, b, w).r.ravel() * 1e5
    assert_allclose(smoothed, reference, rtol=RTOL)
    assert w.transform == "O"  # not modified


def test_spatial_eb_accepts_spatial_weights_and_ignores_weight_values(stl):
    e, b, w = stl
    neighbours = [[w.id2i[j] for j in w.neighbors[i]] for i in w.id_order]
    weighted = from_neighbours(
        neighbours, w.id_order, weights=[[0.5] * len(nb) for nb in neighbours]
    )
    assert_allclose(empirical_bayes(e, b, w=weighted), empirical_bayes(e, b, w=w), rtol=RTOL)


def test_global_eb_clamps_a_negative_variance():
    # Counts exactly proportional to population: every crude rate is 50 per 100,000, so
    # sum b (r - m)^2 / sum b = 0 and v = 0 - m / mean(b) < 0.
    e = np.array([10.0, 20.0, 40.0, 5.0])
    b = np.array([20_000.0, 40_000.0, 80_000.0, 10_000.0])
    m = e.sum() / b.sum()  # 75 / 150,000 = 5e-4
    assert between_area_variance(e, b) == pytest.approx(-m / b.mean(), rel=1e-12)
    # Clamped: v = 0, every unit gets the overall rate 50 per 100,000.
    assert_allclose(empirical_bayes(e, b), np.full(4, 50.0), rtol=RTOL)


def test_clamp_pulls_noisy_rates_all_the_way_to_the_mean():
    # Hand example: rates 40, 60, 50 per 100,000 on 10,000 people each (counts 4, 6, 5).
    # m = 15 / 30,000 = 5e-4; spread = sum b (r - m)^2 / sum b = (1e-8 + 1e-8 + 0) / 3
    # = 6.67e-9; m / mean(b) = 5e-4 / 1e4 = 5e-8 > spread, so v < 0 → 0 → all 50.
    e, b = np.array([4.0, 6.0, 5.0]), np.full(3, 10_000.0)
    assert between_area_variance(e, b) == pytest.approx(2e-8 / 3 - 5e-8, rel=1e-12)
    assert_allclose(empirical_bayes(e, b), [50.0, 50.0, 50.0], rtol=RTOL)
    raw = crude_rate(e, b)
    assert_allclose(raw, [40.0, 60.0, 50.0], rtol=RTOL)
    # esda does not clamp: v = 2e-8/3 - 5e-8 = -13e-8/3, the weight v / (v + m / b) =
    # (-13/3) / (-13/3 + 5) = -6.5, so 40 → 50 + 6.5 x 10 = 115 and 60 → 50 - 65 = -15: a
    # negative rate.
    assert_allclose(Empirical_Bayes(e, b).r.ravel() * 1e5, [115.0, -15.0, 50.0], rtol=1e-9)


def test_global_eb_lies_between_raw_rate_and_overall_rate():
    e = np.array([2.0, 60.0, 5.0, 1.0, 30.0])
    b = np.array([10_000.0, 100_000.0, 20_000.0, 30_000.0, 25_000.0])
    assert between_area_variance(e, b) > 0
    raw, smoothed = crude_rate(e, b), empirical_bayes(e, b)
    overall = e.sum() / b.sum() * 1e5
    low, high = np.minimum(raw, overall), np.maximum(raw, overall)
    assert np.all((low <= smoothed) & (smoothed <= high))
    # Small populations move most: Toledo-like unit 4 (1 event in 30,000) vs unit 2.
    assert abs(smoothed[3] - raw[3]) / abs(overall - raw[3]) > abs(smoothed[1] - raw[1]) / abs(
        overall - raw[1]
    )


def test_spatial_eb_clamps_and_handles_islands_and_missing_population():
    w = lattice_with_island(3, 3)  # 9 lattice units + "island"
    e = np.array([1, 2, 3, 1, 2, 3, 1, 2, 3, 4], dtype=float)
    b = np.full(10, 10_000.0)
    b[4] = np.nan  # no population: no rate, and left out of its neighbours' sums
    smoothed = empirical_bayes(e, b, w=w)
    assert np.isnan(smoothed[4])
    # The island's neighbourhood is itself: m = own rate and v = -m/b < 0 → 0 → own rate.
    assert smoothed[9] == pytest.approx(40.0, rel=RTOL)
    # Reference: esda on the same data without the unit lacking population.
    keep = [i for i in range(10) if i != 4]
    ids = [w.id_order[i] for i in keep]
    sub = libpysal.weights.W(
        {i: [j for j in w.neighbors[i] if j in ids] for i in ids}, id_order=ids,
        silence_warnings=True,
    )  # fmt: skip
    reference = Spatial_Empirical_Bayes(e[keep], b[keep], sub).r.ravel() * 1e5
    assert_allclose(smoothed[keep], reference, rtol=RTOL)


def test_no_events_give_zero_rates_not_nan():
    e, b = np.zeros(3), np.array([1_000.0, 2_000.0, 3_000.0])
    assert_allclose(empirical_bayes(e, b), 0.0)
    w = libpysal.weights.lat2W(1, 3)
    assert_allclose(empirical_bayes(e, b, w=w), 0.0)


def test_inputs_are_not_modified():
    e, b = np.array([1.0, 5.0, 9.0]), np.array([1e4, 2e4, 3e4])
    before = (e.copy(), b.copy())
    empirical_bayes(e, b, w=libpysal.weights.lat2W(1, 3))
    assert_allclose(e, before[0])
    assert_allclose(b, before[1])


def test_poisson_rse_and_crude_rate():
    # RSE = 1 / sqrt(count): 25 events → 0.2, 100 → 0.1; undefined for 0.
    assert_allclose(poisson_rse([25, 100, 4])[:3], [0.2, 0.1, 0.5], rtol=RTOL)
    assert np.isnan(poisson_rse([0])[0])
    # 3 / 37,123.9 x 100,000 = 8.0811...
    assert crude_rate([3], [37_123.9])[0] == pytest.approx(3 / 37_123.9 * 1e5, rel=RTOL)
    assert np.isnan(crude_rate([3], [0.0])[0])


def test_bad_inputs_raise_analysis_errors():
    with pytest.raises(AnalysisError, match="counts but"):
        empirical_bayes([1, 2], [1, 2, 3])
    with pytest.raises(AnalysisError, match="non-negative"):
        empirical_bayes([-1, 2], [10, 20])
    with pytest.raises(AnalysisError, match="weights on"):
        empirical_bayes([1, 2], [10, 20], w=libpysal.weights.lat2W(1, 3))
    with pytest.raises(AnalysisError, match="libpysal"):
        empirical_bayes([1, 2], [10, 20], w=object())
