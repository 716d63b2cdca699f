"""Which cells make the study area (issue 16, point 3): ``cover=center`` (H3's
``polygon_to_cells`` plus the cells holding the area's incidents) against
``cover=intersects`` (every cell touching the area), on Belize's coast, with robberies
imported within ``territory.tolerance_m`` off the coarse outline near Belize City."""

from __future__ import annotations

import time

import h3
import numpy as np
import pandas as pd
import psycopg
import pytest
import shapely
from pyproj import Transformer

from tests.conftest import auth
from tests.integration.helpers import import_csv

SOURCE = "cover-test"
CITY = (-88.1962, 17.5046)  # lon, lat
UTM16N = "EPSG:32616"
N_ON, N_OFF = 500, 200
PERIOD = ("2021-01-01", "2025-12-31")


def _wkb(db, sql: str, *params) -> shapely.Geometry:
    return shapely.from_wkb(bytes(db.execute(sql, list(params)).fetchone()[0]))


def _to_utm(geom: shapely.Geometry) -> shapely.Geometry:
    t = Transformer.from_crs(4326, UTM16N, always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(t.transform(*xy.T)))


def _sample(region: shapely.Geometry, n: int, rng: np.random.Generator) -> np.ndarray:
    minx, miny, maxx, maxy = region.bounds
    x, y = rng.uniform(minx, maxx, 400 * n), rng.uniform(miny, maxy, 400 * n)
    keep = shapely.contains_xy(region, x, y)
    assert keep.sum() >= n
    return np.column_stack([x[keep][:n], y[keep][:n]])


@pytest.fixture(scope="module")
def coast(base_data, db_url, tmp_path_factory):
    """Robberies around Belize City: N_ON on land in the Belize District, N_OFF at sea
    300-1,800 m off the territory's outline (the import keeps them: tolerance 2 km)."""
    with psycopg.connect(db_url, autocommit=True) as db:
        return _import_coast(base_data, db, tmp_path_factory)


def _import_coast(base_data, db, tmp_path_factory) -> int:
    territory = _to_utm(
        _wkb(db, "SELECT ST_AsBinary(ST_Union(geom)) FROM admin_unit WHERE level = 0")
    )
    district = _to_utm(_wkb(db, "SELECT ST_AsBinary(geom) FROM admin_unit WHERE code = 'BZ-BZ'"))
    near_city = shapely.Point(
        *Transformer.from_crs(4326, UTM16N, always_xy=True).transform(*CITY)
    ).buffer(12_000)
    land = near_city.intersection(district).intersection(territory).buffer(-200)
    sea = near_city.intersection(territory.buffer(1_800)).difference(
        territory.union(district).buffer(300)
    )
    rng = np.random.default_rng(16)
    xy = np.concatenate([_sample(land, N_ON, rng), _sample(sea, N_OFF, rng)])
    lon, lat = Transformer.from_crs(UTM16N, 4326, always_xy=True).transform(xy[:, 0], xy[:, 1])
    n = N_ON + N_OFF
    days = pd.Timestamp(PERIOD[0]) + pd.to_timedelta(rng.integers(0, 5 * 365, n), "D")
    path = tmp_path_factory.mktemp("cover") / "coast.csv"
    pd.DataFrame(
        {
            "source": SOURCE,
            "source_id": [f"c{i}" for i in range(n)],
            "category": "robbery",
            "occurred_at": days.strftime("%Y-%m-%d 12:00"),
            "longitude": np.round(lon, 6),
            "latitude": np.round(lat, 6),
        }
    ).to_csv(path, index=False)
    report = import_csv(base_data, path)
    assert report.inserted == n, report
    # Every one of them is the Belize District's (at sea: the nearest unit within 2 km).
    assert db.execute(
        "SELECT count(*) FROM incident i JOIN admin_unit u ON u.id = ANY(i.unit_ids) "
        "WHERE i.source = %s AND u.code = 'BZ-BZ'",
        [SOURCE],
    ).fetchone() == (n,)
    return n


