"""Kernel density: ArcGIS's quartic kernel, default search radius, GeoTIFF and hot areas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
import shapely
from numpy.testing import assert_allclose

from spatial import AnalysisError, kde
from spatial.kde import default_bandwidth, hot_areas, quartic_kde, write_geotiff

# Belize City, EPSG:32616 metres
X0, Y0 = 356_000.0, 1_934_000.0


def _cluster(n: int, sd: float, seed: int, centre=(X0, Y0)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(centre[0], sd, n), rng.normal(centre[1], sd, n)


def _cell_centres(surface: kde.KdeSurface) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = surface.density.shape
    xmin, _, _, ymax = surface.bounds
    cx = xmin + (np.arange(cols) + 0.5) * surface.cell_size
    cy = ymax - (np.arange(rows) + 0.5) * surface.cell_size
    return np.meshgrid(cx, cy)


def test_surface_integrates_to_the_number_of_incidents():
    x, y = _cluster(5_000, 800.0, seed=1)
    surface = quartic_kde(x, y)  # default extent: the points grown by the bandwidth
    assert surface.integral() == pytest.approx(5_000, rel=0.02)
    weights = np.random.default_rng(2).integers(1, 4, x.size).astype(float)
    weighted = quartic_kde(x, y, weights=weights, bandwidth=1_500.0, cell_size=100.0)
    assert weighted.integral() == pytest.approx(weights.sum(), rel=0.02)
    assert weighted.total == weights.sum()


def test_single_point_kernel_is_the_quartic_shape():
    radius, cell = 1_000.0, 50.0
    bounds = (X0 - 2_000, Y0 - 2_000, X0 + 2_000, Y0 + 2_000)
    # the point sits on a cell centre
    surface = quartic_kde([X0 + 25.0], [Y0 + 25.0], bandwidth=radius, cell_size=cell, bounds=bounds)
    cx, cy = _cell_centres(surface)
    d2 = (cx - (X0 + 25.0)) ** 2 + (cy - (Y0 + 25.0)) ** 2
    # ArcGIS / Silverman (1986, eq. 4.5): 3 / (pi r^2) (1 - d^2 / r^2)^2 per m^2, 0 beyond r
    expected = np.where(d2 < radius**2, 3 / (math.pi * radius**2) * (1 - d2 / radius**2) ** 2, 0)
    assert_allclose(surface.density, expected * 1e6, rtol=1e-12, atol=1e-15)
    assert surface.density.max() == pytest.approx(3 / (math.pi * radius**2) * 1e6)
    assert surface.integral() == pytest.approx(1.0, rel=0.01)


def test_default_bandwidth_against_hand_computation():
    x = np.array([0.0, 100.0, 0.0, 100.0, 50.0])
    y = np.array([0.0, 0.0, 100.0, 100.0, 50.0])
    # ArcGIS Pro "How Kernel Density works": 0.9 * min(SD, sqrt(1/ln 2) * Dm) * n^-0.2.
    # Mean centre (50, 50); distances 4 x 70.7107 and 0 -> Dm = 70.7107;
    # SD = sqrt(4 * 5000 / 5) = 63.2456 < sqrt(1/ln 2) * Dm = 84.932;
    # 0.9 * 63.2456 * 5 ** -0.2 = 0.9 * 63.2456 * 0.724780 = 41.2552
    assert default_bandwidth(x, y) == pytest.approx(0.9 * math.sqrt(4000) * 5**-0.2, rel=1e-12)
    assert default_bandwidth(x, y) == pytest.approx(41.2552, abs=1e-4)
    # Population field [1, 1, 1, 1, 3]: n = 7, weighted median distance 70.7107 (cumulative
    # weight 3 of 7 at distance 0), SD = sqrt(4 * 5000 / 7) = 53.4522 -> 0.9 * SD * 7^-0.2
    weights = np.array([1.0, 1.0, 1.0, 1.0, 3.0])
    expected = 0.9 * math.sqrt(20_000 / 7) * 7**-0.2
    assert default_bandwidth(x, y, weights) == pytest.approx(expected, rel=1e-12)
    # an outlier: the median term takes over from the standard distance
    xo, yo = np.append(x, 100_000.0), np.append(y, 0.0)
    d = np.hypot(xo - xo.mean(), yo - yo.mean())
    dm_term = math.sqrt(1 / math.log(2)) * np.median(d)
    assert default_bandwidth(xo, yo) == pytest.approx(0.9 * dm_term * 6**-0.2, rel=1e-12)


def test_default_cell_size_is_shorter_side_over_250():
    x, y = _cluster(500, 1_000.0, seed=3)
    bounds = (X0 - 5_000, Y0 - 2_500, X0 + 5_000, Y0 + 2_500)
    surface = quartic_kde(x, y, bandwidth=800.0, bounds=bounds)
    assert surface.cell_size == pytest.approx(5_000 / 250)  # ArcGIS's default cell size
    assert surface.density.shape == (250, 500)
    assert_allclose(surface.bounds, bounds)


def test_binned_method_agrees_with_exact(monkeypatch):
    x, y = _cluster(3_000, 1_500.0, seed=4)
    exact = quartic_kde(x, y, bandwidth=2_000.0, cell_size=100.0)
    monkeypatch.setattr(kde, "EXACT_BUDGET", 0)
    binned = quartic_kde(x, y, bandwidth=2_000.0, cell_size=100.0)
    assert (exact.method, binned.method) == ("exact", "binned")
    assert binned.integral() == pytest.approx(exact.integral(), rel=1e-3)
    assert np.abs(binned.density - exact.density).max() < 0.02 * exact.density.max()


def test_geotiff_has_crs_transform_and_values(tmp_path):
    x, y = _cluster(2_000, 700.0, seed=5)
    surface = quartic_kde(x, y)
    path = write_geotiff(surface, tmp_path / "kde.tif", "EPSG:32616")
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 32616
        assert src.transform == surface.transform
        assert src.dtypes == ("float32",)
        assert src.nodata == kde.NODATA
        assert (src.height, src.width) == surface.density.shape
        assert_allclose(src.bounds, surface.bounds)
        assert_allclose(src.read(1), surface.density, rtol=1e-6, atol=1e-6)
        assert src.tags()["units"] == "incidents per km2"
        # the densest pixel lies where the cluster is
        row, col = np.unravel_index(np.argmax(src.read(1)), surface.density.shape)
        px, py = src.xy(row, col)
    assert math.hypot(px - X0, py - Y0) < 500


def test_hot_areas_cover_the_densest_cluster():
    dense = _cluster(2_000, 300.0, seed=6)
    sparse = _cluster(2_000, 2_000.0, seed=7, centre=(X0 + 12_000, Y0 + 6_000))
    x, y = np.concatenate([dense[0], sparse[0]]), np.concatenate([dense[1], sparse[1]])
    surface = quartic_kde(x, y, bandwidth=600.0, cell_size=100.0)
    areas = hot_areas(surface, percentile=95, crs="EPSG:32616")
    assert areas.crs.to_epsg() == 32616
    assert list(areas.columns) == [
        "area_id",
        "threshold",
        "area_km2",
        "incidents",
        "share",
        "geometry",
    ]
    top = areas.iloc[0]
    assert top.geometry.contains(shapely.Point(X0, Y0))
    assert top.share > 0.3
    assert areas.geometry.is_valid.all()
    assert areas["area_km2"].sum() == pytest.approx(areas.geometry.area.sum() / 1e6)
    assert areas["share"].sum() <= 1.0
    # the wide, sparse cluster may reach the percentile too, but it captures far less
    assert (areas.iloc[1:]["share"] < top.share / 2).all()


def test_inputs_are_checked_and_not_modified():
    x, y = _cluster(100, 500.0, seed=8)
    x0 = x.copy()
    quartic_kde(x, y)
    assert_allclose(x, x0)
    with pytest.raises(AnalysisError, match="same place"):
        default_bandwidth([1.0, 1.0], [2.0, 2.0])
    with pytest.raises(AnalysisError, match="no incidents"):
        quartic_kde([], [])
    with pytest.raises(AnalysisError, match="negative"):
        quartic_kde(x, y, weights=-np.ones_like(x))
