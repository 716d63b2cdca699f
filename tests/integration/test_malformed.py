"""Malformed files sent to the two upload routes: each gets its 4xx problem+json, and the
store is left exactly as it was (row counts and checksums of every table an upload writes).

Boundary uploads (``POST /boundaries``, admin) and incident imports (``POST /imports``,
editor) run on the real PostGIS the suite starts. Files are built in the test: nothing
here depends on fixtures that could be edited into harmlessness.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator

import geopandas as gpd
import numpy as np
import psycopg
import pytest
import shapely
from fastapi.testclient import TestClient

from app.core.settings import ApiSettings
from app.main import create_app
from tests.conftest import auth

PROBLEM = "application/problem+json"
# Every table a boundary upload or an incident import writes to.
TABLES = (
    "admin_unit",
    "admin_unit_part",
    "incident",
    "import_batch",
    "import_rejection",
    "audit_log",
)
# A level the rest of the suite never loads, so that an accepted file would show.
LEVEL = "3"
GIB = 1 << 30


def fingerprint(db: psycopg.Connection) -> dict[str, tuple[int, str | None]]:
    """Row count and an order-independent checksum of every written table."""
    out = {}
    for table in TABLES:
        out[table] = db.execute(
            f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t"
        ).fetchone()
    return out


def _polygon_feature(coords: list[list[float]] | str, code: str = "X-1") -> str:
    """One GeoJSON feature as text (``coords`` may be raw text, e.g. with a NaN token)."""
    feature = {
        "type": "Feature",
        "properties": {"code": code, "name": "Malformed"},
        "geometry": {"type": "Polygon", "coordinates": ["RING"]},
    }
    ring = coords if isinstance(coords, str) else json.dumps(coords)
    return json.dumps(feature).replace('"RING"', ring)


def _collection(*features: str) -> bytes:
    return (
        json.dumps({"type": "FeatureCollection", "features": ["FEATURES"]})
        .replace('"FEATURES"', ", ".join(features))
        .encode()
    )


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def zip_bomb(size: int = GIB + (1 << 20)) -> bytes:
    """A zipped "Shapefile" whose .shp inflates to ``size`` zero bytes (about 1 MB zipped).

    Written through zipfile's streaming writer in 1 MiB chunks, so neither memory nor
    disk ever holds the inflated gigabyte.
    """
    buffer = io.BytesIO()
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("bomb.shp", "w", force_zip64=True) as member:
            left = size
            while left > 0:
                member.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
        archive.writestr("bomb.shx", b"\0" * 100)
        archive.writestr("bomb.dbf", b"\0" * 100)
        archive.writestr("bomb.prj", 'GEOGCS["WGS 84"]')
    return buffer.getvalue()


def _gpkg(tmp_path, geometry: shapely.Geometry) -> bytes:
    frame = gpd.GeoDataFrame(
        {"code": ["X-1"], "name": ["Malformed"]}, geometry=[geometry], crs=4326
    )
    path = tmp_path / "units.gpkg"
    frame.to_file(path, driver="GPKG")
    return path.read_bytes()


# A square near Belmopan, and a "polygon" that retraces its own edge: self-intersecting
# with no area at all, so repair leaves nothing (a bow-tie is repaired; see test_units).
SQUARE = [[-88.8, 17.2], [-88.7, 17.2], [-88.7, 17.3], [-88.8, 17.3], [-88.8, 17.2]]
RETRACED = [[-88.8, 17.2], [-88.7, 17.2], [-88.8, 17.2], [-88.7, 17.2], [-88.8, 17.2]]
NAN_RING = "[[-88.8, 17.2], [NaN, 17.2], [-88.7, 17.3], [-88.8, 17.2]]"


def boundary_cases(tmp_path) -> Iterator[tuple[str, bytes, str]]:
    """(file name, content, fragment of the expected detail)."""
    whole = _collection(_polygon_feature(SQUARE))
    yield "truncated.geojson", whole[: len(whole) // 2], "cannot read"
    yield "retraced.geojson", _collection(_polygon_feature(RETRACED)), "no unit has a usable"
    yield "nan.geojson", _collection(_polygon_feature(NAN_RING)), "non-finite coordinates"
    nan_polygon = shapely.Polygon([(-88.8, 17.2), (np.nan, 17.2), (-88.7, 17.3)])
    yield "nan.gpkg", _gpkg(tmp_path, nan_polygon), "non-finite coordinates"
    far = [[x + 300, y] for x, y in SQUARE]
    yield "range.geojson", _collection(_polygon_feature(far)), "outside longitude/latitude"
    yield (
        "climb.zip",
        _zip({"../../etc/units.shp": b"\0" * 100, "units.prj": b'GEOGCS["WGS 84"]'}),
        "unsafe path",
    )
    yield "absolute.zip", _zip({"/tmp/units.shp": b"\0" * 100}), "unsafe path"
    many = {f"part{i}.txt": b"x" for i in range(500)}
    yield "many.zip", _zip(many), "files; at most"
    yield "bomb.zip", zip_bomb(), "bytes uncompressed"
    yield "notzip.zip", b"PK\x03\x04 truncated", "not a readable zip"


def test_malformed_boundary_files_are_4xx_and_change_nothing(client, keys, tmp_path, db):
    admin = keys["admin"]
    before = fingerprint(db)
    for name, content, fragment in boundary_cases(tmp_path):
        response = client.post(
            "/boundaries",
            files={"file": (name, content)},
            data={"level": LEVEL, "code_field": "code", "name_field": "name"},
            headers=auth(admin),
        )
        assert response.status_code == 422, (name, response.text)
        assert response.headers["content-type"] == PROBLEM, name
        assert fragment in response.json()["detail"], (name, response.json())
    assert fingerprint(db) == before


def test_a_bomb_is_refused_by_its_ratio_even_under_the_size_limit(client, keys, db):
    """64 MiB of zeros is far below the size limit; its 1000:1 ratio still gives it away."""
    before = fingerprint(db)
    response = client.post(
        "/boundaries",
        files={"file": ("small-bomb.zip", zip_bomb(64 << 20))},
        data={"level": LEVEL, "code_field": "code", "name_field": "name"},
        headers=auth(keys["admin"]),
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert "decompression bomb" in response.json()["detail"]
    assert fingerprint(db) == before


def test_a_zip_whose_header_understates_its_data_is_refused(tmp_path):
    """Declared sizes can lie: the streaming pass catches a member bigger than declared."""
    from boundaries import BoundaryError
    from boundaries.read import ZipLimits, check_zip

    path = tmp_path / "liar.zip"
    path.write_bytes(_zip({"units.shp": bytes(4 << 20)}))
    # Rewrite the declared uncompressed size (central directory and local header) to 1 KiB.
    with zipfile.ZipFile(path) as archive:
        info = archive.infolist()[0]
    data = bytearray(path.read_bytes())
    real = info.file_size.to_bytes(4, "little")
    for at in (i for i in range(len(data) - 3) if data[i : i + 4] == real):
        data[at : at + 4] = (1024).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as archive:
        assert archive.infolist()[0].file_size == 1024  # the lie is in place
    with pytest.raises(BoundaryError, match="damaged"):
        check_zip(path, ZipLimits())


def import_cases() -> Iterator[tuple[str, bytes, str]]:
    header = "source,source_id,category,occurred_at,longitude,latitude\n"
    yield (
        "truncated.geojson",
        b'{"type": "FeatureCollection", "features": [{"type": "Fea',
        "cannot read",
    )
    latin = header + "x,1,Violación,2024-01-01,-88.2,17.5\n"
    yield "latin.csv", latin.encode("latin-1"), "not valid utf-8"
    yield "incidents.zip", _zip({"../incidents.csv": latin.encode()}), "unsupported file type"
    yield "bomb.zip", zip_bomb(64 << 20), "unsupported file type"


def test_malformed_import_files_are_4xx_and_change_nothing(client, keys, db):
    editor = keys["editor"]
    before = fingerprint(db)
    for name, content, fragment in import_cases():
        response = client.post("/imports", files={"file": (name, content)}, headers=auth(editor))
        assert response.status_code == 422, (name, response.text)
        assert response.headers["content-type"] == PROBLEM, name
        assert fragment in response.json()["detail"], (name, response.json())
    assert fingerprint(db) == before


def test_nan_and_polygon_incidents_are_rejected_rows_and_insert_nothing(client, keys, db):
    """Per-row problems do not fail an import: each row is rejected with its reason and no
    incident is written (the batch and its rejections are recorded for the editor)."""
    incidents_before = fingerprint(db)["incident"]
    csv = (
        b"source,source_id,category,occurred_at,longitude,latitude\n"
        b"malformed-test,1,theft,2024-01-01,NaN,17.5\n"
        b"malformed-test,2,theft,2024-01-01,-88.2,inf\n"
    )
    polygon = _collection(_polygon_feature(SQUARE))
    for name, content in (("nan.csv", csv), ("polygon.geojson", polygon)):
        response = client.post(
            "/imports",
            files={"file": (name, content)},
            data={"source": "malformed-test"},
            headers=auth(keys["editor"]),
        )
        assert response.status_code == 201, (name, response.text)
        report = response.json()
        assert report["inserted"] == 0 and report["rejected"] >= 1, (name, report)
    assert fingerprint(db)["incident"] == incidents_before


@pytest.fixture(scope="module")
def small_client(base_data) -> Iterator[TestClient]:
    """An app with tiny limits: 1 MB uploads, 4 KB for every other body."""
    small = base_data.model_copy(update={"api": ApiSettings(max_upload_mb=1, max_body_kb=4)})
    with TestClient(create_app(small)) as client:
        yield client


def _assert_413(response) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == 413


JSON_ROUTES = ["/incidents", "/indexes", "/analyses/hotspots", "/analyses/emerging-hotspots"]


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_json_bodies_over_the_limit_are_413(small_client, keys, db, path):
    before = fingerprint(db)
    # Valid JSON, 8 KB: refused for its size alone, before any parsing or validation.
    body = json.dumps({"padding": "x" * 8192}).encode()
    headers = {**auth(keys["admin"]), "Content-Type": "application/json"}
    _assert_413(small_client.post(path, content=body, headers=headers))
    assert fingerprint(db) == before


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_chunked_json_bodies_without_length_are_counted(small_client, keys, db, path):
    before = fingerprint(db)

    def chunks() -> Iterator[bytes]:
        yield b'{"padding": "'
        for _ in range(16):
            yield b"x" * 1024
        yield b'"}'

    headers = {**auth(keys["admin"]), "Content-Type": "application/json"}
    response = small_client.post(path, content=chunks(), headers=headers)
    assert "content-length" not in response.request.headers  # really chunked
    _assert_413(response)
    assert fingerprint(db) == before


def test_json_bodies_within_the_limit_still_reach_validation(small_client, keys):
    headers = {**auth(keys["admin"]), "Content-Type": "application/json"}
    response = small_client.post("/incidents", content=b'{"padding": "x"}', headers=headers)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    ("path", "role", "data"),
    [
        ("/boundaries", "admin", {"level": LEVEL, "code_field": "code", "name_field": "name"}),
        ("/imports", "editor", {"source": "malformed-test"}),
    ],
)
def test_uploads_over_the_limit_are_413_declared_or_chunked(
    small_client, keys, db, path, role, data
):
    before = fingerprint(db)
    big = b" " * (3 << 20)  # 3 MB: past the 1 MB file limit and its multipart allowance
    response = small_client.post(
        path, files={"file": ("big.geojson", big)}, data=data, headers=auth(keys[role])
    )
    _assert_413(response)
    # The same multipart body streamed without a Content-Length.
    request = small_client.build_request(
        "POST", path, files={"file": ("big.geojson", big)}, data=data, headers=auth(keys[role])
    )
    body = request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1 << 16):
            yield body[start : start + (1 << 16)]

    response = small_client.post(path, content=chunks(), headers=headers)
    assert "content-length" not in response.request.headers
    _assert_413(response)
    assert fingerprint(db) == before


# Expensive requests: each limit answers a clear 422 (or 404 for a tile outside the
# layer's zooms, where the resource does not exist) before any work is done.


def _analysis(client: TestClient, keys: dict[str, str], path: str, body: dict):
    return client.post(f"/analyses/{path}", json=body, headers=auth(keys["analyst"]))


@pytest.fixture(scope="module")
def patient_client(base_data) -> Iterator[TestClient]:
    """An app that waits for its analyses: the grid size is checked inside the run, which
    answers 422 while the request waits for it and a failed run (after a 202) beyond."""
    patient = base_data.model_copy(
        update={"analysis": base_data.analysis.model_copy(update={"wait_s": 600})}
    )
    with TestClient(create_app(patient)) as client:
        yield client


def test_too_many_permutations_is_a_422(client, keys):
    response = _analysis(client, keys, "hotspots", {"permutations": 10_000})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert "permutations" in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "units"),
    [
        ("hotspots", {"type": "h3", "resolution": 10}),  # ~1.5 million cells over Belize
        ("hotspots", {"type": "grid", "cell_size_m": 100}),  # ~2.3 million
    ],
)
def test_grids_beyond_max_cells_are_a_422(patient_client, keys, path, units):
    # Checked on the area alone, before incidents are counted (emerging hot spots share
    # the same check, but first refuse an empty selection, so they are not used here).
    response = _analysis(patient_client, keys, path, {"units": units})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert "MAX_CELLS" in response.json()["detail"]


def test_tiles_outside_the_zoom_range_do_not_exist(client, keys):
    response = client.get("/tiles/units-1/25/0/0.mvt", headers=auth(keys["analyst"]))
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == PROBLEM