def _run(client, key, path, body):
    """POST a run and wait for it; the run and its features."""
    body = {**body, "filters": {"sources": [SOURCE], **body.get("filters", {})}}
    response = client.post(path, json=body, headers=auth(key))
    assert response.status_code in (201, 202), response.text
    url, deadline = response.headers["location"], time.monotonic() + 300
    while (layer := client.get(url, headers=auth(key))).status_code == 202:
        assert time.monotonic() < deadline, "the run never finished"
        time.sleep(0.2)
    assert layer.status_code == 200, layer.text
    if path == "/analyses/evaluate":
        return layer.json(), None
    return layer.json()["run"], layer.json()["features"]


def _incident_cells(db, resolution: int) -> set[str]:
    rows = db.execute(
        "SELECT ST_X(geom), ST_Y(geom) FROM incident WHERE source = %s", [SOURCE]
    ).fetchall()
    return {h3.latlng_to_cell(lat, lon, resolution) for lon, lat in rows}


def test_center_is_polygon_to_cells_plus_the_cells_holding_incidents(client, keys, coast, db):
    analyst = keys["analyst"]
    district = _wkb(db, "SELECT ST_AsBinary(geom) FROM admin_unit WHERE code = 'BZ-BZ'")
    shape = h3.geo_to_h3shape(district)
    expected = set(h3.polygon_to_cells(shape, 8))
    held = _incident_cells(db, 8)
    assert held - expected  # offshore robberies are in cells whose centre is at sea

    body = {"units": {"type": "h3", "resolution": 8}, "area": "BZ-BZ"}
    center, features = _run(client, analyst, "/analyses/hotspots", {**body, "cover": "center"})
    ids = {f["id"] for f in features}
    assert ids >= expected and ids == expected | held
    summary = center["summary"]
    assert center["parameters"]["cover"] == "center"
    assert summary["cover"] == "center" and summary["units"] == len(expected | held)
    assert summary["cells_added_for_incidents"] == len(held - expected)
    assert summary["counted"] == summary["incidents"] == coast  # none left out
    assert sum(f["properties"]["count"] for f in features) == coast

    touching, features = _run(
        client, analyst, "/analyses/hotspots", {**body, "cover": "intersects"}
    )
    overlap = set(h3.h3shape_to_cells_experimental(shape, 8, contain="overlap"))
    assert {f["id"] for f in features} == overlap
    summary = touching["summary"]
    assert summary["cover"] == "intersects" and summary["units"] == len(overlap)
    assert summary["cells_added_for_incidents"] == 0
    # The two rules give two cell counts for the same Gi* request ...
    assert len(overlap) != len(expected | held)
    # ... and the touching cells miss the robberies farther out at sea.
    assert summary["incidents"] == coast > summary["counted"]
    assert summary["counted"] == sum(f["properties"]["count"] for f in features)

    default, _ = _run(client, analyst, "/analyses/hotspots", body)
    assert default["parameters"]["cover"] == "center"
    assert default["summary"]["units"] == len(expected | held)


def test_center_runs_share_the_area_grid_and_store_the_added_cells_apart(client, keys, coast, db):
    analyst = keys["analyst"]
    body = {"units": {"type": "h3", "resolution": 8}, "area": "BZ-BZ", "cover": "center"}
    run, features = _run(client, analyst, "/analyses/hotspots", body)
    grids = db.execute(
        "SELECT g.key, g.cells, count(*) FROM analysis_cell_value v "
        "JOIN analysis_grid g ON g.id = v.grid_id WHERE v.run_id = %s "
        "GROUP BY g.key, g.cells ORDER BY g.key",
        [run["id"]],
    ).fetchall()
    (base_key, base_cells, base_rows), (added_key, added_cells, added_rows) = grids
    assert base_key.startswith("h3:8:center:") and added_key.startswith(base_key + "+")
    added = run["summary"]["cells_added_for_incidents"]
    assert (added_cells, added_rows) == (added, added) and base_cells == base_rows
    assert base_rows + added_rows == len(features) == run["summary"]["units"]
    # The layer's polygon of an added cell is that H3 cell's boundary.
    outside = db.execute(
        "SELECT cell_id, ST_AsText(c.geom) FROM analysis_cell c JOIN analysis_grid_cell g "
        "USING (cell_id) WHERE c.run_id = %s AND g.grid_id = "
        "(SELECT id FROM analysis_grid WHERE key = %s) LIMIT 1",
        [run["id"], added_key],
    ).fetchone()
    boundary = shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(outside[0])])
    assert shapely.from_wkt(outside[1]).equals_exact(boundary, 1e-9)
    # A second run over the same incidents reuses both grids.
    again, _ = _run(client, analyst, "/analyses/hotspots", {**body, "method": "local_moran"})
    assert (
        db.execute(
            "SELECT DISTINCT grid_id FROM analysis_cell_value WHERE run_id = %s ORDER BY 1",
            [again["id"]],
        ).fetchall()
        == db.execute(
            "SELECT DISTINCT grid_id FROM analysis_cell_value WHERE run_id = %s ORDER BY 1",
            [run["id"]],
        ).fetchall()
    )


