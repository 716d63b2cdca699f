"""H3 and square grids over an area, binning points and counting them."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import h3
import numpy as np
import pytest
import shapely
from numpy.testing import assert_allclose, assert_array_equal
from pyproj import Transformer

from spatial import (
    AnalysisError,
    count_by_cell,
    h3_cells,
    points_to_grid,
    points_to_h3,
    square_grid,
)
from spatial.grids import h3_polygons, h3_polygons_wkb, with_cells

# A small irregular polygon around Belmopan, Belize (EPSG:4326).
AREA = shapely.Polygon(
    [(-88.80, 17.22), (-88.74, 17.21), (-88.72, 17.26), (-88.76, 17.29), (-88.79, 17.27)]
)
UTM16N = "EPSG:32616"


def _points_in(area: shapely.Geometry, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = area.bounds
    lon, lat = rng.uniform(minx, maxx, 4 * n), rng.uniform(miny, maxy, 4 * n)
    inside = shapely.contains_xy(area, lon, lat)
    return lon[inside][:n], lat[inside][:n]


def test_h3_cells_cover_the_area() -> None:
    cells = h3_cells(AREA, 8)
    assert cells.crs.to_epsg() == 4326
    assert list(cells.columns) == ["cell_id", "geometry"]
    assert cells["cell_id"].tolist() == sorted(cells["cell_id"])
    assert cells["cell_id"].is_unique
    assert {h3.get_resolution(c) for c in cells["cell_id"]} == {8}
    union = shapely.union_all(cells.geometry.to_numpy())
    # H3 edges are great-circle arcs, our polygons straight lines: allow 1e-7 degrees.
    assert union.buffer(1e-7).contains(AREA)
    assert shapely.intersects(cells.geometry.to_numpy(), AREA.buffer(1e-7)).all()
    lon, lat = _points_in(AREA, 500)
    assert set(points_to_h3(lon, lat, 8)) <= set(cells["cell_id"])


def test_h3_cells_refuse_bad_input() -> None:
    with pytest.raises(AnalysisError):
        h3_cells(AREA, 16)
    with pytest.raises(AnalysisError):
        h3_cells(shapely.Polygon(), 8)
    with pytest.raises(AnalysisError):
        h3_cells(AREA, 15, max_cells=1000)


def test_points_to_h3() -> None:
    lon = np.array([-88.77, -88.75, np.nan, -88.7])
    lat = np.array([17.25, 17.23, 17.2, 95.0])
    cells = points_to_h3(lon, lat, 9)
    assert cells[0] == h3.latlng_to_cell(17.25, -88.77, 9)
    assert cells[1] == h3.latlng_to_cell(17.23, -88.75, 9)
    assert cells[2] is None and cells[3] is None


def test_square_grid_cells_are_squares_in_metres() -> None:
    grid = square_grid(AREA, 500.0, UTM16N)
    assert grid.crs.to_epsg() == 4326
    assert grid.attrs["cell_size_m"] == 500.0 and grid.attrs["grid_crs"] == UTM16N
    x0, y0 = grid.attrs["grid_origin"]
    assert x0 % 500 == 0 and y0 % 500 == 0
    projected = grid.to_crs(UTM16N)
    assert_allclose(projected.area, 250_000.0, rtol=1e-6)
    bounds = projected.bounds
    assert_allclose(bounds["maxx"] - bounds["minx"], 500.0, rtol=1e-6)
    assert_allclose(bounds["minx"], x0 + grid["col"] * 500.0, atol=1e-3)
    assert_allclose(bounds["miny"], y0 + grid["row"] * 500.0, atol=1e-3)
    assert grid["cell_id"].tolist() == [
        f"r{r}c{c}" for r, c in zip(grid["row"], grid["col"], strict=True)
    ]
    area_utm = shapely.transform(
        AREA,
        lambda xy: np.column_stack(
            Transformer.from_crs(4326, UTM16N, always_xy=True).transform(*xy.T)
        ),
    )
    union = shapely.union_all(projected.geometry.to_numpy())
    assert union.buffer(1e-6).contains(area_utm)
    assert shapely.intersects(projected.geometry.to_numpy(), area_utm).all()


def test_square_grid_refuses_bad_input() -> None:
    with pytest.raises(AnalysisError):
        square_grid(AREA, 500.0, "EPSG:4326")  # not projected
    with pytest.raises(AnalysisError):
        square_grid(AREA, 0.0, UTM16N)
    with pytest.raises(AnalysisError):
        square_grid(AREA, 1.0, UTM16N, max_cells=10_000)


def test_points_to_grid_bins_by_integer_division() -> None:
    grid = square_grid(AREA, 1000.0, UTM16N)
    x0, y0 = grid.attrs["grid_origin"]
    sample = grid.iloc[[0, len(grid) // 2, len(grid) - 1]]
    # The centre of each sampled cell, and a point just inside its lower-left corner.
    cx = x0 + (sample["col"].to_numpy() + 0.5) * 1000.0
    cy = y0 + (sample["row"].to_numpy() + 0.5) * 1000.0
    corner_x = x0 + sample["col"].to_numpy() * 1000.0 + 0.01
    corner_y = y0 + sample["row"].to_numpy() * 1000.0 + 0.01
    to_lonlat = Transformer.from_crs(UTM16N, 4326, always_xy=True)
    lon, lat = to_lonlat.transform(np.concatenate([cx, corner_x]), np.concatenate([cy, corner_y]))
    ids = points_to_grid(lon, lat, grid)
    assert ids.tolist() == sample["cell_id"].tolist() * 2
    outside = points_to_grid(np.array([-80.0, np.nan]), np.array([10.0, 17.2]), grid)
    assert outside.tolist() == [None, None]
    with pytest.raises(AnalysisError):
        points_to_grid(lon, lat, h3_cells(AREA, 8))  # not a square grid


def test_counts_sum_to_the_points_inside() -> None:
    lon, lat = _points_in(AREA, 400, seed=3)
    lon = np.concatenate([lon, [-80.0, np.nan]])  # two points in no cell
    lat = np.concatenate([lat, [10.0, 17.2]])
    for cells, point_cells in (
        (h3_cells(AREA, 9), points_to_h3(lon, lat, 9)),
        (square_grid(AREA, 250.0, UTM16N), None),
    ):
        if point_cells is None:
            point_cells = points_to_grid(lon, lat, cells)
        counts = count_by_cell(point_cells, cells["cell_id"])
        assert counts.dtype == np.int64 and len(counts) == len(cells)
        assert counts.sum() == 400
        assert (counts == 0).any()  # empty cells take part
        victims = np.arange(len(lon)) % 3 + 1.0
        weighted = count_by_cell(point_cells, cells["cell_id"], weights=victims)
        assert weighted.dtype == np.float64
        assert weighted.sum() == pytest.approx(victims[:400].sum())


def test_count_by_cell_alignment_and_validation() -> None:
    counts = count_by_cell(["b", "a", None, "b", "zz"], ["a", "b", "c"])
    assert_array_equal(counts, [1, 2, 0])
    assert_array_equal(
        count_by_cell(["a", "c"], ["a", "b", "c"], weights=[2.5, 1.0]), [2.5, 0.0, 1.0]
    )
    with pytest.raises(AnalysisError):
        count_by_cell(["a"], ["a", "a"])
    with pytest.raises(AnalysisError):
        count_by_cell(["a"], ["a"], weights=[-1.0])
    with pytest.raises(AnalysisError):
        count_by_cell(["a", "b"], ["a"], weights=[1.0])


# -- which cells make the study area: cover "center" or "intersects" (issue 16) ----------------

SHIPPED = Path(__file__).resolve().parents[3] / "app" / "data" / "belize" / "boundaries"


@pytest.fixture(scope="module")
def belize_district() -> shapely.Geometry:
    """The Belize District as shipped (a coarse coastline with cays), EPSG:4326."""
    districts = gpd.read_file(SHIPPED / "belize_adm1_districts.geojson")
    return districts.loc[districts["iso_3166_2"] == "BZ-BZ", "geometry"].iloc[0]


def _offshore_points(area: shapely.Geometry, n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Points 300-1,800 m outside the area's outline (in UTM 16N), as lon, lat."""
    to_utm = Transformer.from_crs(4326, UTM16N, always_xy=True)
    projected = shapely.transform(area, lambda xy: np.column_stack(to_utm.transform(*xy.T)))
    ring = projected.buffer(1_800).difference(projected.buffer(300))
    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = ring.bounds
    x, y = rng.uniform(minx, maxx, 200 * n), rng.uniform(miny, maxy, 200 * n)
    keep = shapely.contains_xy(ring, x, y)
    lon, lat = Transformer.from_crs(UTM16N, 4326, always_xy=True).transform(
        x[keep][:n], y[keep][:n]
    )
    return np.asarray(lon), np.asarray(lat)


