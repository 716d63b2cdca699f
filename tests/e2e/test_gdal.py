"""GDAL as the real client: ``ogrinfo OAPIF:http://127.0.0.1:PORT/`` against uvicorn
serving the test cluster, as a GIS user (or a script) would connect with only a URL.

ogrinfo comes from Debian's gdal-bin (scripts/setup.sh installs it with
OBSERVATORY_SETUP_TESTS=1). Without it these tests fail: a client that cannot be run
proves nothing, and a skip would hide that.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import psycopg
import pytest

from app.core.settings import Settings
from tests.integration.helpers import import_csv

SOURCE = "gdal-e2e"
# Dangriga: a town no other test places incidents in, so a small box around it holds only
# this module's points and GDAL pages through a known, small set.
DANGRIGA = (-88.2194, 16.9698)
BOX = (-88.2294, 16.9598, -88.2094, 16.9798)
N = 40


def _ogrinfo() -> str:
    path = shutil.which("ogrinfo")
    if path is None:
        pytest.fail(
            "ogrinfo not found: install gdal-bin (OBSERVATORY_SETUP_TESTS=1 scripts/setup.sh)"
        )
    return path


@pytest.fixture(scope="module")
def server(session_db_service: str) -> str:
    """uvicorn on 127.0.0.1 serving the session's test database, warm-up off (shared by
    the package's modules that use that database)."""
    return session_db_service


@pytest.fixture(scope="module")
def incidents(base_data: Settings, server: str, tmp_path_factory) -> int:
    rng = np.random.default_rng(11)
    frame = pd.DataFrame(
        {
            "source": SOURCE,
            "source_id": [f"g{i:03d}" for i in range(N)],
            "category": rng.choice(["robbery", "theft", "burglary"], N),
            "occurred_at": "2024-03-01 10:00",
            "longitude": (DANGRIGA[0] + rng.uniform(-0.004, 0.004, N)).round(6),
            "latitude": (DANGRIGA[1] + rng.uniform(-0.004, 0.004, N)).round(6),
        }
    )
    path = tmp_path_factory.mktemp("gdal") / "incidents.csv"
    frame.to_csv(path, index=False)
    assert import_csv(base_data, path).inserted == N
    return N


