"""Hot spot analyses through the API on the real PostGIS: Gi* and Local Moran on H3, grid
and admin units, stored runs served as GeoJSON and CSV, reproducibility, errors, jobs."""

from __future__ import annotations

import csv
import io
import time

import geopandas as gpd
import h3
import pytest
from fastapi.testclient import TestClient

from app.demo.incidents import generate_incidents
from app.main import create_app
from app.services.imports import import_frame
from app.services.incident_rows import ReadOptions
from tests.conftest import BELIZE, auth, call_service

SOURCE = "analysis-test"
BELIZE_CITY = (17.5046, -88.1962)  # lat, lon


@pytest.fixture(scope="module")
def incidents(base_data):
    """15,000 synthetic incidents (the demo generator) under their own source."""
    districts = gpd.read_file(BELIZE / "boundaries" / "belize_adm1_districts.geojson").rename(
        columns={"iso_3166_2": "code", "district": "name"}
    )
    frame = generate_incidents(districts, n=15_000, seed=3).assign(source=SOURCE)
    frame = frame.astype(object).where(frame.notna(), "").astype(str)
    report = call_service(
        base_data,
        lambda engine: import_frame(
            engine, base_data, frame, ReadOptions(), actor="tests", filename="analysis.csv",
            fmt="csv",
        ),
    )  # fmt: skip
    assert report.inserted == 15_000
    return report


def _post(client, key, body):
    body = {**body, "filters": {"sources": [SOURCE], **body.get("filters", {})}}
    return client.post("/analyses/hotspots", json=body, headers=auth(key))


def _features(client, key, response):
    """The run and its cells; a run still going after the request's wait (202) is polled."""
    assert response.status_code in (201, 202), response.text
    url, deadline = response.headers["location"], time.monotonic() + 300
    while (layer := client.get(url, headers=auth(key))).status_code == 202:
        assert time.monotonic() < deadline, "the analysis never finished"
        time.sleep(0.2)
    assert layer.status_code == 200, layer.text
    run = layer.json()["run"]
    assert run["status"] == "completed"
    assert layer.headers["content-type"].startswith("application/geo+json")
    return run, layer.json()["features"]


def test_gi_star_on_h3_finds_belize_city(client, keys, incidents):
    analyst = keys["analyst"]
    body = {
        "method": "gi_star",
        "units": {"type": "h3", "resolution": 7},
        "filters": {"occurred_from": "2021-01-01T00:00:00-06:00"},
    }
    run, features = _post_and_read(client, analyst, body)
    assert run["summary"]["units"] == len(features) > 1000
    assert run["summary"]["incidents"] > 10_000
    props = {f["id"]: f["properties"] for f in features}
    city = h3.latlng_to_cell(*BELIZE_CITY, 7)
    assert props[city]["bin"] == 3 and props[city]["z"] > 2.58
    # Every feature carries every property key.
    keys_sets = {frozenset(p) for p in props.values()}
    assert len(keys_sets) == 1
    # Zero-count cells take part (the grid covers the whole country).
    assert sum(1 for p in props.values() if p["count"] == 0) > len(props) / 2


def _post_and_read(client, key, body):
    return _features(client, key, _post(client, key, body))


def test_same_seed_same_result(client, keys, incidents):
    body = {
        "method": "gi_star",
        "units": {"type": "h3", "resolution": 6},
        "permutations": 99,
        "seed": 7,
        "filters": {"categories": ["homicide", "shooting"]},
    }
    run, first = _post_and_read(client, keys["analyst"], body)
    _, second = _post_and_read(client, keys["analyst"], body)
    assert [f["properties"]["p_sim"] for f in first] == [f["properties"]["p_sim"] for f in second]
    # Every cell has a pseudo p but the islands: with cover=center (the default) the cells
    # added for incidents on the cays, beyond the territory's coarse outline, may have no
    # neighbour among the grid's cells.
    missing = sum(f["properties"]["p_sim"] is None for f in first)
    assert missing == run["summary"]["weights"]["islands"] < 5
    assert sum(f["properties"]["p_sim"] is not None for f in first) > 500