def test_center_cover_is_h3_polygon_to_cells_on_a_coastline(belize_district) -> None:
    expected = h3.polygon_to_cells(h3.geo_to_h3shape(belize_district), 8)
    center = h3_cells(belize_district, 8, cover="center")
    assert center["cell_id"].tolist() == sorted(expected)
    assert center.attrs["cover"] == "center"
    touching = h3_cells(belize_district, 8, cover="intersects")
    # The coastline and the cays cut many cells whose centre is at sea.
    assert set(center["cell_id"]) < set(touching["cell_id"])
    assert len(touching) - len(center) > 300
    lon, lat = _offshore_points(belize_district, 400)
    held = points_to_h3(lon, lat, 8)
    completed = with_cells(center, held)
    assert completed["cell_id"].tolist() == sorted(set(expected) | set(held))
    assert completed.attrs["added_cells"] == len(set(held) - set(expected)) > 50
    assert completed["cell_id"].is_monotonic_increasing
    new = sorted(set(held) - set(expected))
    polygons = completed.set_index("cell_id").geometry[new].to_numpy()
    assert shapely.equals_exact(polygons, h3_polygons(new), tolerance=0).all()
    counts = count_by_cell(held, completed["cell_id"])
    assert counts.sum() == 400  # every offshore point counted
    assert count_by_cell(held, touching["cell_id"]).sum() < 400  # some beyond the touching cells


