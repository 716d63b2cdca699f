"""read_boundaries: formats, CRS, fields, codes and geometry types (tiny files in tmp_path)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

from boundaries import BoundaryError
from boundaries.read import COLUMNS, read_boundaries

# Two districts side by side in Belize (lon/lat), one a Polygon, one a MultiPolygon.
WEST = box(-88.9, 17.0, -88.6, 17.3)
EAST = MultiPolygon([box(-88.6, 17.0, -88.3, 17.3), box(-88.2, 17.0, -88.1, 17.1)])


def _frame(**columns) -> gpd.GeoDataFrame:
    data = {"ISO": ["BZ-W", "BZ-E"], "NAME": ["West", "East"], "UP": ["BZ", "BZ"]}
    data.update(columns)
    geometry = data.pop("geometry", [WEST, EAST])
    return gpd.GeoDataFrame(data, geometry=geometry, crs=4326)


def _zip_shapefile(frame: gpd.GeoDataFrame, tmp_path: Path, crs=32616, prj=True) -> Path:
    folder = tmp_path / "shp"
    folder.mkdir()
    frame.to_crs(crs).to_file(folder / "units.shp", engine="pyogrio")
    archive = tmp_path / "units.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for part in sorted(folder.iterdir()):
            if prj or part.suffix != ".prj":
                zf.write(part, part.name)
    return archive


def _assert_same_shapes(actual: gpd.GeoSeries, expected: list, tolerance: float) -> None:
    for got, want in zip(actual, expected, strict=True):
        assert got.geom_type == "MultiPolygon"
        assert shapely.equals_exact(shapely.normalize(got), shapely.normalize(want), tolerance)


def test_geojson_columns_and_promotion(tmp_path):
    path = tmp_path / "units.geojson"
    _frame(EXTRA=[1, 2]).to_file(path, engine="pyogrio")
    units = read_boundaries(path, code_field="ISO", name_field="NAME")
    assert tuple(units.columns) == COLUMNS
    assert units.crs.to_epsg() == 4326
    assert units["code"].tolist() == ["BZ-W", "BZ-E"]
    assert units["name"].tolist() == ["West", "East"]
    assert units["parent_code"].tolist() == [None, None]
    # Exact: GeoJSON keeps 15 significant digits, and the polygon becomes a MultiPolygon.
    _assert_same_shapes(units.geometry, [MultiPolygon([WEST]), EAST], 0)


def test_zipped_shapefile_in_utm_is_reprojected(tmp_path):
    archive = _zip_shapefile(_frame(), tmp_path)
    units = read_boundaries(archive, code_field="ISO", name_field="NAME", parent_field="UP")
    assert units.crs.to_epsg() == 4326
    assert units["code"].tolist() == ["BZ-W", "BZ-E"]
    assert units["parent_code"].tolist() == ["BZ", "BZ"]
    # A UTM round trip (pyproj) is exact to well under a micro-degree (≈ 0.1 m).
    _assert_same_shapes(units.geometry, [MultiPolygon([WEST]), EAST], 1e-7)


def test_geopackage_layer_choice(tmp_path):
    path = tmp_path / "units.gpkg"
    _frame().to_crs(32616).to_file(path, layer="districts", engine="pyogrio")
    _frame(ISO=["X-1", "X-2"]).to_file(path, layer="other", engine="pyogrio")
    with pytest.raises(BoundaryError, match=r"2 layers \(districts, other\)"):
        read_boundaries(path, code_field="ISO", name_field="NAME")
    with pytest.raises(BoundaryError, match="no layer 'nope'"):
        read_boundaries(path, code_field="ISO", name_field="NAME", layer="nope")
    units = read_boundaries(path, code_field="ISO", name_field="NAME", layer="districts")
    assert units["code"].tolist() == ["BZ-W", "BZ-E"]
    _assert_same_shapes(units.geometry, [MultiPolygon([WEST]), EAST], 1e-7)


def test_missing_field_lists_available_fields(tmp_path):
    path = tmp_path / "units.geojson"
    _frame().to_file(path, engine="pyogrio")
    with pytest.raises(BoundaryError, match="no field 'CODE'; available fields: ISO, NAME, UP"):
        read_boundaries(path, code_field="CODE", name_field="NAME")
    with pytest.raises(BoundaryError, match="no field 'PARENT'"):
        read_boundaries(path, code_field="ISO", name_field="NAME", parent_field="PARENT")


def test_shapefile_without_prj_is_refused(tmp_path):
    archive = _zip_shapefile(_frame(), tmp_path, crs=4326, prj=False)
    with pytest.raises(BoundaryError, match="no coordinate reference system"):
        read_boundaries(archive, code_field="ISO", name_field="NAME")


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (["BZ-W", "BZ-W"], "duplicate 'ISO' value.*BZ-W"),
        (["BZ-W", "  "], r"empty 'ISO' in feature\(s\) 2"),
        (["BZ-W", None], r"empty 'ISO' in feature\(s\) 2"),
    ],
)
def test_bad_codes(tmp_path, codes, message):
    path = tmp_path / "units.geojson"
    _frame(ISO=codes).to_file(path, engine="pyogrio")
    with pytest.raises(BoundaryError, match=message):
        read_boundaries(path, code_field="ISO", name_field="NAME")


def test_numeric_codes_become_text(tmp_path):
    archive = _zip_shapefile(_frame(NUM=[1.0, 20.0]), tmp_path)
    units = read_boundaries(archive, code_field="NUM", name_field="NAME")
    assert units["code"].tolist() == ["1", "20"]


def test_empty_parent_values_mean_none(tmp_path):
    path = tmp_path / "units.geojson"
    _frame(UP=["BZ", ""]).to_file(path, engine="pyogrio")
    units = read_boundaries(path, code_field="ISO", name_field="NAME", parent_field="UP")
    assert units["parent_code"].tolist() == ["BZ", None]


def test_non_polygons_are_refused(tmp_path):
    path = tmp_path / "units.geojson"
    _frame(geometry=[WEST, LineString([(-88, 17), (-87.9, 17.1)])]).to_file(path, engine="pyogrio")
    with pytest.raises(
        BoundaryError, match=r"must be polygons; found LineString in feature\(s\) 2"
    ):
        read_boundaries(path, code_field="ISO", name_field="NAME")


def test_missing_geometry_is_refused(tmp_path):
    path = tmp_path / "units.geojson"
    features = [
        {"type": "Feature", "properties": {"ISO": "A", "NAME": "a"}, "geometry": None},
        {
            "type": "Feature",
            "properties": {"ISO": "B", "NAME": "b"},
            "geometry": shapely.geometry.mapping(WEST),
        },
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    with pytest.raises(BoundaryError, match=r"missing or empty geometry in feature\(s\) 1"):
        read_boundaries(path, code_field="ISO", name_field="NAME")


def test_z_values_are_dropped(tmp_path):
    path = tmp_path / "units.geojson"
    square = Polygon([(-88.5, 17, 5), (-88.4, 17, 5), (-88.4, 17.1, 5), (-88.5, 17, 5)])
    _frame(ISO=["A", "B"], geometry=[square, WEST]).to_file(path, engine="pyogrio")
    units = read_boundaries(path, code_field="ISO", name_field="NAME")
    assert not shapely.has_z(np.asarray(units.geometry.array)).any()


def test_wrong_declared_crs_is_caught(tmp_path):
    # Metres labelled as degrees: nothing can make these lon/lat.
    path = tmp_path / "units.geojson"
    _frame().to_crs(32616).set_crs(4326, allow_override=True).to_file(path, engine="pyogrio")
    with pytest.raises(BoundaryError, match="outside longitude/latitude range"):
        read_boundaries(path, code_field="ISO", name_field="NAME")


def test_unsupported_suffix_and_missing_file(tmp_path):
    with pytest.raises(BoundaryError, match=r"unsupported file type '\.shp'"):
        read_boundaries(tmp_path / "units.shp", code_field="ISO", name_field="NAME")
    with pytest.raises(BoundaryError, match="file not found"):
        read_boundaries(tmp_path / "none.gpkg", code_field="ISO", name_field="NAME")


def test_empty_file(tmp_path):
    path = tmp_path / "units.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(BoundaryError, match="no features"):
        read_boundaries(path, code_field="ISO", name_field="NAME")


def test_geometry_type_ids():
    # Guard against a silent change in shapely's type ids used by the reader.
    assert shapely.get_type_id([Point(0, 0), WEST, EAST]).tolist() == [0, 3, 6]