def test_square_grids_follow_the_same_rules(client, keys, coast):
    analyst = keys["analyst"]
    body = {"units": {"type": "grid", "cell_size_m": 1000}, "area": "BZ-BZ"}
    center, features = _run(client, analyst, "/analyses/hotspots", {**body, "cover": "center"})
    assert center["summary"]["counted"] == center["summary"]["incidents"] == coast
    assert center["summary"]["cells_added_for_incidents"] > 0
    assert sum(f["properties"]["count"] for f in features) == coast
    touching, _ = _run(client, analyst, "/analyses/hotspots", {**body, "cover": "intersects"})
    assert touching["summary"]["counted"] < coast
    assert touching["summary"]["units"] != center["summary"]["units"]


def test_emerging_summary_counts_what_it_analyses(client, keys, coast):
    analyst = keys["analyst"]
    body = {"units": {"type": "h3", "resolution": 8}, "time_step": "quarter"}
    center, features = _run(client, analyst, "/analyses/emerging-hotspots", body)
    summary = center["summary"]
    assert summary["cover"] == "center" and summary["steps"] == 20
    assert summary["counted"] == summary["incidents"] == coast
    assert sum(f["properties"]["count"] for f in features) == coast
    touching, features = _run(
        client, analyst, "/analyses/emerging-hotspots", {**body, "cover": "intersects"}
    )
    summary = touching["summary"]
    assert summary["incidents"] == coast > summary["counted"]
    assert sum(f["properties"]["count"] for f in features) == summary["counted"]


def test_evaluation_counts_every_incident_with_center(client, keys, coast):
    analyst = keys["analyst"]
    body = {
        "train": {"from": "2021-01-01T00:00:00-06:00", "to": "2024-01-01T00:00:00-06:00"},
        "test": {"from": "2024-01-01T00:00:00-06:00", "to": "2026-01-01T00:00:00-06:00"},
        "units": {"type": "h3", "resolution": 8},
        "area": "BZ-BZ",
        "methods": ["counts"],
    }
    run, _ = _run(client, analyst, "/analyses/evaluate", body)
    summary = run["summary"]
    assert summary["cover"] == "center" and summary["cells_added_for_incidents"] > 0
    assert summary["counted_train"] == summary["incidents_train"]
    assert summary["counted_test"] == summary["incidents_test"]
    assert summary["incidents_train"] + summary["incidents_test"] == coast
    touching, _ = _run(client, analyst, "/analyses/evaluate", {**body, "cover": "intersects"})
    summary = touching["summary"]
    assert summary["counted_train"] + summary["counted_test"] < coast
    assert summary["cells_added_for_incidents"] == 0


def test_cover_is_for_cells_only(client, keys):
    body = {"units": {"type": "admin", "level": 1}, "cover": "center"}
    response = client.post("/analyses/hotspots", json=body, headers=auth(keys["analyst"]))
    assert response.status_code == 422
    assert "cover applies to H3 and grid units" in response.text
    bad = {"units": {"type": "h3", "resolution": 6}, "cover": "touches"}
    response = client.post("/analyses/hotspots", json=bad, headers=auth(keys["analyst"]))
    assert response.status_code == 422 and "center" in response.text
