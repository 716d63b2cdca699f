"""Spatial weights builders: neighbour sets, ids, islands and components."""

from __future__ import annotations

import warnings

import geopandas as gpd
import h3
import numpy as np
import pytest
import shapely
from libpysal.weights import min_threshold_distance
from numpy.testing import assert_array_equal
from scipy import sparse

from spatial import AnalysisError, contiguity, distance_band, h3_neighbours, knn
from spatial.weights import (
    binary_with_self_graph,
    binary_with_self_sparse,
    from_neighbours,
    from_sparse,
)
from tests.unit.spatial.conftest import COLUMBUS


def _neighbour_sets(sw) -> dict:
    return {i: set(sw.w.neighbors[i]) for i in sw.w.id_order}


def _hexagons(cells: list[str]) -> gpd.GeoDataFrame:
    geoms = [shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(c)]) for c in cells]
    return gpd.GeoDataFrame({"cell_id": cells}, geometry=geoms, crs=4326)


def test_columbus_queen_equals_the_gal(columbus_queen) -> None:
    gdf = gpd.read_file(COLUMBUS / "columbus.geojson")
    snapshot = gdf.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # islands and the like are reported, never warned
        sw = contiguity(gdf, ids=[str(i) for i in gdf["POLYID"]])
    # libpysal's columbus.gal: queen, 49 units, 236 links (data README §3).
    assert sw.w.id_order == columbus_queen.id_order
    assert _neighbour_sets(sw) == {
        i: set(columbus_queen.neighbors[i]) for i in columbus_queen.id_order
    }
    assert sw.w.s0 == 236
    assert (sw.kind, sw.islands, sw.components) == ("queen", [], 1)
    assert gdf.equals(snapshot)
    rook = contiguity(gdf, rook=True, ids="POLYID")
    assert rook.kind == "rook" and rook.w.id_order == gdf["POLYID"].tolist()
    for i in gdf["POLYID"]:
        assert set(map(str, rook.w.neighbors[i])) <= set(sw.w.neighbors[str(i)])


def test_h3_neighbours_equal_queen_contiguity_of_the_hexagons() -> None:
    centre = h3.latlng_to_cell(17.25, -88.77, 8)  # Belmopan
    cells = sorted(h3.grid_disk(centre, 3))
    cells.remove(h3.grid_ring(centre, 1)[0])  # a hole, so that some rings are incomplete
    from_ids = h3_neighbours(cells)
    from_polygons = contiguity(_hexagons(cells), ids=cells)
    assert from_ids.w.id_order == cells
    assert _neighbour_sets(from_ids) == _neighbour_sets(from_polygons)
    assert from_ids.kind == "h3" and from_ids.parameters == {"resolution": 8}
    assert from_ids.islands == [] and from_ids.components == 1


def test_h3_neighbours_equal_the_rings_of_each_cell() -> None:
    centre = h3.latlng_to_cell(17.5, -88.2, 9)
    cells = sorted(h3.grid_disk(centre, 12))[::-1]  # any order; a ragged edge
    cells = [c for i, c in enumerate(cells) if i % 7]  # holes
    sw = h3_neighbours(cells)
    present = set(cells)
    expected = {c: {r for r in h3.grid_ring(c, 1) if r in present} for c in cells}
    assert sw.ids == cells and _neighbour_sets(sw) == expected
    # The sparse matrix is the same graph, rows and columns in the order of the ids.
    position = {c: i for i, c in enumerate(cells)}
    rows, cols = sw.sparse.nonzero()
    assert {(cells[r], cells[c]) for r, c in zip(rows, cols, strict=True)} == {
        (c, r) for c, nb in expected.items() for r in nb
    }
    assert_array_equal(sw.cardinalities, [len(expected[c]) for c in cells])
    assert position == {c: i for i, c in enumerate(sw.w.id_order)}


def test_from_sparse_and_from_neighbours_agree() -> None:
    neighbours = [[1, 2], [0], [0], []]
    weights = [[0.5, 2.0], [1.0], [0.0], []]
    listed = from_neighbours(neighbours, list("abcd"), weights=weights)
    matrix = sparse.csr_array(([0.5, 2.0, 1.0, 0.0], ([0, 0, 1, 2], [1, 2, 0, 0])), shape=(4, 4))
    built = from_sparse(matrix, list("abcd"))
    for sw in (listed, built):
        assert sw.w.neighbors == {"a": ["b", "c"], "b": ["a"], "c": ["a"], "d": []}
        assert sw.w.weights == {"a": [0.5, 2.0], "b": [1.0], "c": [0.0], "d": []}
        assert sw.islands == ["d"] and sw.components == 2
    with pytest.raises(AnalysisError):
        from_sparse(sparse.csr_array((3, 4)), list("abc"))
    with pytest.raises(AnalysisError):
        from_neighbours([[5]], ["a"])


def test_islands_and_components_are_reported() -> None:
    centre = h3.latlng_to_cell(17.25, -88.77, 9)
    far = h3.latlng_to_cell(18.0, -88.3, 9)
    cells = [*sorted(h3.grid_disk(centre, 1)), far]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sw = h3_neighbours(cells)
    assert sw.islands == [far]
    assert sw.components == 2
    with pytest.raises(AnalysisError):
        h3_neighbours([centre, h3.cell_to_parent(centre, 8)])
    with pytest.raises(AnalysisError):
        h3_neighbours(["not-a-cell"])


