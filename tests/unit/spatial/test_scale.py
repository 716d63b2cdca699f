"""Optimized hot spot support: incremental spatial autocorrelation, scale, enough data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from esda.moran import Moran
from libpysal.weights import DistanceBand
from numpy.testing import assert_allclose

from spatial import AnalysisError
from spatial.scale import (
    check_enough,
    choose_scale,
    incremental_spatial_autocorrelation,
    locational_outliers,
)


def _planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """40 x 40 cells of 100 m; +3 in discs of radius 400 m every 1,200 m, N(0, 1) noise."""
    rng = np.random.default_rng(seed)
    xx, yy = np.meshgrid(np.arange(40) * 100.0, np.arange(40) * 100.0)
    x, y = xx.ravel(), yy.ravel()
    values = rng.normal(0.0, 1.0, x.size)
    for cx in np.arange(600.0, 4_000.0, 1_200.0):
        for cy in np.arange(600.0, 4_000.0, 1_200.0):
            values[np.hypot(x - cx, y - cy) <= 400.0] += 3.0
    return x, y, values


def test_moran_per_band_equals_esda():
    x, y, values = _planted()
    table = incremental_spatial_autocorrelation(x, y, values, distances=[150.0, 300.0])
    for _, row in table.iterrows():
        w = DistanceBand(np.column_stack([x, y]), threshold=row.distance, binary=True)
        w.transform = "r"
        reference = Moran(values, w, permutations=0)
        # ArcGIS's Global Moran's I reports z and p under randomisation (esda's z_rand)
        assert_allclose(
            [row.i, row.z, row.p],
            [reference.I, reference.z_rand, reference.p_rand],
            rtol=1e-9,
        )


def test_moran_per_band_equals_global_moran_on_distance_band():
    from spatial.lisa import global_moran
    from spatial.weights import distance_band

    x, y, values = _planted(seed=1)
    x, y = x + np.repeat([0.0, 0.0, 30.0, 0.0], 400), y  # a few irregular gaps
    table = incremental_spatial_autocorrelation(x, y, values, distances=[250.0])
    reference = global_moran(values, distance_band(x, y, threshold=250.0), permutations=0)
    row = table.iloc[0]
    assert_allclose(
        [row.i, row.expected, row.variance, row.z, row.p],
        [
            reference.i,
            reference.expected,
            reference.variance_rand,
            reference.z_rand,
            reference.p_rand,
        ],
        rtol=1e-9,
    )


def test_planted_clustering_scale_is_the_first_peak():
    x, y, values = _planted()
    table = incremental_spatial_autocorrelation(x, y, values)
    assert list(table.columns[:5]) == ["distance", "i", "expected", "variance", "z"]
    assert len(table) == 10
    # default start: every cell has a neighbour (100 m); increment: mean NN distance (100 m)
    assert_allclose(table["distance"], np.arange(1, 11) * 100.0)
    choice = choose_scale(table)
    assert choice.reason == "first peak"
    assert 200.0 <= choice.distance <= 500.0  # the discs have a 400 m radius
    assert choice.significant


def test_choose_scale_first_peak_else_maximum():
    table = pd.DataFrame(
        {
            "distance": [100, 200, 300, 400, 500, 600],
            "z": [2.0, 4.0, 3.0, 5.0, 6.0, 5.5],
            "p": [0.04, 0.0001, 0.003, 1e-6, 1e-9, 1e-8],
        }
    )
    first = choose_scale(table)
    assert (first.distance, first.reason) == (200.0, "first peak")
    rising = table.assign(z=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    fallback = choose_scale(rising)
    assert (fallback.distance, fallback.reason) == (600.0, "maximum z")
    # a peak that is not significant is skipped
    weak = table.assign(p=[0.5, 0.2, 0.3, 1e-6, 1e-9, 1e-8])
    assert choose_scale(weak).distance == 500.0


def test_too_few_incidents_or_units_are_refused_with_the_numbers():
    check_enough(30, 30)
    with pytest.raises(AnalysisError, match=r"at least 30 are needed, there are 12"):
        check_enough(12, 100)
    with pytest.raises(AnalysisError) as caught:
        check_enough(5, 6, min_incidents=50, min_units=40)
    message = str(caught.value)
    assert "at least 50" in message and "there are 5" in message
    assert "at least 40" in message and "there are 6" in message
    assert isinstance(caught.value, ValueError)


def test_locational_outliers():
    xx, yy = np.meshgrid(np.arange(20) * 100.0, np.arange(20) * 100.0)
    x = np.append(xx.ravel(), [50_000.0, 0.0])
    y = np.append(yy.ravel(), [50_000.0, 0.0])  # one far point, one duplicate of (0, 0)
    outliers = locational_outliers(x, y)
    assert outliers.sum() == 1
    assert outliers[400]
    assert not outliers[401]