def test_center_cover_of_a_square_grid(belize_district) -> None:
    center = square_grid(belize_district, 1000.0, UTM16N, cover="center")
    touching = square_grid(belize_district, 1000.0, UTM16N)
    assert center.attrs["cover"] == "center" and touching.attrs["cover"] == "intersects"
    x0, y0 = center.attrs["grid_origin"]
    assert (x0, y0) == touching.attrs["grid_origin"]  # one layout, two selections
    to_utm = Transformer.from_crs(4326, UTM16N, always_xy=True)
    area_utm = shapely.transform(
        belize_district, lambda xy: np.column_stack(to_utm.transform(*xy.T))
    )
    cx = x0 + (center["col"].to_numpy() + 0.5) * 1000.0
    cy = y0 + (center["row"].to_numpy() + 0.5) * 1000.0
    assert shapely.intersects_xy(area_utm, cx, cy).all()
    rest = touching[~touching["cell_id"].isin(center["cell_id"])]
    rx = x0 + (rest["col"].to_numpy() + 0.5) * 1000.0
    ry = y0 + (rest["row"].to_numpy() + 0.5) * 1000.0
    assert len(rest) > 100 and not shapely.intersects_xy(area_utm, rx, ry).any()
    assert set(center["cell_id"]) < set(touching["cell_id"])

    lon, lat = _offshore_points(belize_district, 300, seed=4)
    assert any(c is None for c in points_to_grid(lon, lat, center))  # outside its cells
    lattice = points_to_grid(lon, lat, center, lattice=True)
    assert all(isinstance(c, str) for c in lattice)
    completed = with_cells(center, lattice)
    assert completed.attrs["added_cells"] == len(set(lattice) - set(center["cell_id"])) > 0
    assert points_to_grid(lon, lat, completed).tolist() == lattice.tolist()
    assert count_by_cell(lattice, completed["cell_id"]).sum() == 300
    order = list(zip(completed["row"], completed["col"], strict=True))
    assert order == sorted(order)
    added = completed[~completed["cell_id"].isin(center["cell_id"])].to_crs(UTM16N)
    assert_allclose(added.area, 1e6, rtol=1e-6)  # 1 km squares of the same layout
    assert_allclose(added.bounds["minx"], x0 + added["col"] * 1000.0, atol=1e-3)


def test_with_cells_beyond_the_bounding_box_and_bad_ids() -> None:
    grid = square_grid(AREA, 500.0, UTM16N, cover="center")
    x0, y0 = grid.attrs["grid_origin"]
    # A point two cells west of and one below the grid's bounding box.
    lon, lat = Transformer.from_crs(UTM16N, 4326, always_xy=True).transform(
        [x0 - 750.0], [y0 - 250.0]
    )
    lattice = points_to_grid(np.asarray(lon), np.asarray(lat), grid, lattice=True)
    assert lattice.tolist() == ["r-1c-2"]
    completed = with_cells(grid, [*lattice, None, grid["cell_id"].iloc[0]])
    assert completed.attrs["added_cells"] == 1 and completed["cell_id"].iloc[0] == "r-1c-2"
    assert points_to_grid(np.asarray(lon), np.asarray(lat), completed).tolist() == ["r-1c-2"]
    with pytest.raises(AnalysisError):
        with_cells(grid, ["nonsense"])
    with pytest.raises(AnalysisError):
        with_cells(h3_cells(AREA, 8), [h3.latlng_to_cell(17.25, -88.77, 9)])  # resolution 9
    with pytest.raises(AnalysisError):
        h3_cells(AREA, 8, cover="touches")
    with pytest.raises(AnalysisError):
        square_grid(AREA, 500.0, UTM16N, cover="inside")


def test_h3_polygons_wkb_are_the_bytes_shapely_writes() -> None:
    # Hexagons of the area, the 12 pentagons (5 vertices) and resolution-0 cells cut by
    # icosahedron edges (10 vertices): every record length in one call.
    ids = list(h3_cells(AREA, 9)["cell_id"]) + sorted(h3.get_pentagons(3))
    ids += sorted(h3.get_res0_cells())[:30]
    assert {len(h3.cell_to_boundary(c)) for c in ids} >= {5, 6, 10}
    expected = shapely.to_wkb(shapely.set_srid(h3_polygons(ids), 4326), include_srid=True)
    assert list(h3_polygons_wkb(ids)) == list(expected)
    assert shapely.get_srid(shapely.from_wkb(h3_polygons_wkb(ids[:1]))).tolist() == [4326]
    assert h3_polygons_wkb([]).shape == (0,)