def test_knn() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 10_000, 50), rng.uniform(0, 10_000, 50)
    ids = [f"u{i}" for i in range(50)]
    sw = knn(x, y, k=4, ids=ids)
    assert sw.w.id_order == ids
    assert all(len(sw.w.neighbors[i]) == 4 for i in ids)
    assert sw.islands == [] and sw.parameters == {"k": 4}
    d = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    np.fill_diagonal(d, np.inf)
    nearest = {ids[i]: {ids[j] for j in np.argsort(d[i])[:4]} for i in range(50)}
    assert _neighbour_sets(sw) == nearest
    with pytest.raises(AnalysisError):
        knn(x, y, k=50)


def test_distance_band_default_threshold_leaves_no_island() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.uniform(0, 50_000, 80), rng.uniform(0, 50_000, 80)
    x[0], y[0] = 200_000.0, 200_000.0  # an outlier far from everything
    sw = distance_band(x, y)
    coords = np.column_stack([x, y])
    assert sw.parameters["threshold"] == pytest.approx(min_threshold_distance(coords), rel=1e-8)
    assert sw.islands == []
    d = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    within = {
        i: set(np.nonzero((d[i] <= sw.parameters["threshold"]) & (d[i] > 0))[0]) for i in range(80)
    }
    assert _neighbour_sets(sw) == within


def test_distance_band_small_threshold_reports_islands() -> None:
    x = np.array([0.0, 100.0, 200.0, 5_000.0, 5_050.0, 9_000.0])
    y = np.zeros(6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sw = distance_band(x, y, threshold=150.0, ids=list("abcdef"))
    assert sw.islands == ["f"]
    assert sw.components == 3
    assert set(sw.w.neighbors["b"]) == {"a", "c"}
    with pytest.raises(AnalysisError):
        distance_band(x, y, threshold=-1.0)


def test_distance_band_duplicate_points_are_neighbours() -> None:
    x = np.array([0.0, 0.0, 300.0, 600.0])
    y = np.zeros(4)
    sw = distance_band(x, y, threshold=350.0)
    assert set(sw.w.neighbors[0]) == {1, 2}
    assert set(sw.w.neighbors[1]) == {0, 2}


def test_ids_must_match() -> None:
    with pytest.raises(AnalysisError):
        knn([0.0, 1.0, 2.0], [0.0, 1.0, 2.0], k=1, ids=["a", "a", "b"])
    with pytest.raises(AnalysisError):
        distance_band([0.0, 1.0], [0.0, np.nan])


def test_snapped_contiguity_links_polygons_across_a_gap_narrower_than_the_snap() -> None:
    # Three 100 m squares in a row, 5 m apart (boundary files that do not share vertices),
    # and a fourth 50 m beyond the third.
    squares = [shapely.box(x, 0, x + 100, 100) for x in (0, 105, 210, 360)]
    gdf = gpd.GeoDataFrame({"code": ["A", "B", "C", "D"]}, geometry=squares, crs=32616)
    snapshot = gdf.copy()
    exact = contiguity(gdf, ids="code")
    assert exact.islands == ["A", "B", "C", "D"]
    snapped = contiguity(gdf, ids="code", snap=10.0)
    assert _neighbour_sets(snapped) == {"A": {"B"}, "B": {"A", "C"}, "C": {"B"}, "D": set()}
    assert (snapped.kind, snapped.parameters, snapped.islands) == ("queen", {"snap": 10.0}, ["D"])
    assert snapped.components == 2
    assert gdf.equals(snapshot) and list(gdf.columns) == ["code", "geometry"]
    # A 2 m snap does not bridge 5 m; 30 m (each side buffered) bridges the 50 m gap.
    assert contiguity(gdf, ids="code", snap=2.0).islands == ["A", "B", "C", "D"]
    assert contiguity(gdf, ids="code", snap=30.0).islands == []


def test_snapped_contiguity_refuses_degrees_and_rook() -> None:
    gdf = gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1)], crs=4326)
    with pytest.raises(AnalysisError, match="projected CRS"):
        contiguity(gdf, snap=10.0)
    with pytest.raises(AnalysisError, match="queen contiguity only"):
        contiguity(gdf.to_crs(32616), rook=True, snap=10.0)


def test_star_graph_is_the_graph_libpysal_builds() -> None:
    from libpysal.graph import Graph

    cells = sorted(h3.grid_disk(h3.latlng_to_cell(17.25, -88.77, 9), 6))
    # With an island: a unit with no neighbour is still its own (Gi*).
    for weights in (h3_neighbours(cells), from_neighbours([[1], [0], []], ["a", "b", "c"])):
        expected = Graph.from_sparse(binary_with_self_sparse(weights)).adjacency
        got = binary_with_self_graph(weights).adjacency
        assert got.equals(expected)
        assert got.index.equals(expected.index)
        assert [level.dtype for level in got.index.levels] == [
            level.dtype for level in expected.index.levels
        ]
