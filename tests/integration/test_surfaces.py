"""Density surfaces and evaluation through the API on the real PostGIS: the KDE GeoTIFF
(CRS, place, integral), hot-area polygons, filters, limits, and PAI / RRI runs.

Every surface is a KDE run the session's worker process computes (issue 18): a GET
reuses the run of the same parameters on the same data, or queues one and waits for it;
a run stores its files once."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import tempfile
import time

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from fastapi.testclient import TestClient
from pyproj import Transformer

from app.demo.incidents import generate_incidents
from app.main import create_app
from app.services.imports import import_frame
from app.services.incident_rows import ReadOptions
from tests.conftest import BELIZE, auth, call_service

SOURCE = "surface-test"
N_INCIDENTS = 10_000
BELIZE_CITY = (-88.1962, 17.5046)  # lon, lat
# A bandwidth small against the country (~110 x 280 km), so no kernel is cut by the edge.
SMALL = {"bandwidth_m": 2000, "cell_size_m": 200}


@pytest.fixture(scope="module")
def incidents(base_data):
    """10,000 synthetic incidents (the demo generator, 2021-2025) under their own source."""
    districts = gpd.read_file(BELIZE / "boundaries" / "belize_adm1_districts.geojson").rename(
        columns={"iso_3166_2": "code", "district": "name"}
    )
    frame = generate_incidents(districts, n=N_INCIDENTS, seed=11).assign(source=SOURCE)
    frame = frame.astype(object).where(frame.notna(), "").astype(str)
    report = call_service(
        base_data,
        lambda engine: import_frame(
            engine, base_data, frame, ReadOptions(), actor="tests", filename="surface.csv",
            fmt="csv",
        ),
    )  # fmt: skip
    assert report.inserted == N_INCIDENTS
    return report


def _city_xy() -> tuple[float, float]:
    return Transformer.from_crs(4326, 32616, always_xy=True).transform(*BELIZE_CITY)


def _geotiff(client, key, **params):
    response = client.get(
        "/analyses/kde.tif", params={"source": SOURCE, **params}, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    return response


def _read(response):
    with rasterio.MemoryFile(response.content) as memfile, memfile.open() as src:
        data = src.read(1, masked=True).filled(0.0).astype(float)
        return data, src.crs, src.transform, src.bounds, src.tags()


def test_kde_geotiff_opens_in_place_and_integrates(client, keys, incidents, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # see that the file is deleted
    response = _geotiff(client, keys["analyst"], **SMALL)
    assert response.headers["content-type"] == "image/tiff"
    assert response.headers["content-disposition"].startswith("attachment")
    assert list(tmp_path.iterdir()) == []
    data, crs, transform, bounds, tags = _read(response)
    assert crs.to_epsg() == 32616
    assert transform.a == 200 and transform.e == -200 and transform.b == transform.d == 0
    x, y = _city_xy()
    assert bounds.left < x < bounds.right and bounds.bottom < y < bounds.top
    # The surface holds every incident: sum(density) * cell area (km²) = N.
    cell_km2 = (transform.a * -transform.e) / 1e6
    assert data.sum() * cell_km2 == pytest.approx(N_INCIDENTS, rel=0.02)
    assert float(tags["incidents"]) == N_INCIDENTS
    assert tags["units"] == "incidents per km2" and float(tags["bandwidth_m"]) == 2000
    # The densest cell is in Belize City.
    row, col = np.unravel_index(np.argmax(data), data.shape)
    peak_x, peak_y = transform @ (col + 0.5, row + 0.5)
    assert math.hypot(peak_x - x, peak_y - y) < 5_000


def test_default_bandwidth_and_cell_size(client, keys, incidents):
    data, crs, transform, bounds, tags = _read(_geotiff(client, keys["analyst"]))
    bandwidth, cell = float(tags["bandwidth_m"]), transform.a
    assert crs.to_epsg() == 32616
    assert 100 < bandwidth < 50_000  # ArcGIS's rule on the country's spread
    # ArcGIS's default cell: the shorter side of the extent / 250.
    assert min(data.shape) in (250, 251)
    assert cell == pytest.approx(
        min(bounds.right - bounds.left, bounds.top - bounds.bottom) / 250, rel=0.01
    )


def test_kde_hot_areas_hold_belize_city(client, keys, incidents):
    response = client.get(
        "/analyses/kde/areas",
        params={"source": SOURCE, "percentile": 95, **SMALL},
        headers=auth(keys["analyst"]),
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/geo+json")
    body = response.json()
    assert body["type"] == "FeatureCollection" and body["percentile"] == 95
    features = body["features"]
    assert features
    city = shapely.Point(BELIZE_CITY)
    shapes = [shapely.geometry.shape(f["geometry"]) for f in features]
    assert any(s.contains(city) for s in shapes)
    for feature, geom in zip(features, shapes, strict=True):
        assert set(feature["properties"]) == {"area_id", "area_km2", "incidents", "share"}
        assert geom.is_valid and geom.geom_type == "Polygon"
        west, south, east, north = geom.bounds  # RFC 7946: longitude, latitude
        assert -90 < west < east < -87 and 15 < south < north < 19
    shares = [f["properties"]["share"] for f in features]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) < 1
    # The densest area is Belize City's, and holds a good part of the incidents.
    assert shapes[0].contains(city)
    assert features[0]["properties"]["incidents"] > 0.05 * N_INCIDENTS
    # A higher percentile makes less hot area.
    higher = client.get(
        "/analyses/kde/areas",
        params={"source": SOURCE, "percentile": 99, **SMALL},
        headers=auth(keys["analyst"]),
    ).json()
    area = sum(f["properties"]["area_km2"] for f in features)
    assert sum(f["properties"]["area_km2"] for f in higher["features"]) < area


def test_filters_change_the_surface(client, keys, incidents, db):
    analyst = keys["analyst"]
    homicides = db.execute(
        "SELECT count(*) FROM incident WHERE source = %s AND category = 'homicide'", [SOURCE]
    ).fetchone()[0]
    assert 0 < homicides < N_INCIDENTS
    data, _, transform, _, tags = _read(_geotiff(client, analyst, category="homicide", **SMALL))
    assert float(tags["incidents"]) == homicides
    assert data.sum() * transform.a**2 / 1e6 == pytest.approx(homicides, rel=0.02)
    # Repeated and comma-separated categories, a period, and a unit narrow it too.
    both = _geotiff(client, analyst, category="homicide,shooting", **SMALL)
    expected = db.execute(
        "SELECT count(*) FROM incident WHERE source = %s AND category IN ('homicide', 'shooting')",
        [SOURCE],
    ).fetchone()[0]
    assert float(_read(both)[4]["incidents"]) == expected
    recent = _read(_geotiff(client, analyst, occurred_from="2025-01-01T00:00:00-06:00", **SMALL))
    assert 0 < float(recent[4]["incidents"]) < N_INCIDENTS / 3
    district = _read(_geotiff(client, analyst, unit="BZ-BZ", **SMALL))
    assert 0 < float(district[4]["incidents"]) < N_INCIDENTS
    # Weighting by victims spreads the victims.
    victims = db.execute(
        "SELECT sum(victims_count) FROM incident WHERE source = %s", [SOURCE]
    ).fetchone()[0]
    weighted = _read(_geotiff(client, analyst, victims="true", **SMALL))
    assert float(weighted[4]["incidents"]) == victims


def test_kde_refusals_are_problems(client, keys, incidents):
    analyst = keys["analyst"]
    for path in ("/analyses/kde.tif", "/analyses/kde/areas"):
        none = client.get(path, params={"source": "nobody"}, headers=auth(analyst))
        assert none.status_code == 422, none.text
        assert none.headers["content-type"] == "application/problem+json"
        assert "no incidents" in none.json()["detail"]
    huge = client.get(
        "/analyses/kde.tif", params={"source": SOURCE, "cell_size_m": 10}, headers=auth(analyst)
    )
    assert huge.status_code == 422
    assert huge.headers["content-type"] == "application/problem+json"
    assert "4,000" in huge.json()["detail"] and "cell_size_m" in huge.json()["detail"]
    bad = client.get("/analyses/kde.tif", params={"victim_sex": "robot"}, headers=auth(analyst))
    assert bad.status_code == 422 and "victim_sex" in bad.json()["detail"]
    unknown = client.get("/analyses/kde/areas", params={"unit": "XX-00"}, headers=auth(analyst))
    assert unknown.status_code == 422 and "unknown unit" in unknown.json()["detail"]
    negative = client.get("/analyses/kde.tif", params={"bandwidth_m": -5}, headers=auth(analyst))
    assert negative.status_code == 422


def test_surfaces_and_evaluation_need_an_analyst(client, keys):
    viewer = auth(keys["viewer"])
    assert client.get("/analyses/kde.tif").status_code == 401
    assert client.get("/analyses/kde.tif", headers=viewer).status_code == 403
    assert client.get("/analyses/kde/areas", headers=viewer).status_code == 403
    assert client.post("/analyses/evaluate", json=EVALUATION, headers=viewer).status_code == 403
    assert client.get("/analyses/evaluations/1", headers=viewer).status_code == 403


def _run_id(response) -> int:
    """The run a surface came from (its ``Link: <…/analyses/{id}?format=run>``)."""
    return int(re.search(r"/analyses/(\d+)\?format=run", response.headers["link"]).group(1))


def _kde_runs(db, **parameters) -> list[int]:
    return [
        r[0]
        for r in db.execute(
            "SELECT id FROM analysis_run WHERE kind = 'kde' AND parameters @> %s::jsonb "
            "ORDER BY id",
            [json.dumps(parameters)],
        ).fetchall()
    ]


def test_a_get_reuses_the_run_of_the_same_data(client, keys, incidents, db):
    analyst = keys["analyst"]
    scale = {"bandwidth_m": 2200, "cell_size_m": 220}
    first = _geotiff(client, analyst, category="theft,robbery", **scale)
    again = _geotiff(client, analyst, category="robbery,theft", **scale)  # the same set
    assert _run_id(again) == _run_id(first) and again.content == first.content
    # The hot areas at the default percentile (95) are the same run's.
    areas = client.get(
        "/analyses/kde/areas",
        params={"source": SOURCE, "category": "theft,robbery", **scale},
        headers=auth(analyst),
    )
    assert areas.status_code == 200 and _run_id(areas) == _run_id(first)
    assert len(_kde_runs(db, bandwidth_m=2200)) == 1
    run = client.get(f"/analyses/{_run_id(first)}?format=run", headers=auth(analyst)).json()
    assert run["kind"] == "kde" and run["status"] == "completed"
    assert run["summary"]["incidents"] == float(_read(first)[4]["incidents"])
    assert set(run["summary"]["files"]) == {"kde.tif", "areas.geojson"}
    # Any write to the incidents is a new data version: the next GET computes again.
    db.execute(
        "UPDATE incident SET attributes = attributes "
        "WHERE id = (SELECT min(id) FROM incident WHERE source = %s)",
        [SOURCE],
    )
    changed = _geotiff(client, analyst, category="theft,robbery", **scale)
    assert _run_id(changed) != _run_id(first)
    assert _read(changed)[0] == pytest.approx(_read(first)[0])  # the same incidents
    assert len(_kde_runs(db, bandwidth_m=2200)) == 2


def test_a_get_that_waits_too_long_answers_the_run_to_poll(base_data, keys, incidents):
    hasty = base_data.model_copy(
        update={"analysis": base_data.analysis.model_copy(update={"read_wait_s": 0})}
    )
    analyst = auth(keys["analyst"])
    params = {"source": SOURCE, "bandwidth_m": 3100, "cell_size_m": 310}
    with TestClient(create_app(hasty)) as client:
        response = client.get("/analyses/kde.tif", params=params, headers=analyst)
        assert response.status_code == 202, response.text
        run = response.json()
        assert run["kind"] == "kde" and run["status"] == "running"
        location = response.headers["location"]
        assert location.endswith(f"/analyses/runs/{run['id']}/kde.tif")
        deadline = time.monotonic() + 120
        while (polled := client.get(location, headers=analyst)).status_code == 202:
            assert time.monotonic() < deadline, "the KDE run never finished"
            time.sleep(0.2)
        assert polled.status_code == 200, polled.text
        assert polled.headers["content-type"] == "image/tiff"
        data, _, transform, _, tags = _read(polled)
        assert transform.a == 310 and float(tags["bandwidth_m"]) == 3100
        assert data.sum() * (310 * 310) / 1e6 == pytest.approx(N_INCIDENTS, rel=0.02)
        # Asked again, the same GET is answered from the stored run at once.
        stored = client.get("/analyses/kde.tif", params=params, headers=analyst)
        assert stored.status_code == 200 and _run_id(stored) == run["id"]
        assert stored.content == polled.content


def test_a_posted_kde_run_stores_its_surface_and_hot_areas(client, keys, incidents, db):
    analyst = auth(keys["analyst"])
    body = {
        "filters": {"sources": [SOURCE]},
        "bandwidth_m": 2600,
        "cell_size_m": 260,
        "percentile": 90,
    }
    response = client.post("/analyses/kde", json=body, headers=analyst)
    assert response.status_code in (201, 202), response.text
    run = response.json()
    assert run["kind"] == "kde" and run["parameters"]["percentile"] == 90
    location = response.headers["location"]
    assert location.endswith(f"/analyses/runs/{run['id']}/kde.tif")
    deadline = time.monotonic() + 120
    while (tif := client.get(location, headers=analyst)).status_code == 202:
        assert time.monotonic() < deadline, "the KDE run never finished"
        time.sleep(0.2)
    assert tif.status_code == 200, tif.text
    assert float(_read(tif)[4]["bandwidth_m"]) == 2600
    areas = client.get(f"/analyses/runs/{run['id']}/areas", headers=analyst)
    assert areas.status_code == 200 and areas.headers["content-type"] == "application/geo+json"
    collection = areas.json()
    assert collection["percentile"] == 90 and collection["features"]
    city = shapely.Point(BELIZE_CITY)
    assert shapely.geometry.shape(collection["features"][0]["geometry"]).contains(city)
    listed = client.get("/analyses", params={"kind": "kde"}, headers=analyst).json()["runs"]
    summary = next(r for r in listed if r["id"] == run["id"])["summary"]
    assert summary["areas"] == len(collection["features"]) and summary["incidents"] == N_INCIDENTS
    # A POST is always a new run.
    second = client.post("/analyses/kde", json=body, headers=analyst).json()
    assert second["id"] != run["id"]
    # Nothing to spread: a 422 before any run is stored.
    before = len(_kde_runs(db))
    none = client.post("/analyses/kde", json={"filters": {"sources": ["nobody"]}}, headers=analyst)
    assert none.status_code == 422 and "no incidents" in none.json()["detail"]
    assert len(_kde_runs(db)) == before
    # Another kind's run, or none, has no surface.
    assert client.get("/analyses/runs/999999/kde.tif", headers=analyst).status_code == 404
    viewer = auth(keys["viewer"])
    assert client.get(location, headers=viewer).status_code == 403
    assert client.post("/analyses/kde", json=body, headers=viewer).status_code == 403


def test_a_retried_kde_job_stores_one_result(base_data, incidents, db):
    """The job run twice (a retry after its result was stored) stores its files once."""
    from app.schemas.surfaces import KdeRequest
    from app.services import jobs
    from app.sql import analyses as sql
    from app.worker.tasks import WORKS

    body = KdeRequest.model_validate({"filters": {"sources": [SOURCE]}, "bandwidth_m": 2700})

    async def store(engine):
        async with engine.begin() as conn:
            insert = sql.insert_run("kde", "quartic", body.model_dump(mode="json"), "tests")
            return (await conn.execute(insert)).scalar_one()

    def attempt(run_id):
        return call_service(
            base_data,
            lambda e: jobs.execute_run(e, base_data, run_id, WORKS, request=None, final=False),
        )

    objects = "SELECT count(*) FROM pg_largeobject_metadata"
    run_id = call_service(base_data, store)
    before = db.execute(objects).fetchone()[0]
    assert attempt(run_id) == "completed"
    assert attempt(run_id) == "skipped"
    assert db.execute(objects).fetchone()[0] == before + 2  # the GeoTIFF and the areas
    files = db.execute("SELECT summary->'files' FROM analysis_run WHERE id = %s", [run_id])
    assert set(files.fetchone()[0]) == {"kde.tif", "areas.geojson"}


EVALUATION = {
    "filters": {"sources": [SOURCE]},
    "train": {"from": "2021-01-01T00:00:00-06:00", "to": "2024-01-01T00:00:00-06:00"},
    "test": {"from": "2024-01-01T00:00:00-06:00", "to": "2025-01-01T00:00:00-06:00"},
    "units": {"type": "h3", "resolution": 8},
    "area_share": 0.05,
    "methods": ["gi_star", "kde", "counts"],
}


def _evaluate(client, key, body, **params):
    """POST, then poll the Location while the run goes on (202); the finished run."""
    response = client.post("/analyses/evaluate", json=body, params=params, headers=auth(key))
    assert response.status_code in (201, 202), response.text
    url, deadline = response.headers["location"], time.monotonic() + 300
    while (run := client.get(url, headers=auth(key))).status_code == 202:
        assert 0 <= run.json()["progress"] <= 1
        assert time.monotonic() < deadline, "the evaluation never finished"
        time.sleep(0.2)
    assert run.status_code == 200, run.text
    return response, run


def test_evaluation_scores_each_method(client, keys, incidents):
    analyst = keys["analyst"]
    _, response = _evaluate(client, analyst, EVALUATION)
    run = response.json()
    assert run["status"] == "completed"
    rows = {r["method"]: r for r in run["rows"]}
    assert list(rows) == EVALUATION["methods"]
    summary = run["summary"]
    assert summary["units"] > 25_000 and summary["incidents_test"] > 1000
    for method, row in rows.items():
        assert row["total_test"] == summary["counted_test"]
        assert row["total_area_km2"] == pytest.approx(summary["total_area_km2"])
        assert 0 < row["area_share"] <= 0.05 + 1e-9, method
        assert row["hit_rate"] == pytest.approx(row["hits_test"] / row["total_test"], rel=1e-12)
        # PAI = hit rate / area share (Chainey, Tompson and Uhlig 2008).
        assert row["pai"] == pytest.approx(row["hit_rate"] / row["area_share"], rel=1e-9)
        # RRI = (n2 / n1) / (N2 / N1) (Levine 2008).
        expected = (row["hits_test"] / row["hits_train"]) / (row["total_test"] / row["total_train"])
        assert row["rri"] == pytest.approx(expected, rel=1e-9)
        # Every method beats a random selection of the same area on these clustered data.
        assert row["pai"] > 2, (method, row)
    assert sorted(r["rank_pai"] for r in rows.values())[0] == 1
    # Counts and KDE fill the area budget (Gi* may select less: only significant cells).
    assert rows["counts"]["area_share"] > 0.049 and rows["kde"]["area_share"] > 0.049

    # The CSV variant of the same table.
    table = client.get(response.url, params={"format": "csv"}, headers=auth(analyst))
    assert table.status_code == 200 and table.headers["content-type"].startswith("text/csv")
    assert table.headers["content-disposition"].startswith("attachment")
    lines = list(csv.DictReader(io.StringIO(table.text)))
    assert [r["method"] for r in lines] == EVALUATION["methods"]
    assert float(lines[0]["pai"]) == pytest.approx(rows["gi_star"]["pai"])

    # Stored as a run: listed, with its parameters, and its selected units as a layer.
    listed = client.get("/analyses", params={"kind": "evaluation"}, headers=auth(analyst)).json()
    stored = next(r for r in listed["runs"] if r["id"] == run["id"])
    assert stored["parameters"]["train"] == {
        "from": "2021-01-01T00:00:00-06:00",
        "to": "2024-01-01T00:00:00-06:00",
    }
    assert stored["summary"]["table"] == run["rows"]
    layer = client.get(f"/analyses/{run['id']}", headers=auth(analyst))
    assert layer.status_code == 200
    methods = {m for f in layer.json()["features"] for m in f["properties"]["category"].split("+")}
    assert methods == set(EVALUATION["methods"])


def test_evaluation_on_a_grid_as_csv(client, keys, incidents):
    body = {**EVALUATION, "units": {"type": "grid", "cell_size_m": 2000}, "methods": ["counts"]}
    response, run = _evaluate(client, keys["analyst"], body, format="csv")
    if response.status_code == 201:  # finished within the request's wait: the CSV itself
        assert response.headers["content-type"].startswith("text/csv")
        lines = list(csv.DictReader(io.StringIO(response.text)))
        assert [r["method"] for r in lines] == ["counts"]
        assert float(lines[0]["pai"]) == pytest.approx(
            float(lines[0]["hit_rate"]) / float(lines[0]["area_share"])
        )
    assert [r["method"] for r in run.json()["rows"]] == ["counts"]


def test_evaluation_refusals(client, keys, incidents):
    analyst = auth(keys["analyst"])
    overlap = {**EVALUATION, "test": {"from": "2023-06-01T00:00:00Z", "to": "2024-01-01T00:00:00Z"}}
    response = client.post("/analyses/evaluate", json=overlap, headers=analyst)
    assert response.status_code == 422 and "overlap" in response.json()["detail"]
    backwards = {
        **EVALUATION,
        "test": {"from": "2025-01-01T00:00:00Z", "to": "2024-01-01T00:00:00Z"},
    }
    assert client.post("/analyses/evaluate", json=backwards, headers=analyst).status_code == 422
    unknown = {**EVALUATION, "methods": ["gi_star", "astrology"]}
    assert client.post("/analyses/evaluate", json=unknown, headers=analyst).status_code == 422
    empty = {**EVALUATION, "test": {"from": "2030-01-01T00:00:00Z", "to": "2031-01-01T00:00:00Z"}}
    response = client.post("/analyses/evaluate", json=empty, headers=analyst)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert (
        "no incidents" in response.json()["detail"] and "test period" in response.json()["detail"]
    )
    hotspot_run = client.get("/analyses", params={"kind": "hotspots"}, headers=analyst).json()
    for other in hotspot_run["runs"][:1]:
        assert (
            client.get(f"/analyses/evaluations/{other['id']}", headers=analyst).status_code == 404
        )
    assert client.get("/analyses/evaluations/999999", headers=analyst).status_code == 404
