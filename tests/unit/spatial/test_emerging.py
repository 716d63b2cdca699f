"""Emerging hot spot analysis: space-time Gi*, Mann-Kendall and the ArcGIS Pro pattern table."""

from __future__ import annotations

import numpy as np
import pymannkendall
import pytest
from esda.getisord import G_Local
from libpysal.weights import W, lat2W
from numpy.testing import assert_allclose

from spatial import AnalysisError
from spatial.emerging import (
    PATTERNS,
    classify,
    emerging_hot_spots,
    mann_kendall,
    space_time_gi,
)

N_STEPS = 20
SIDE = 10
CENTRE = 4 * SIDE + 4  # unit (row 4, col 4); its rook neighbours all lie in the patch
PATCH = [r * SIDE + c for r in range(3, 6) for c in range(3, 6)]


def _set(levels: np.ndarray, where, value: float) -> np.ndarray:
    out = levels.copy()
    out[where] = value
    return out


_BASE = np.full(N_STEPS, 10.0)

# Expected category -> counts planted in the 3 x 3 patch (the rest of the 10 x 10 lattice is
# Poisson(10) noise). Each series is built from the ArcGIS Pro definition of the category
# ("How Emerging Hot Spot Analysis works"); with time_lag=1 a planted step also lifts the bin
# that follows it, which the series account for.
PLANTED = {
    "new hot spot": _set(_BASE, -1, 40),
    "consecutive hot spot": _set(_BASE, slice(-4, None), 40),
    "intensifying hot spot": np.linspace(30, 90, N_STEPS),
    "persistent hot spot": 45 + np.tile([2.0, -2.0], N_STEPS // 2),
    "diminishing hot spot": np.linspace(90, 30, N_STEPS),
    "sporadic hot spot": _set(_BASE, [4, 9, 14, 19], 40),
    "oscillating hot spot": _set(_set(_BASE, [3, 4, 5], 0), 19, 40),
    "historical hot spot": _set(_BASE, slice(0, 18), 45),
    "new cold spot": _set(_BASE, -1, 0),
    "consecutive cold spot": _set(_BASE, slice(-3, None), 0),
    "intensifying cold spot": np.linspace(6, 0, N_STEPS),
    "persistent cold spot": np.zeros(N_STEPS),
    "diminishing cold spot": np.linspace(0, 6, N_STEPS),
    "sporadic cold spot": _set(_BASE, [4, 9, 14, 19], 0),
    "oscillating cold spot": _set(_set(_BASE, [2, 3], 40), -1, 0),
    "historical cold spot": _set(_BASE, slice(0, 18), 0),
}


def _lattice() -> W:
    return lat2W(SIDE, SIDE, rook=True)


def _cube(levels: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cube = rng.poisson(10, (SIDE * SIDE, N_STEPS)).astype(float)
    cube[PATCH] = np.round(levels)
    return cube


def test_patterns_table_has_the_17_arcgis_categories():
    names = [p.name for p in PATTERNS]
    assert len(PATTERNS) == 17
    assert len(set(names)) == 17
    assert sorted(p.code for p in PATTERNS) == list(range(-8, 9))
    for kind in (
        "new",
        "consecutive",
        "intensifying",
        "persistent",
        "diminishing",
        "sporadic",
        "oscillating",
        "historical",
    ):
        assert f"{kind} hot spot" in names
        assert f"{kind} cold spot" in names
    assert PATTERNS[-1].name == "no pattern detected"
    assert all(p.definition for p in PATTERNS)


@pytest.mark.parametrize("expected", sorted(PLANTED))
def test_planted_pattern_is_classified(expected):
    result = emerging_hot_spots(_cube(PLANTED[expected]), _lattice())
    assert result.category[CENTRE] == expected
    code = {p.name: p.code for p in PATTERNS}[expected]
    assert result.code[CENTRE] == code


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_noise_gives_no_pattern(seed):
    cube = np.random.default_rng(seed).poisson(10, (SIDE * SIDE, N_STEPS)).astype(float)
    # With ArcGIS Pro's FDR correction pure noise leaves no significant bin at all.
    with_fdr = emerging_hot_spots(cube, _lattice(), fdr=True)
    assert set(with_fdr.category) == {"no pattern detected"}
    # Without it, each bin is a false positive 10 % of the time, so a few units end up
    # "sporadic"/"oscillating"; the great majority must still show no pattern.
    plain = emerging_hot_spots(cube, _lattice())
    assert np.mean(plain.category == "no pattern detected") >= 0.75


@pytest.mark.filterwarnings("ignore:The weights matrix is not fully connected")
@pytest.mark.parametrize("time_lag", [0, 1, 2])
def test_space_time_gi_equals_esda_on_flattened_graph(time_lag):
    rng = np.random.default_rng(7)
    w = lat2W(4, 4, rook=True)
    n, t_steps = 16, 6
    cube = rng.poisson(3, (n, t_steps)).astype(float)
    neighbours, weights = {}, {}
    for t in range(t_steps):
        for i in range(n):
            bin_id = t * n + i
            nb = [
                s * n + j
                for s in range(max(0, t - time_lag), t + 1)
                for j in [i, *w.neighbors[i]]
                if (j, s) != (i, t)
            ]
            neighbours[bin_id], weights[bin_id] = nb, [1.0] * len(nb)
    flat = W(neighbours, weights, silence_warnings=True)
    reference = G_Local(cube.T.ravel(), flat, transform="B", star=True, permutations=0)
    result = space_time_gi(cube, w, time_lag=time_lag)
    assert_allclose(result.z, reference.Zs.reshape(t_steps, n).T, rtol=1e-9, atol=1e-12)
    assert_allclose(result.p, 2 * reference.p_norm.reshape(t_steps, n).T, rtol=1e-9)


def test_mann_kendall_equals_pymannkendall():
    rng = np.random.default_rng(3)
    series = rng.normal(size=(40, 15))
    series[:10] = np.round(series[:10])  # ties
    series[10] += np.arange(15)  # a clear upward trend
    trend = mann_kendall(series)
    for row, z, p, s, tau, direction in zip(
        series, trend.z, trend.p, trend.s, trend.tau, trend.trend, strict=True
    ):
        ref = pymannkendall.original_test(row, alpha=0.05)
        assert_allclose([z, p, s, tau], [ref.z, ref.p, ref.s, ref.Tau], rtol=1e-9, atol=1e-12)
        assert direction == {"increasing": 1, "decreasing": -1, "no trend": 0}[ref.trend]
    assert trend.trend[10] == 1


def test_classify_matches_emerging_result_and_inputs_untouched():
    cube = _cube(PLANTED["intensifying hot spot"])
    before = cube.copy()
    w = _lattice()
    w.transform = "r"
    result = emerging_hot_spots(cube, w)
    assert w.transform == "R"
    assert_allclose(cube, before)
    again = classify(result.z, result.p, result.trend.z, result.trend.p)
    assert (again == result.category).all()
    assert result.z.shape == result.p.shape == (SIDE * SIDE, N_STEPS)


def test_space_time_gi_scales_to_a_large_cube():
    rng = np.random.default_rng(0)
    w = lat2W(150, 200, rook=True)  # 30,000 units
    cube = rng.poisson(1, (30_000, 60)).astype(float)
    result = space_time_gi(cube, w)
    assert result.z.shape == (30_000, 60)
    assert np.isfinite(result.z).all()


def test_bad_input_is_refused():
    w = _lattice()
    with pytest.raises(AnalysisError, match="rows"):
        space_time_gi(np.ones((5, 4)), w)
    with pytest.raises(AnalysisError, match="same value"):
        space_time_gi(np.ones((SIDE * SIDE, 4)), w)
    with pytest.raises(AnalysisError, match="time_lag"):
        space_time_gi(_cube(_BASE), w, time_lag=-1)