def test_local_moran_on_a_grid_and_csv(client, keys, incidents):
    body = {
        "method": "local_moran",
        "units": {"type": "grid", "cell_size_m": 5000},
        "permutations": 99,
        "seed": 1,
    }
    response = _post(client, keys["analyst"], body)
    run, features = _features(client, keys["analyst"], response)
    moran = run["summary"]["global_moran"]
    assert moran["i"] > 0 and moran["z_rand"] > 1.96 and moran["p_rand"] < 0.05  # clustered
    assert isinstance(run["summary"]["seed"], int)
    labels = {f["properties"]["label"] for f in features}
    assert "HH" in labels and labels <= {"HH", "LL", "LH", "HL", "not significant", "island"}
    table = client.get(response.headers["location"] + "?format=csv", headers=auth(keys["analyst"]))
    assert table.status_code == 200 and table.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert len(rows) == run["summary"]["units"]
    assert {"cell_id", "longitude", "latitude", "count", "i", "label"} <= set(rows[0])


def test_global_moran_reports_both_z_as_esda_on_the_same_w_and_y(client, keys, incidents):
    import esda
    import libpysal
    import numpy as np

    body = {
        "method": "local_moran",
        "units": {"type": "h3", "resolution": 6},
        "permutations": 99,
        "seed": 5,
    }
    run, features = _post_and_read(client, keys["analyst"], body)
    moran = run["summary"]["global_moran"]
    assert set(moran) == {
        "i", "expected", "variance_norm", "variance_rand", "z_norm", "z_rand", "p_norm",
        "p_rand", "p_sim",
    }  # fmt: skip
    # The same W (H3 neighbours: cells sharing an edge, within the run's cells) and y (the
    # run's counts, in the run's cell order), built here from the layer alone.
    ids = [f["id"] for f in features]
    assert ids == sorted(ids)
    present = set(ids)
    neighbours = {c: sorted(set(h3.grid_ring(c, 1)) & present) for c in ids}
    w = libpysal.weights.W(neighbours, id_order=ids, silence_warnings=True)
    y = np.array([f["properties"]["count"] for f in features], dtype=float)
    state = np.random.get_state()
    try:
        np.random.seed(run["summary"]["seed"])
        direct = esda.Moran(y, w, transformation="r", permutations=99, two_tailed=True)
    finally:
        np.random.set_state(state)
    expected = {
        "i": direct.I, "expected": direct.EI, "variance_norm": direct.VI_norm,
        "variance_rand": direct.VI_rand, "z_norm": direct.z_norm, "z_rand": direct.z_rand,
        "p_norm": direct.p_norm, "p_rand": direct.p_rand, "p_sim": direct.p_sim,
    }  # fmt: skip
    assert moran == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert moran["z_norm"] != moran["z_rand"]


def test_too_few_units_is_a_clear_422(client, keys, incidents):
    response = _post(client, keys["analyst"], {"units": {"type": "admin", "level": 1}})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "at least 30 units" in response.json()["detail"]
    too_fine = _post(client, keys["analyst"], {"units": {"type": "grid", "cell_size_m": 100}})
    assert too_fine.status_code == 422 and "limit" in too_fine.json()["detail"]


def test_analyses_need_an_analyst(client, keys):
    body = {"units": {"type": "h3", "resolution": 6}}
    assert client.post("/analyses/hotspots", json=body).status_code == 401
    viewer = client.post("/analyses/hotspots", json=body, headers=auth(keys["viewer"]))
    assert viewer.status_code == 403
    assert client.get("/analyses", headers=auth(keys["viewer"])).status_code == 403


def test_long_runs_answer_202_and_can_be_polled(base_data, keys, incidents):
    settings = base_data.model_copy(
        update={"analysis": base_data.analysis.model_copy(update={"wait_s": 0})}
    )
    with TestClient(create_app(settings)) as client:
        response = _post(client, keys["analyst"], {"units": {"type": "h3", "resolution": 7}})
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "running"
        url = response.headers["location"]
        deadline = time.monotonic() + 120
        while (poll := client.get(url, headers=auth(keys["analyst"]))).status_code == 202:
            assert 0 <= poll.json()["progress"] <= 1
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert poll.status_code == 200 and poll.json()["features"]
        listed = client.get("/analyses?kind=hotspots", headers=auth(keys["analyst"])).json()
        assert listed["runs"][0]["id"] == response.json()["id"]
        assert listed["runs"][0]["parameters"]["units"] == {"type": "h3", "resolution": 7}