def _run(base: str, *args: str, key: str | None = None) -> str:
    """ogrinfo on the service; the API key goes in GDAL's GDAL_HTTP_HEADERS option
    (GDAL >= 3.6), as a QGIS-less user would pass it."""
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    env.pop("GDAL_HTTP_HEADERS", None)
    if key is not None:
        env["GDAL_HTTP_HEADERS"] = f"Authorization: Bearer {key}"
    result = subprocess.run(
        [_ogrinfo(), "-ro", f"OAPIF:{base}/", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def _feature_ids(output: str, layer: str) -> list[int]:
    return [int(i) for i in re.findall(rf"^OGRFeature\({re.escape(layer)}\):(\d+)$", output, re.M)]


def _box_count(db: psycopg.Connection, where: str = "TRUE") -> int:
    return db.execute(
        "SELECT count(*) FROM incident WHERE deleted_at IS NULL "
        f"AND ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, 4326)) AND ({where})",
        BOX,
    ).fetchone()[0]


def test_ogrinfo_lists_the_collections(server, keys, incidents):
    public = _run(server)
    layers = dict(re.findall(r"^\d+: (\S+) \(title: ([^)]*)\)", public, re.M))
    assert {"units-0", "units-1"} <= set(layers), public
    assert "incidents" not in layers  # never public
    analyst = dict(
        re.findall(r"^\d+: (\S+) \(title: ([^)]*)\)", _run(server, key=keys["analyst"]), re.M)
    )
    assert "incidents" in analyst and analyst["units-1"] == "Districts"


def test_ogrinfo_summary_counts_and_extent(server, keys, db, incidents):
    summary = _run(server, "-so", "units-1")
    assert "Geometry: Multi Polygon" in summary
    assert re.search(r"^Feature Count: 6$", summary, re.M), summary
    for field in ("code", "name", "level", "parent_code", "area_km2"):
        assert re.search(rf"^{field}: ", summary, re.M), field
    total = db.execute("SELECT count(*) FROM incident WHERE deleted_at IS NULL").fetchone()[0]
    points = _run(server, "-so", "incidents", key=keys["analyst"])
    assert re.search(rf"^Feature Count: {total}$", points, re.M), points
    west, south, east, north = map(
        float,
        re.search(
            r"^Extent: \(([-\d.]+), ([-\d.]+)\) - \(([-\d.]+), ([-\d.]+)\)$", points, re.M
        ).groups(),
    )
    extent = db.execute(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) "
        "FROM (SELECT ST_Extent(geom) e FROM incident WHERE deleted_at IS NULL) s"
    ).fetchone()
    assert np.allclose((west, south, east, north), extent, atol=1e-6)


def test_ogrinfo_reads_every_feature_through_paging(server, keys, db, incidents):
    # Districts, two to a page: three pages, six features, the names the database has.
    districts = _run(server, "-al", "-oo", "PAGE_SIZE=2", "units-1", "--debug", "on")
    pages = re.findall(r"HTTP: Fetch\(\S+/collections/units-1/items\?\S+\)", districts)
    assert len(pages) >= 3, pages
    names = sorted(re.findall(r"^  name \(String\) = (.+)$", districts, re.M))
    expected = db.execute("SELECT name FROM admin_unit WHERE level = 1 ORDER BY name").fetchall()
    assert names == [n for (n,) in expected]
    # Incidents in the Dangriga box, seven to a page, with the analyst key.
    spat = ["-spat", *map(str, BOX)]
    output = _run(
        server,
        "-al",
        "-oo",
        "PAGE_SIZE=7",
        *spat,
        "incidents",
        "--debug",
        "on",
        key=keys["analyst"],
    )
    ids = _feature_ids(output, "incidents")
    expected = _box_count(db)
    assert expected >= N
    assert len(ids) == len(set(ids)) == expected
    in_db = {
        i
        for (i,) in db.execute(
            "SELECT id FROM incident WHERE deleted_at IS NULL "
            "AND ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, 4326))",
            BOX,
        ).fetchall()
    }
    assert set(ids) == in_db
    next_pages = re.findall(
        r"HTTP: Fetch\(\S+/collections/incidents/items\?\S*after=\d+\S*\)", output
    )
    assert len(next_pages) >= expected // 7, next_pages  # GDAL followed the next links


def test_ogrinfo_attribute_filter_and_bbox(server, keys, db, incidents):
    spat = ["-spat", *map(str, BOX)]
    robbery = _run(
        server,
        "-al",
        "-q",
        *spat,
        "-where",
        "category = 'robbery'",
        "incidents",
        key=keys["analyst"],
    )
    expected = _box_count(db, "category = 'robbery'")
    assert 0 < expected < _box_count(db)
    assert len(_feature_ids(robbery, "incidents")) == expected
    assert set(re.findall(r"^  category \(String\) = (.+)$", robbery, re.M)) == {"robbery"}
    one = _run(server, "-al", "-q", "-where", "code = 'BZ-SC'", "units-1")
    assert re.findall(r"^  code \(String\) = (.+)$", one, re.M) == ["BZ-SC"]
    # Dangriga lies in Stann Creek: a bbox around it meets that district only.
    around = _run(server, "-al", "-q", *spat, "units-1")
    assert re.findall(r"^  code \(String\) = (.+)$", around, re.M) == ["BZ-SC"]


def test_incidents_are_refused_without_an_analyst_key(server, keys, incidents):
    for key in (None, keys["viewer"]):
        env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        env.pop("GDAL_HTTP_HEADERS", None)
        if key is not None:
            env["GDAL_HTTP_HEADERS"] = f"Authorization: Bearer {key}"
        result = subprocess.run(
            [_ogrinfo(), "-ro", "-so", f"OAPIF:{server}/", "incidents"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        # GDAL cannot even find the layer: the public collection list does not name it.
        assert result.returncode != 0, result.stdout
        assert "incidents" in result.stdout + result.stderr
