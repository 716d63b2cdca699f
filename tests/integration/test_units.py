"""Units served as GeoJSON, and boundary uploads (roles, formats, repair, idempotence,
incident reassignment) on the real PostGIS the suite starts.

Uploads use level 2 (halves of Cayo), which the rest of the suite does not rely on, and
the module removes them at the end.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from shapely.geometry import Polygon, box
from sqlalchemy import text

from app.core.settings import ApiSettings
from app.main import create_app
from app.schemas.units import BoundaryReport, UnitCollection, UnitFeature
from app.sql import units as units_sql
from tests.conftest import BELIZE, auth, call_service

GEOJSON = "application/geo+json"
DISTRICTS = ["BZ-BZ", "BZ-CY", "BZ-CZL", "BZ-OW", "BZ-SC", "BZ-TOL"]
ADM1 = BELIZE / "boundaries" / "belize_adm1_districts.geojson"
TEST_SOURCE = "test-units"


@pytest.fixture(scope="module")
def districts() -> gpd.GeoDataFrame:
    return gpd.read_file(ADM1, engine="pyogrio")


@pytest.fixture(scope="module")
def level2(districts) -> gpd.GeoDataFrame:
    """Level 2 over the whole country: Cayo cut in two at its centroid's longitude, the
    other districts carried over whole (``<code>-1``), and a tiny bow-tie inside Cayo.

    Full coverage keeps every incident's reassignment a point-in-polygon join, as with
    real boundaries; the nearest-unit fallback is then needed only for coastal points.
    """
    cayo = districts.loc[districts["iso_3166_2"] == "BZ-CY", "geometry"].iloc[0]
    west_, south, east_, north = cayo.bounds
    cut = cayo.centroid.x
    west = cayo.intersection(box(west_ - 1, south - 1, cut, north + 1))
    east = cayo.intersection(box(cut, south - 1, east_ + 1, north + 1))
    px, py = cayo.representative_point().coords[0]
    d = 0.01
    bow_tie = Polygon(
        [(px - d, py - d), (px + d, py + d), (px + d, py - d), (px - d, py + d), (px - d, py - d)]
    )
    others = districts[districts["iso_3166_2"] != "BZ-CY"]
    return gpd.GeoDataFrame(
        {
            "CODE": ["BZ-CY-W", "BZ-CY-E", "BZ-CY-X", *(others["iso_3166_2"] + "-1")],
            "LABEL": ["Cayo West", "Cayo East", "Tie", *others["district"]],
        },
        geometry=[west, east, bow_tie, *others.geometry],
        crs=4326,
    )


LEVEL2 = sorted(["BZ-CY-W", "BZ-CY-E", "BZ-CY-X", *(f"{c}-1" for c in DISTRICTS if c != "BZ-CY")])


@pytest.fixture(scope="module")
def level2_cleanup(base_data):
    """Remove level 2 units and the test incident afterwards, and re-link incidents."""
    yield

    async def cleanup(engine):
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM incident WHERE source = :s"), {"s": TEST_SOURCE})
            await conn.execute(text("DELETE FROM admin_unit WHERE level >= 2"))
            for statement in units_sql.assign_incident_units():
                await conn.execute(statement, {"tolerance_m": base_data.territory.tolerance_m})

    call_service(base_data, cleanup)


def _zipped_shapefile(frame: gpd.GeoDataFrame, tmp_path: Path) -> bytes:
    folder = tmp_path / "shp"
    folder.mkdir(exist_ok=True)
    frame.to_crs(32616).to_file(folder / "cayo.shp", engine="pyogrio")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for part in sorted(folder.glob("cayo.*")):
            zf.write(part, part.name)
    return buffer.getvalue()


def _geopackage(frame: gpd.GeoDataFrame, tmp_path: Path) -> bytes:
    path = tmp_path / "cayo.gpkg"
    frame.to_crs(32616).to_file(path, layer="cayo", engine="pyogrio")
    return path.read_bytes()


def _post(client, key, filename, content, **form):
    data = {"level": "2", "code_field": "CODE", "name_field": "LABEL", **form}
    return client.post(
        "/boundaries", files={"file": (filename, content)}, data=data, headers=auth(key)
    )


def _problem(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


# --- GET /units ------------------------------------------------------------------------------


def test_districts(client):
    response = client.get("/units", params={"level": 1})
    assert response.status_code == 200
    assert response.headers["content-type"] == GEOJSON
    collection = UnitCollection.model_validate(response.json())
    assert [f.id for f in collection.features] == DISTRICTS
    assert [f.properties.code for f in collection.features] == DISTRICTS
    assert {f.properties.parent_code for f in collection.features} == {"BZ"}
    assert {f.properties.level for f in collection.features} == {1}
    assert {f.geometry["type"] for f in collection.features} == {"MultiPolygon"}
    # Geodesic areas agree with the file's UTM 16N areas (area_km2_utm16n) within 0.5 %.
    expected = {
        f["properties"]["iso_3166_2"]: f["properties"]["area_km2_utm16n"]
        for f in json.loads(ADM1.read_text())["features"]
    }
    for feature in collection.features:
        assert feature.properties.area_km2 == pytest.approx(expected[feature.id], rel=5e-3)


def test_country(client):
    collection = UnitCollection.model_validate(client.get("/units?level=0").json())
    assert [(f.id, f.properties.name, f.properties.parent_code) for f in collection.features] == [
        ("BZ", "Belize", None)
    ]


def test_unknown_level_is_empty_and_negative_is_invalid(client):
    response = client.get("/units", params={"level": 9})
    assert response.status_code == 200
    assert response.json() == {"type": "FeatureCollection", "features": []}
    _problem(client.get("/units", params={"level": -1}), 422)


def test_one_unit(client):
    response = client.get("/units/BZ-CY")
    assert response.status_code == 200
    assert response.headers["content-type"] == GEOJSON
    feature = UnitFeature.model_validate(response.json())
    assert feature.id == "BZ-CY"
    assert feature.properties.name == "Cayo"
    assert feature.properties.parent_code == "BZ"


def test_unknown_unit(client):
    body = _problem(client.get("/units/XX-NOPE"), 404)
    assert "XX-NOPE" in body["detail"]


def test_simplify(client):
    def vertices(params):
        body = client.get("/units", params={"level": 1, **params}).json()
        return sum(
            shapely.get_num_coordinates(shapely.geometry.shape(f["geometry"]))
            for f in body["features"]
        )

    full, simplified = vertices({}), vertices({"simplify": 0.01})
    assert simplified < full / 2
    one = client.get("/units/BZ-CY", params={"simplify": 0.01}).json()
    assert shapely.geometry.shape(one["geometry"]).is_valid
    _problem(client.get("/units", params={"level": 1, "simplify": 0}), 422)


# --- POST /boundaries ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "status"), [(None, 401), ("viewer", 403), ("analyst", 403), ("editor", 403)]
)
def test_upload_needs_admin(client, keys, level2, tmp_path, role, status):
    response = _post(client, keys.get(role), "cayo.zip", _zipped_shapefile(level2, tmp_path))
    _problem(response, status)
    assert client.get("/units", params={"level": 2}).json()["features"] == []


def test_upload_flow(client, keys, db, level2, level2_cleanup, tmp_path):
    # An incident in Cayo West, so that the import must reassign it.
    west = level2.geometry.iloc[0].representative_point()
    category = db.execute("SELECT code FROM category ORDER BY code LIMIT 1").fetchone()[0]
    db.execute(
        """INSERT INTO incident (source, source_id, category, occurred_at, geom)
           VALUES (%s, 'one', %s, now(), ST_SetSRID(ST_MakePoint(%s, %s), 4326))""",
        [TEST_SOURCE, category, west.x, west.y],
    )
    audits = db.execute("SELECT count(*) FROM audit_log WHERE entity = 'boundaries'").fetchone()[0]

    # 1. Zipped Shapefile in UTM 16N: eight new units, the bow-tie repaired.
    response = _post(client, keys["admin"], "cayo.zip", _zipped_shapefile(level2, tmp_path))
    assert response.status_code == 200, response.text
    report = BoundaryReport.model_validate(response.json())
    counts = (report.level, report.received, report.inserted, report.updated, report.deleted)
    assert counts == (2, 8, 8, 0, 0)
    assert [(r.code, r.reason.split("[")[0]) for r in report.repaired] == [
        ("BZ-CY-X", "Self-intersection")
    ]
    assert report.without_parent == []
    assert report.incidents_reassigned >= 1

    units = UnitCollection.model_validate(client.get("/units?level=2").json())
    assert [f.id for f in units.features] == LEVEL2
    # Parents by containment, although the shapefile went through UTM and back.
    assert {f.id: f.properties.parent_code for f in units.features} == {
        code: code[:5] if code.startswith("BZ-CY") else code[:-2] for code in LEVEL2
    }
    halves = sum(f.properties.area_km2 for f in units.features if f.id in ("BZ-CY-W", "BZ-CY-E"))
    cayo = client.get("/units/BZ-CY").json()["properties"]["area_km2"]
    assert halves == pytest.approx(cayo, rel=1e-6)
    tie = next(f for f in units.features if f.id == "BZ-CY-X")
    assert shapely.geometry.shape(tie.geometry).is_valid
    assert len(tie.geometry["coordinates"]) == 2  # two triangles

    codes = db.execute(
        """SELECT array_agg(u.code ORDER BY u.level) FROM incident i
           JOIN admin_unit u ON u.id = ANY(i.unit_ids) WHERE i.source = %s""",
        [TEST_SOURCE],
    ).fetchone()[0]
    assert codes == ["BZ", "BZ-CY", "BZ-CY-W"]

    # 2. The same file again: updated, never duplicated.
    again = BoundaryReport.model_validate(
        _post(client, keys["admin"], "cayo.zip", _zipped_shapefile(level2, tmp_path)).json()
    )
    assert (again.inserted, again.updated, again.deleted) == (0, 8, 0)
    assert again.incidents_reassigned == 0
    assert len(client.get("/units?level=2").json()["features"]) == 8

    # 3. A GeoPackage without the bow-tie, replacing the level: the bow-tie goes.
    without_tie = level2[level2["CODE"] != "BZ-CY-X"]
    response = _post(
        client, keys["admin"], "cayo.gpkg", _geopackage(without_tie, tmp_path), replace="true"
    )
    assert response.status_code == 200, response.text
    report = BoundaryReport.model_validate(response.json())
    assert (report.received, report.inserted, report.updated, report.deleted) == (7, 0, 7, 1)
    assert report.repaired == []
    remaining = [f["id"] for f in client.get("/units?level=2").json()["features"]]
    assert remaining == [code for code in LEVEL2 if code != "BZ-CY-X"]

    # One audit row per import, with the report as "after".
    rows = db.execute(
        """SELECT actor, action, entity_id, after FROM audit_log WHERE entity = 'boundaries'
           ORDER BY id DESC LIMIT 3"""
    ).fetchall()
    assert (
        db.execute("SELECT count(*) FROM audit_log WHERE entity = 'boundaries'").fetchone()[0]
        == audits + 3
    )
    assert {(r[1], r[2]) for r in rows} == {("import", "level:2")}
    assert rows[0][0].endswith("test-admin")
    assert rows[0][3]["deleted"] == 1 and rows[0][3]["file"].endswith(".gpkg")


def test_missing_field(client, keys, level2, tmp_path):
    response = _post(
        client, keys["admin"], "cayo.gpkg", _geopackage(level2, tmp_path), code_field="ISO"
    )
    body = _problem(response, 422)
    assert "no field 'ISO'" in body["detail"]
    assert "CODE, LABEL" in body["detail"]


def test_unknown_explicit_parent(client, keys, level2, tmp_path):
    frame = level2.assign(UP="BZ-NOPE")
    response = _post(
        client, keys["admin"], "cayo.gpkg", _geopackage(frame, tmp_path), parent_field="UP"
    )
    assert "BZ-NOPE" in _problem(response, 422)["detail"]


def test_unsupported_file_type(client, keys):
    body = _problem(_post(client, keys["admin"], "cayo.shp", b"not really"), 422)
    assert ".zip" in body["detail"]
    _problem(_post(client, keys["admin"], "cayo.zip", b"not a zip"), 422)


def test_too_large(base_data, keys):
    from fastapi.testclient import TestClient

    small = base_data.model_copy(update={"api": ApiSettings(max_upload_mb=1)})
    with TestClient(create_app(small)) as client:
        response = _post(client, keys["admin"], "big.geojson", b" " * (1024 * 1024 + 1))
    _problem(response, 413)