def test_admin_unit_counts_match_the_unit_assignment(base_data, incidents, db):
    from app.schemas.analyses import HotspotRequest
    from app.services.hotspots import load_cells

    request = HotspotRequest.model_validate(
        {"units": {"type": "admin", "level": 1}, "filters": {"sources": [SOURCE]}}
    )

    async def cells(engine):
        async with engine.connect() as conn:
            return await load_cells(conn, base_data, request)

    got, total = call_service(base_data, cells)
    expected = dict(
        db.execute(
            "SELECT u.code, count(i.id) FROM admin_unit u LEFT JOIN incident i "
            "ON u.id = ANY(i.unit_ids) AND i.source = %s AND i.deleted_at IS NULL "
            "WHERE u.level = 1 GROUP BY u.code",
            [SOURCE],
        ).fetchall()
    )
    assert dict(zip(got.ids, got.counts, strict=True)) == expected
    assert total == 15_000 == sum(expected.values())


def test_emerging_hot_spots_give_every_cell_a_category(client, keys, incidents):
    from spatial import PATTERNS

    body = {
        "units": {"type": "h3", "resolution": 7},
        "time_step": "quarter",
        "filters": {"sources": [SOURCE]},
    }
    response = client.post("/analyses/emerging-hotspots", json=body, headers=auth(keys["analyst"]))
    run, features = _features(client, keys["analyst"], response)
    assert run["kind"] == "emerging" and run["summary"]["steps"] == 20
    categories = {f["properties"]["category"] for f in features}
    assert all(f["properties"]["category"] for f in features)
    assert categories <= {p.name for p in PATTERNS}
    assert any("hot spot" in c for c in categories)
    # Belize City, where most incidents are, is a hot spot of some kind.
    city = h3.latlng_to_cell(*BELIZE_CITY, 7)
    props = {f["id"]: f["properties"] for f in features}
    assert "hot spot" in props[city]["category"], props[city]
    assert props[city]["stats"]["hot_steps"] >= 18


def test_emerging_needs_ten_time_steps(client, keys, incidents):
    body = {"time_step": "year", "filters": {"sources": [SOURCE]}}
    response = client.post("/analyses/emerging-hotspots", json=body, headers=auth(keys["analyst"]))
    assert response.status_code == 422
    assert "at least 10 time steps" in response.json()["detail"]


def test_optimized_hot_spots_choose_a_scale(client, keys, incidents):
    body = {"method": "optimized_gi_star", "units": {"type": "h3", "resolution": 7}}
    run, features = _features(client, keys["analyst"], _post(client, keys["analyst"], body))
    summary = run["summary"]
    assert summary["scale"]["reason"] in ("first peak", "maximum z")
    assert summary["scale"]["distance_m"] > 0
    assert summary["weights"]["kind"] == "distance_band"
    assert len(summary["incremental_autocorrelation"]) >= 2
    assert summary["locational_outliers"] >= 0
    city = h3.latlng_to_cell(*BELIZE_CITY, 7)
    assert next(f for f in features if f["id"] == city)["properties"]["bin"] == 3


def test_optimized_refuses_too_few_incidents(client, keys, incidents):
    body = {
        "method": "optimized_gi_star",
        "units": {"type": "h3", "resolution": 7},
        "filters": {"categories": ["homicide"], "occurred_from": "2025-12-01T00:00:00-06:00"},
    }
    response = _post(client, keys["analyst"], body)
    assert response.status_code == 422
    assert "30" in response.json()["detail"]


