"""repair_geometries: make_valid on a bow-tie, polygonal parts only, notes, inputs untouched."""

from __future__ import annotations

import geopandas as gpd
import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from boundaries import BoundaryError
from boundaries.repair import RepairNote, repair_geometries

# A self-intersecting "bow-tie": two unit triangles touching at (1, 1).
BOW_TIE = Polygon([(0, 0), (2, 2), (2, 0), (0, 2), (0, 0)])
# A ring that collapses to a line: no area at all.
SPIKE = Polygon([(5, 5), (6, 6), (5, 5), (5, 5)])
SQUARE = box(10, 10, 11, 11)


def _units(geometries, codes=None) -> gpd.GeoDataFrame:
    codes = codes or [f"U{i}" for i in range(len(geometries))]
    return gpd.GeoDataFrame(
        {"code": codes, "name": codes, "parent_code": [None] * len(codes)},
        geometry=geometries,
        crs=4326,
    )


def test_bow_tie_becomes_two_triangles():
    units = _units([SQUARE, BOW_TIE], ["OK", "TIE"])
    before = units.copy()
    repaired, notes = repair_geometries(units)
    assert notes == [RepairNote("TIE", "Self-intersection[1 1]")]
    assert repaired["code"].tolist() == ["OK", "TIE"]
    expected = MultiPolygon(
        [Polygon([(0, 0), (0, 2), (1, 1), (0, 0)]), Polygon([(1, 1), (2, 2), (2, 0), (1, 1)])]
    )
    got = repaired.geometry.iloc[1]
    assert got.is_valid and got.geom_type == "MultiPolygon"
    assert shapely.equals(got, expected)
    assert got.area == 2.0  # two triangles of area 1
    # Valid units are kept as they are (promoted), and the input is untouched.
    assert shapely.equals_exact(repaired.geometry.iloc[0], MultiPolygon([SQUARE]), 0)
    assert units.geometry.iloc[1].equals_exact(BOW_TIE, 0)
    assert units.equals(before)


def test_collapsed_unit_is_dropped_with_a_note():
    repaired, notes = repair_geometries(_units([SPIKE, SQUARE], ["GONE", "OK"]))
    assert repaired["code"].tolist() == ["OK"]
    assert repaired.index.tolist() == [0]
    assert len(notes) == 1
    assert notes[0].code == "GONE"
    assert notes[0].reason.endswith("; dropped: no area left after repair")


def test_valid_units_give_no_notes():
    repaired, notes = repair_geometries(_units([SQUARE, MultiPolygon([box(0, 0, 1, 1)])]))
    assert notes == []
    assert repaired.geometry.geom_type.tolist() == ["MultiPolygon", "MultiPolygon"]
    assert repaired.crs.to_epsg() == 4326


def test_notes_are_frozen():
    note = RepairNote("A", "why")
    with pytest.raises(AttributeError):
        note.code = "B"  # type: ignore[misc]


def test_code_column_required():
    frame = gpd.GeoDataFrame({"x": [1]}, geometry=[SQUARE], crs=4326)
    with pytest.raises(BoundaryError, match="'code' column"):
        repair_geometries(frame)
