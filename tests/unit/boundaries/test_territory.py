"""outside_territory on the real Belize outline and districts (app/data/belize): shares of
area outside, checked against geodesic areas (pyproj.Geod), the tolerance, and the files a
wrong CRS makes."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import Geod

from app.core.settings import DATA_DIR
from boundaries import BoundaryError
from boundaries.territory import OUTSIDE_SHARE, OutsideUnit, outside_territory

BOUNDARIES = DATA_DIR / "belize" / "boundaries"
GEOD = Geod(ellps="WGS84")


@pytest.fixture(scope="module")
def outline() -> shapely.Geometry:
    country = gpd.read_file(BOUNDARIES / "belize_adm0_naturalearth_10m.geojson")
    return country.geometry.union_all()


@pytest.fixture(scope="module")
def districts() -> gpd.GeoDataFrame:
    frame = gpd.read_file(BOUNDARIES / "belize_adm1_districts.geojson")
    return frame.rename(columns={"iso_3166_2": "code"})[["code", "geometry"]]


def _geodesic_share_outside(unit: shapely.Geometry, outline: shapely.Geometry) -> float:
    """1 - area(unit ∩ outline) / area(unit), areas on the WGS 84 ellipsoid."""
    inside = shapely.intersection(unit, outline)
    area = abs(GEOD.geometry_area_perimeter(unit)[0])
    kept = abs(GEOD.geometry_area_perimeter(inside)[0]) if not inside.is_empty else 0.0
    return 1.0 - kept / area


def test_the_districts_lie_inside_the_country(districts, outline):
    before = districts.copy()
    assert outside_territory(districts, outline, tolerance_m=2_000) == []
    assert districts.equals(before)  # input untouched


def test_swapped_latitude_and_longitude_put_every_unit_outside(districts, outline):
    swapped = districts.set_geometry(
        districts.geometry.map(lambda g: shapely.transform(g, lambda xy: xy[:, ::-1]))
    )
    assert swapped.total_bounds[1] < -88  # near the South Pole, yet valid lon/lat
    outside = outside_territory(swapped, outline, tolerance_m=2_000)
    assert outside == [OutsideUnit(code, 1.0) for code in districts["code"]]


def test_shares_outside_match_geodesic_areas(districts, outline):
    # Half a degree east: the coastal districts go out to sea, the western ones stay
    # mostly on land. Without tolerance the share is a plain area ratio.
    shifted = districts.set_geometry(districts.geometry.translate(0.5, 0))
    expected = {
        code: _geodesic_share_outside(unit, outline)
        for code, unit in zip(shifted["code"], shifted.geometry, strict=True)
    }
    flagged = {code for code, share in expected.items() if share > OUTSIDE_SHARE}
    assert flagged and flagged != set(expected)  # some units in, some out
    outside = outside_territory(shifted, outline)
    assert [u.code for u in outside] == [c for c in shifted["code"] if c in flagged]
    for unit in outside:
        assert unit.share_outside == pytest.approx(expected[unit.code], abs=2e-3)
    # Everything counts when the threshold is 0: also the units mostly inside.
    every = {u.code: u.share_outside for u in outside_territory(shifted, outline, threshold=0)}
    for code, share in expected.items():
        if share > 2e-3:
            assert every[code] == pytest.approx(share, abs=2e-3)


def test_the_tolerance_keeps_a_caye_just_off_the_coast(outline):
    # A 500 m square about 1 km east of the easternmost point of the outline.
    coords = shapely.get_coordinates(outline)
    east_x, east_y = coords[np.argmax(coords[:, 0])]
    step = 1 / 111.32 / np.cos(np.radians(east_y))  # degrees of longitude in 1 km
    caye = shapely.box(east_x + step, east_y, east_x + 1.5 * step, east_y + 0.5 / 111.32)
    assert not caye.intersects(outline)
    units = gpd.GeoDataFrame({"code": ["CAYE"]}, geometry=[caye], crs=4326)
    assert outside_territory(units, outline) == [OutsideUnit("CAYE", 1.0)]
    assert outside_territory(units, outline, tolerance_m=2_000) == []
    # 1 km is not enough for the far side of a square that starts 1 km out.
    [partly] = outside_territory(units, outline, tolerance_m=1_200, threshold=0)
    assert 0 < partly.share_outside < 1


def test_a_box_as_the_territory_and_far_units():
    bbox = shapely.box(-89.3, 15.8, -87.4, 18.6)  # the default territory.bbox
    units = gpd.GeoDataFrame(
        {"code": ["IN", "HALF", "ANTIPODE"]},
        geometry=[
            shapely.box(-88.8, 17.0, -88.6, 17.2),
            shapely.box(-87.5, 17.0, -87.3, 17.2),  # straddles the east edge at -87.4
            shapely.box(91.4, -17.2, 91.6, -17.0),  # where the projection has no answer
        ],
        crs=4326,
    )
    outside = outside_territory(units, bbox, threshold=0.4)
    assert [u.code for u in outside] == ["HALF", "ANTIPODE"]
    assert outside[0].share_outside == pytest.approx(0.5, abs=1e-3)
    assert outside[1].share_outside == 1.0
    assert [u.code for u in outside_territory(units, bbox)] == ["ANTIPODE"]  # > 0.5 only


def test_refusals(outline):
    units = gpd.GeoDataFrame({"name": ["x"]}, geometry=[shapely.box(0, 0, 1, 1)], crs=4326)
    with pytest.raises(BoundaryError, match="'code' column"):
        outside_territory(units, outline)
    with pytest.raises(BoundaryError, match="outline is empty"):
        outside_territory(units.rename(columns={"name": "code"}), shapely.Polygon())