def test_cli_writes_geojson_and_geotiff(base_data, incidents, tmp_path):
    import json
    import os
    import subprocess
    import sys

    import rasterio

    env = {**os.environ, "OBSERVATORY_DATABASE_URL": base_data.libpq_url}
    base = [sys.executable, "-m", "app.cli", "hotspots", "--units", "h3", "--resolution", "6"]
    geojson = tmp_path / "hot.geojson"
    done = subprocess.run(
        [*base, "--category", "theft", "-o", str(geojson)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    layer = json.loads(geojson.read_text())
    assert layer["type"] == "FeatureCollection" and layer["features"]
    assert {"z", "p", "bin", "count"} <= set(layer["features"][0]["properties"])

    tif = tmp_path / "kde.tif"
    done = subprocess.run(
        [*base, "--category", "theft", "--bandwidth", "3000", "-o", str(tif)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    with rasterio.open(tif) as raster:
        assert raster.crs.to_epsg() == 32616
        assert raster.bounds.left < 385_000 < raster.bounds.right  # Belize City, UTM 16N

    emerging = tmp_path / "emerging.csv"
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "emerging", "--resolution", "6", "--step", "quarter",
         "-o", str(emerging)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "category" in emerging.read_text().splitlines()[0]

    bad = subprocess.run([*base, "--units", "hexagons", "-o", str(geojson)], env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 1 and "--units must be" in bad.stdout


# -- the grid cache (migration 0006): polygons stored once per grid, analysis_cell a view --

LAYER_COLUMNS = [
    "run_id",
    "cell_id",
    "geom",
    "count",
    "z",
    "p",
    "p_sim",
    "bin",
    "i",
    "quadrant",
    "label",
    "category",
    "stats",
]


def _run_grid(db, run_id):
    return db.execute(
        "SELECT DISTINCT grid_id FROM analysis_cell_value WHERE run_id = %s", [run_id]
    ).fetchall()


def test_runs_on_one_grid_share_its_polygons(client, keys, incidents, db):
    analyst = keys["analyst"]
    # cover=intersects: the grid is the area's alone, whatever the incidents (cover=center
    # adds the cells holding them, stored apart: tests/integration/test_cover.py).
    body = {"units": {"type": "h3", "resolution": 7}, "cover": "intersects"}
    first, features = _post_and_read(client, analyst, body)
    second, _ = _post_and_read(
        client, analyst, {**body, "filters": {"categories": ["homicide", "shooting"]}}
    )
    assert _run_grid(db, first["id"]) == _run_grid(db, second["id"])
    [(grid_id,)] = _run_grid(db, first["id"])
    key, kind, cells, owner = db.execute(
        "SELECT key, kind, cells, run_id FROM analysis_grid WHERE id = %s", [grid_id]
    ).fetchone()
    assert key.startswith("h3:7:intersects:") and kind == "h3" and owner is None
    stored = db.execute(
        "SELECT count(*) FROM analysis_grid_cell WHERE grid_id = %s", [grid_id]
    ).fetchone()[0]
    assert cells == stored == first["summary"]["units"] == len(features)
    # The layer's polygon of a cell is that H3 cell's boundary.
    feature = features[0]
    ring = feature["geometry"]["coordinates"][0]
    expected = [(round(lng, 7), round(lat, 7)) for lat, lng in h3.cell_to_boundary(feature["id"])]
    assert [tuple(p) for p in ring[:-1]] == expected


def test_analysis_cell_view_keeps_the_layer_contract(client, keys, incidents, db):
    run, _ = _post_and_read(client, keys["analyst"], {"units": {"type": "h3", "resolution": 7}})
    columns = [
        r[0]
        for r in db.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'analysis_cell' ORDER BY ordinal_position"
        )
    ]
    assert columns == LAYER_COLUMNS
    assert db.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_name = 'analysis_cell'"
    ).fetchone() == ("VIEW",)
    assert db.execute(
        "SELECT srid FROM geometry_columns WHERE f_table_name = 'analysis_cell'"
    ).fetchone() == (4326,)
    db.execute("ANALYZE analysis_grid_cell")
    db.execute("ANALYZE analysis_cell_value")
    lon, lat = BELIZE_CITY[1], BELIZE_CITY[0]
    plan = "\n".join(
        r[0]
        for r in db.execute(
            "EXPLAIN SELECT cell_id, z FROM analysis_cell WHERE run_id = %s "
            "AND geom && ST_MakeEnvelope(%s, %s, %s, %s, 4326)",
            [run["id"], lon - 0.05, lat - 0.05, lon + 0.05, lat + 0.05],
        )
    )
    assert "ix_analysis_grid_cell_geom" in plan, plan


def test_units_of_one_run_are_deleted_with_it(base_data, db):
    import numpy as np
    import pandas as pd
    import shapely

    from app.services.hotspots import store_cells

    run_id = db.execute(
        "INSERT INTO analysis_run (kind, method, parameters, created_by) "
        "VALUES ('test', 'gi_star', '{}', 'tests') RETURNING id"
    ).fetchone()[0]
    squares = np.array([shapely.box(x, 17.0, x + 0.1, 17.1) for x in (-89.0, -88.9)])
    table = pd.DataFrame({"cell_id": ["a", "b"], "count": [1.0, 2.0], "z": [0.5, -0.5]})
    call_service(base_data, lambda engine: store_cells(engine, run_id, table, squares))
    rows = db.execute(
        "SELECT cell_id, count, ST_AsText(geom) FROM analysis_cell WHERE run_id = %s "
        "ORDER BY cell_id",
        [run_id],
    ).fetchall()
    assert [r[:2] for r in rows] == [("a", 1.0), ("b", 2.0)]
    assert rows[0][2] == squares[0].wkt.replace(" (", "(").replace(", ", ",")
    assert db.execute(
        "SELECT key, kind FROM analysis_grid WHERE run_id = %s", [run_id]
    ).fetchone() == (f"run:{run_id}", "run")
    db.execute("DELETE FROM analysis_run WHERE id = %s", [run_id])
    for table_name in ("analysis_cell_value", "analysis_grid"):
        left = db.execute(f"SELECT count(*) FROM {table_name} WHERE run_id = %s", [run_id])
        assert left.fetchone()[0] == 0


def test_migration_0006_moves_existing_cells_into_grids_and_back(settings, db):
    import psycopg
    from alembic import command

    from app.core.migrate import alembic_config

    name = "migration_0006_test"
    db.execute(f"DROP DATABASE IF EXISTS {name}")
    db.execute(f"CREATE DATABASE {name}")
    base, _, _ = settings.sqlalchemy_url.rpartition("/")
    config = alembic_config(f"{base}/{name}")
    libpq_base, _, _ = settings.libpq_url.rpartition("/")
    command.upgrade(config, "0005")
    with psycopg.connect(f"{libpq_base}/{name}", autocommit=True) as conn:
        run_id = conn.execute(
            "INSERT INTO analysis_run (kind, method, parameters, created_by) "
            "VALUES ('hotspots', 'gi_star', '{}', 'tests') RETURNING id"
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO analysis_cell (run_id, cell_id, geom, count, z) VALUES "
            "(%s, 'a', ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))', 4326), 3, 1.5), "
            "(%s, 'b', ST_GeomFromText('POLYGON((1 0,2 0,2 1,1 0))', 4326), 0, -0.5)",
            [run_id, run_id],
        )
        command.upgrade(config, "0006")
        moved = conn.execute(
            "SELECT cell_id, ST_AsText(geom), count, z FROM analysis_cell ORDER BY cell_id"
        ).fetchall()
        assert moved == [
            ("a", "POLYGON((0 0,1 0,1 1,0 0))", 3.0, 1.5),
            ("b", "POLYGON((1 0,2 0,2 1,1 0))", 0.0, -0.5),
        ]
        assert conn.execute("SELECT key, run_id FROM analysis_grid").fetchall() == [
            (f"run:{run_id}", run_id)
        ]
        command.downgrade(config, "0005")
        back = conn.execute(
            "SELECT cell_id, ST_AsText(geom), count, z FROM analysis_cell ORDER BY cell_id"
        ).fetchall()
        assert back == moved
        assert conn.execute("SELECT to_regclass('analysis_grid')").fetchone() == (None,)
    db.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_geojson_from_stored_polygons_equals_json_agg_on_the_view(client, keys, incidents, db):
    import json

    from app.sql.analyses import CELL_PROPERTIES, select_cells_geojson
    from bench._common import literal_sql

    run, _ = _post_and_read(client, keys["analyst"], {"units": {"type": "h3", "resolution": 6}})
    built = db.execute(literal_sql(select_cells_geojson(run["id"]))).fetchone()[0]
    properties = ", ".join(f"'{p}', {p}" for p in CELL_PROPERTIES)
    reference = db.execute(
        "SELECT json_agg(json_build_object('type', 'Feature', 'id', cell_id, 'geometry', "
        f"ST_AsGeoJSON(geom, 7)::json, 'properties', json_build_object({properties})) "
        "ORDER BY cell_id)::text FROM analysis_cell WHERE run_id = %s",
        [run["id"]],
    ).fetchone()[0]
    assert json.loads(built) == json.loads(reference)
    assert db.execute(literal_sql(select_cells_geojson(-1))).fetchone()[0] == "[]"


# -- limits checked before a run is stored (issue 7, hardened inputs) -------------------------


@pytest.fixture(scope="module")
def hasty_client(base_data):
    """An app that never waits for its analyses: any request that reached a run would
    answer 202, so a 422 here was given before the run started."""
    hasty = base_data.model_copy(
        update={"analysis": base_data.analysis.model_copy(update={"wait_s": 0})}
    )
    with TestClient(create_app(hasty)) as client:
        yield client


def _runs(db) -> int:
    return db.execute("SELECT count(*) FROM analysis_run").fetchone()[0]


def _refused_up_front(response, db, runs_before):
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "location" not in response.headers
    assert _runs(db) == runs_before  # nothing stored, no failed run left behind
    return response.json()


def test_grid_beyond_max_cells_is_refused_before_the_run(hasty_client, keys, db):
    before = _runs(db)
    response = _post(hasty_client, keys["analyst"], {"units": {"type": "h3", "resolution": 10}})
    problem = _refused_up_front(response, db, before)
    assert problem["max_cells"] == 300_000
    # The estimate is the country's area over the mean H3 resolution 10 cell
    # (4,357,449.4 km² / 7^10, H3's published mean): about 1.5 million cells.
    area_km2 = db.execute(
        "SELECT ST_Area(ST_Union(geom)::geography) / 1e6 FROM admin_unit WHERE level = 0"
    ).fetchone()[0]
    assert problem["estimated_cells"] == pytest.approx(area_km2 / (4_357_449.4 / 7**10), rel=0.01)
    assert problem["detail"] == (
        f"H3 resolution 10 would make about {problem['estimated_cells']:,} cells over this "
        "area; the limit is 300,000 (OBSERVATORY_ANALYSIS__MAX_CELLS): use coarser cells or "
        "a smaller area"
    )


def test_square_grid_beyond_max_cells_is_refused_before_the_run(hasty_client, keys, db):
    before = _runs(db)
    body = {"method": "local_moran", "units": {"type": "grid", "cell_size_m": 150}}
    problem = _refused_up_front(_post(hasty_client, keys["analyst"], body), db, before)
    assert problem["detail"].startswith("150 m cells would make about ")
    assert problem["estimated_cells"] > problem["max_cells"] == 300_000


def test_emerging_grid_beyond_max_cells_is_refused_before_the_run(hasty_client, keys, db):
    before = _runs(db)
    # No incident matches either; the grid is checked first, before the run exists.
    body = {"units": {"type": "h3", "resolution": 10}, "filters": {"sources": ["nobody"]}}
    response = hasty_client.post(
        "/analyses/emerging-hotspots", json=body, headers=auth(keys["analyst"])
    )
    problem = _refused_up_front(response, db, before)
    assert "OBSERVATORY_ANALYSIS__MAX_CELLS" in problem["detail"]


def test_emerging_cube_beyond_max_bins_is_refused_before_the_run(hasty_client, keys, db):
    before = _runs(db)
    # H3 resolution 8 (~30,000 cells over Belize) by the weeks of 25 years: ~40 million bins.
    body = {
        "units": {"type": "h3", "resolution": 8},
        "time_step": "week",
        "filters": {"occurred_from": "2000-01-01T00:00:00Z", "occurred_to": "2025-01-01T00:00:00Z"},
    }
    response = hasty_client.post(
        "/analyses/emerging-hotspots", json=body, headers=auth(keys["analyst"])
    )
    problem = _refused_up_front(response, db, before)
    assert problem["max_bins"] == 20_000_000 < problem["estimated_bins"]
    assert "weeks would make a space-time cube" in problem["detail"]
    assert "OBSERVATORY_ANALYSIS__MAX_CUBE_BINS" in problem["detail"]
    # Monthly steps over the same years fit (~9 million bins): the run starts (it is
    # stored). It has no incidents, so it may already have failed when the answer is
    # written (wait_s is 0 here): a 422 naming its run, not a refusal up front.
    before = _runs(db)
    monthly = hasty_client.post(
        "/analyses/emerging-hotspots",
        json={**body, "time_step": "month", "filters": {**body["filters"], "sources": ["none"]}},
        headers=auth(keys["analyst"]),
    )
    assert _runs(db) == before + 1, monthly.text
    if monthly.status_code == 422:
        assert monthly.json()["run_id"] and "no incidents match" in monthly.json()["detail"]
    else:
        assert monthly.status_code in (201, 202), monthly.text


def test_evaluation_grid_beyond_max_cells_is_refused_before_the_run(hasty_client, keys, db):
    before = _runs(db)
    body = {
        "train": {"from": "2023-01-01T00:00:00-06:00", "to": "2024-01-01T00:00:00-06:00"},
        "test": {"from": "2024-01-01T00:00:00-06:00", "to": "2025-01-01T00:00:00-06:00"},
        "units": {"type": "h3", "resolution": 10},
        "methods": ["counts"],
    }
    response = hasty_client.post("/analyses/evaluate", json=body, headers=auth(keys["analyst"]))
    problem = _refused_up_front(response, db, before)
    assert problem["estimated_cells"] > problem["max_cells"] == 300_000


def test_unknown_study_area_is_refused_before_the_run(hasty_client, keys, db):
    before = _runs(db)
    body = {"units": {"type": "h3", "resolution": 6}, "area": "BZ-NOPE"}
    problem = _refused_up_front(_post(hasty_client, keys["analyst"], body), db, before)
    assert problem["detail"] == "unknown area 'BZ-NOPE'"


def test_weights_with_too_many_neighbour_pairs_are_refused_before_the_run(hasty_client, keys, db):
    before = _runs(db)
    # A 20 km band over H3 resolution 8 (~29,500 cells of 0.737 km²): each cell's disc
    # holds ~1,700 cells, about 50 million pairs.
    body = {
        "units": {"type": "h3", "resolution": 8},
        "weights": {"type": "distance_band", "distance_m": 20_000},
    }
    problem = _refused_up_front(_post(hasty_client, keys["analyst"], body), db, before)
    assert problem["max_pairs"] == 3_000_000  # 10 per cell of analysis.max_cells
    assert problem["estimated_pairs"] > 40_000_000
    assert problem["detail"].startswith("a 20000 m distance band would give about ")
    assert problem["detail"].endswith(
        "the limit is 3,000,000 (10 per cell of OBSERVATORY_ANALYSIS__MAX_CELLS): use a "
        "shorter distance, fewer neighbours or coarser cells"
    )
    # 20 nearest neighbours of ~206,000 resolution 9 cells: about 4.1 million pairs.
    body = {"units": {"type": "h3", "resolution": 9}, "weights": {"type": "knn", "k": 20}}
    problem = _refused_up_front(_post(hasty_client, keys["analyst"], body), db, before)
    assert problem["detail"].startswith("20 nearest neighbours would give about 4,")
    # The same for emerging hot spots.
    response = hasty_client.post(
        "/analyses/emerging-hotspots", json=body, headers=auth(keys["analyst"])
    )
    assert "nearest neighbours" in _refused_up_front(response, db, before)["detail"]


def test_neighbour_estimates_within_the_limit_pass():
    from app.schemas.analyses import WeightsSpec
    from app.services.hotspots import check_neighbours

    hexagon_8 = 4_357_449.4e6 / 7**8  # m², H3's mean cell area at resolution 8
    # The defaults (H3 or queen neighbours, knn with k = 8 at the largest grid) pass.
    check_neighbours(WeightsSpec(), 300_000, hexagon_8, 300_000)
    check_neighbours(WeightsSpec(type="knn"), 300_000, hexagon_8, 300_000)
    # A 1 km band over resolution 8: ~4 neighbours a cell.
    check_neighbours(
        WeightsSpec(type="distance_band", distance_m=1_000), 29_500, hexagon_8, 300_000
    )
    # A band wider than the area: every other cell, which small grids can afford.
    check_neighbours(WeightsSpec(type="distance_band", distance_m=1e6), 1_000, hexagon_8, 300_000)


def test_the_grid_check_serves_evaluation_requests_too(base_data):
    # Evaluation runs (app.routers.surfaces) have units and an area but no weights.
    from app.core.errors import InvalidParameter
    from app.schemas.surfaces import EvaluationRequest
    from app.services.hotspots import check_grid_size

    periods = {
        "train": {"from": "2022-01-01T00:00:00-06:00", "to": "2023-01-01T00:00:00-06:00"},
        "test": {"from": "2023-01-01T00:00:00-06:00", "to": "2024-01-01T00:00:00-06:00"},
    }
    fine = EvaluationRequest.model_validate({**periods, "units": {"type": "h3", "resolution": 7}})
    call_service(base_data, lambda engine: check_grid_size(engine, base_data, fine))
    too_fine = fine.model_copy(update={"units": fine.units.model_copy(update={"resolution": 10})})
    with pytest.raises(InvalidParameter, match="OBSERVATORY_ANALYSIS__MAX_CELLS"):
        call_service(base_data, lambda engine: check_grid_size(engine, base_data, too_fine))
