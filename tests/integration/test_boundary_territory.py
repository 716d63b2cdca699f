"""Boundary uploads outside the territory (issue 7, hardened inputs): units mostly outside
the country are loaded with a flag and a warning; a file with every unit outside (a wrong
CRS, as a .prj for the wrong UTM zone makes) is a 422 that changes nothing.

Uploads use level 2 with codes of their own; the module removes them at the end.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from pyproj import CRS
from shapely.geometry import box
from sqlalchemy import text

from app.schemas.units import BoundaryReport, UnitCollection
from app.sql import units as units_sql
from tests.conftest import BELIZE, auth, call_service

PROBLEM = "application/problem+json"
ADM0 = BELIZE / "boundaries" / "belize_adm0_naturalearth_10m.geojson"
ADM1 = BELIZE / "boundaries" / "belize_adm1_districts.geojson"


@pytest.fixture(scope="module", autouse=True)
def cleanup(base_data):
    yield

    async def remove(engine):
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM admin_unit WHERE code LIKE 'TT-%'"))
            for statement in units_sql.refresh_unit_parts():
                await conn.execute(statement)
            for statement in units_sql.assign_incident_units():
                await conn.execute(statement, {"tolerance_m": base_data.territory.tolerance_m})

    call_service(base_data, remove)


def _geojson(frame: gpd.GeoDataFrame) -> bytes:
    return frame.to_json().encode()


def _post(client, key, filename, content, level="2", code_field="CODE", name_field="LABEL"):
    data = {"level": level, "code_field": code_field, "name_field": name_field}
    return client.post(
        "/boundaries", files={"file": (filename, content)}, data=data, headers=auth(key)
    )


def _state(db) -> tuple:
    units = db.execute("SELECT count(*), max(updated_at) FROM admin_unit").fetchone()
    audits = db.execute("SELECT count(*) FROM audit_log WHERE entity = 'boundaries'").fetchone()
    return (*units, *audits)


def _flags(client) -> dict[str, list[str]]:
    units = UnitCollection.model_validate(client.get("/units?level=2").json())
    return {f.id: f.properties.flags for f in units.features if f.id.startswith("TT-")}


def _cayo() -> gpd.GeoDataFrame:
    """Cayo cut in two halves (inside), and a copy of its west half five degrees east, in
    the Caribbean Sea (outside)."""
    districts = gpd.read_file(ADM1, engine="pyogrio")
    geom = districts.loc[districts["iso_3166_2"] == "BZ-CY", "geometry"].iloc[0]
    west_, south, east_, north = geom.bounds
    cut = geom.centroid.x
    west = geom.intersection(box(west_ - 1, south - 1, cut, north + 1))
    east = geom.intersection(box(cut, south - 1, east_ + 1, north + 1))
    at_sea = gpd.GeoSeries([west], crs=4326).translate(5, 0).iloc[0]
    return gpd.GeoDataFrame(
        {"CODE": ["TT-W", "TT-E", "TT-SEA"], "LABEL": ["West", "East", "At sea"]},
        geometry=[west, east, at_sea],
        crs=4326,
    )


def test_units_mostly_outside_are_loaded_flagged_and_reported(client, keys, db):
    response = _post(client, keys["admin"], "cayo.geojson", _geojson(cayo := _cayo()))
    assert response.status_code == 200, response.text
    report = BoundaryReport.model_validate(response.json())
    assert (report.received, report.inserted) == (3, 3)
    assert [(u.code, u.share_outside) for u in report.outside_territory] == [("TT-SEA", 1.0)]
    assert report.warnings == [
        "1 of 3 units lie mostly or wholly outside the territory (the loaded level 0 "
        "outline grown by 2000 m): TT-SEA. They were loaded with the 'outside_territory' "
        "flag; if they should be inside, check the file's coordinate reference system."
    ]
    assert _flags(client) == {"TT-E": [], "TT-SEA": ["outside_territory"], "TT-W": []}
    # The audit row keeps the report, warnings included.
    after = db.execute(
        "SELECT after FROM audit_log WHERE entity = 'boundaries' ORDER BY id DESC LIMIT 1"
    ).fetchone()[0]
    assert after["outside_territory"] == [{"code": "TT-SEA", "share_outside": 1.0}]
    assert after["warnings"] == report.warnings

    # The same file with the unit moved back inside: the flag goes.
    fixed = cayo.assign(geometry=[*cayo.geometry[:2], cayo.geometry.iloc[0].buffer(-0.01)])
    again = BoundaryReport.model_validate(
        _post(client, keys["admin"], "cayo.geojson", _geojson(fixed)).json()
    )
    assert (again.updated, again.outside_territory, again.warnings) == (3, [], [])
    assert _flags(client) == {"TT-E": [], "TT-SEA": [], "TT-W": []}


def test_a_prj_for_the_wrong_utm_zone_is_a_422_that_changes_nothing(
    client, keys, db, tmp_path: Path
):
    # Coordinates in UTM 16N (Belize's zone) with the .prj of UTM 15N: every unit lands
    # about 6 degrees west, in Mexico and the Pacific, yet in longitude/latitude range.
    folder = tmp_path / "shp"
    folder.mkdir()
    districts = gpd.read_file(ADM1, engine="pyogrio").rename(
        columns={"iso_3166_2": "CODE", "district": "LABEL"}
    )[["CODE", "LABEL", "geometry"]]
    districts.assign(CODE="TT-" + districts["CODE"]).to_crs(32616).to_file(
        folder / "districts.shp", engine="pyogrio"
    )
    (folder / "districts.prj").write_text(CRS.from_epsg(32615).to_wkt("WKT1_ESRI"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for part in sorted(folder.glob("districts.*")):
            archive.write(part, part.name)
    before = _state(db)
    response = _post(client, keys["admin"], "districts.zip", buffer.getvalue())
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["detail"] == (
        "districts.zip: every unit lies mostly or wholly outside the territory (the loaded "
        "level 0 outline grown by 2000 m); nothing was loaded. The file's coordinate "
        "reference system is probably wrong (a .prj that does not match the coordinates, "
        "or latitude and longitude swapped), or the file is for another territory."
    )
    assert _state(db) == before


def test_a_country_outside_the_territory_bbox_is_a_422(client, keys, db):
    # Level 0 has no level above: the territory's bounding box (territory.bbox) is the
    # reference. Belize's outline with latitude and longitude swapped lies near the
    # South Pole.
    country = gpd.read_file(ADM0, engine="pyogrio")
    swapped = country.assign(ISO_A2="TT-ZZ").set_geometry(
        country.geometry.map(lambda g: shapely.transform(g, lambda xy: xy[:, ::-1]))
    )
    before = _state(db)
    response = _post(
        client, keys["admin"], "country.geojson", _geojson(swapped), level="0",
        code_field="ISO_A2", name_field="ADMIN",
    )  # fmt: skip
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith(
        "country.geojson: every unit lies mostly or wholly outside the territory (the "
        "territory's bounding box (territory.bbox) grown by 2000 m); nothing was loaded."
    )
    assert _state(db) == before
