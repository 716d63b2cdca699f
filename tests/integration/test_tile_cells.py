"""Low-zoom incident tiles from the precomputed cells (migration 0019, issue 22): the same
clusters as counted live from the points (features, counts, positions) at every
clustered zoom and for the filters the cells answer; the cells stay equal to a fresh
count after POST, PATCH, DELETE, restore and an import; any other filter is counted
live; ``X-Tile-Source`` says which. Real PostGIS, tiles decoded with mapbox-vector-tile."""

from __future__ import annotations

import math
from collections import Counter

import mapbox_vector_tile
import numpy as np
import pytest
from sqlalchemy.dialects.postgresql import psycopg as pg
from starlette.datastructures import QueryParams

from app.access import visible_fields
from app.core.db import driver_statement
from app.ogc.layers import incidents_layer
from app.security import Principal
from app.services.tiles import tile_query
from tests.conftest import auth
from tests.integration.helpers import import_csv

SOURCE = "tile-cells-test"
# Belize City, and a spread of ~0.5 degree around it: many z10 and z11 tiles, cells on
# the tiles' edges and in their buffers.
CENTRE = (-88.1873, 17.5079)
CATEGORIES = ("homicide", "theft", "robbery", "burglary")
ANALYST = Principal(role="analyst")
LAYER = incidents_layer()

# Filters the cells answer (months at local midnights of first days, in Belize time
# -06:00, or the same instants in UTC).
CELL_QUERIES = [
    {},
    {"category": "homicide"},
    {"category": "theft,robbery"},
    {"occurred_from": "2024-02-01", "occurred_to": "2024-04-01"},
    {"datetime": "2024-03-01T06:00:00Z/.."},
    {"category": "theft", "occurred_from": "2023-12-01"},
    {"occurred_to": "2024-03-01"},
]
# Filters counted live.
LIVE_QUERIES = [
    {"source": SOURCE},
    {"victim_sex": "female"},
    {"occurred_from": "2024-02-15"},
    {"occurred_from": "2024-02-01T00:00:00Z"},  # 18:00 local on 31 January
    {"datetime": "2024-01-01/2024-03-01"},  # a closed end counts its instant
    {"filter": "victim_age >= 30"},
    {"bbox": "-89,17,-88,18"},
    {"category": "homicide", "unit": "BZ-BZ"},
]


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    x = (lon + 180) / 360 * n
    y = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n
    return z, int(x), int(y)


@pytest.fixture(scope="module")
def spread(base_data, tmp_path_factory):
    """600 incidents around Belize City over six months, four categories, some at the
    very first and last instants of a month (local time); half of the homicides are
    female victims."""
    rng = np.random.default_rng(22)
    n = 600
    lon = CENTRE[0] + rng.normal(0, 0.15, n)
    lat = CENTRE[1] + rng.normal(0, 0.15, n)
    rows = ["source,source_id,category,occurred_at,longitude,latitude,victim_sex,victim_age"]
    for i in range(n):
        month = 1 + i % 6
        when = f"2024-{month:02d}-{1 + i % 27:02d} {i % 24:02d}:{i % 60:02d}"
        if i % 50 in (0, 1):  # on land, near the centre
            lon[i], lat[i] = CENTRE[0] - 0.01 * (i % 7), CENTRE[1] + 0.002 * (i % 5)
        if i % 50 == 0:
            when = f"2024-{month:02d}-01 00:00:00"  # the month's first local instant
        if i % 50 == 1:
            when = f"2024-{month:02d}-01T05:59:59Z"  # still the previous local month
        rows.append(
            f"{SOURCE},c{i},{CATEGORIES[i % 4]},{when},{lon[i]:.6f},{lat[i]:.6f},"
            f"{'female' if i % 8 == 0 else 'male'},{18 + i % 50}"
        )
    # January 2024 began on 2023-12-31 in UTC's eyes for an incident at 22:00 local.
    rows.append(f"{SOURCE},c-dec,theft,2023-12-31T23:30:00-06:00,{CENTRE[0]},{CENTRE[1]},male,40")
    path = tmp_path_factory.mktemp("tile-cells") / "spread.csv"
    path.write_text("\n".join(rows) + "\n")
    report = import_csv(base_data, path)
    # Points at sea or beyond the border are rejected (the import's rule): the others
    # are the test's.
    assert report.inserted > n // 2 and report.inserted + report.rejected == n + 1
    return stored_points(base_data)


def stored_points(settings) -> tuple[np.ndarray, np.ndarray]:
    """The test's incidents as stored, longitudes and latitudes."""
    import psycopg

    with psycopg.connect(settings.libpq_url) as conn:
        rows = conn.execute(
            "SELECT ST_X(geom), ST_Y(geom) FROM incident WHERE source = %s ORDER BY id",
            [SOURCE],
        ).fetchall()
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows])


def features(content: bytes) -> Counter:
    """The tile's clusters as a multiset of (x, y, count): the order of features is the
    GROUP BY's, not part of the tile's meaning."""
    if not content:
        return Counter()
    layer = mapbox_vector_tile.decode(content).get("incidents", {"features": []})
    return Counter(
        (*f["geometry"]["coordinates"], f["properties"]["count"]) for f in layer["features"]
    )


def sql_tile(db, settings, query: dict, zxy, *, cells: bool) -> tuple[bytes, str | None]:
    """The tile as the service builds it, run here: from the cells or counted live."""
    visible = visible_fields(LAYER, ANALYST)
    select, source = tile_query(
        LAYER, ANALYST, visible, QueryParams(query), settings, clustered=True, cells=cells
    )
    z, x, y = zxy
    statement = driver_statement(select, pg.dialect(), z=z, x=x, y=y)
    row = db.execute(statement.sql, {**statement.params, "z": z, "x": x, "y": y}).fetchone()
    return bytes(row[0]), source


def tiles_around(lon, lat, zooms) -> list[tuple[int, int, int]]:
    """Every tile holding a point, at each zoom, and at the lowest one its neighbours."""
    out = set()
    for z in zooms:
        out |= {tile_of(a, b, z) for a, b in zip(lon, lat, strict=True)}
    return sorted(out)


def recount_differences(db) -> list:
    """Keys where the cell tables (their rows summed per key) differ from a fresh count
    of the live incidents."""
    check = """
        WITH fresh AS (
            SELECT floor((ST_X(geom) + 180) / 360 * 131072)::int AS cx,
                   floor((1 - ln(tan(pi() / 4 + radians(ST_Y(geom)) / 2)) / pi()) / 2
                         * 131072)::int AS cy,
                   category,
                   date_trunc('month', occurred_at AT TIME ZONE
                              (SELECT timezone FROM incident_tile_zone))::date AS month,
                   ST_X(geom) AS lon, ST_Y(geom) AS lat
            FROM incident WHERE deleted_at IS NULL
        ),
        expected AS (
            SELECT z, cx >> (11 - z) AS cx, cy >> (11 - z) AS cy, category,
                   {month} count(*)::int AS n, sum(lon) AS sum_lon, sum(lat) AS sum_lat
            FROM fresh CROSS JOIN {zooms} AS z
            GROUP BY 1, 2, 3, 4 {group}
        ),
        summed AS (  -- a key's rows are signed deltas until compacted
            SELECT z, cx, cy, category, {month} sum(n)::int AS n, sum(sum_lon) AS sum_lon,
                   sum(sum_lat) AS sum_lat
            FROM {table}
            GROUP BY 1, 2, 3, 4 {group}
            HAVING sum(n) <> 0
        )
        SELECT '{table}', coalesce(e.z, t.z), coalesce(e.cx, t.cx), coalesce(e.cy, t.cy),
               coalesce(e.category, t.category), e.n, t.n
        FROM expected e FULL JOIN summed t
          ON (e.z, e.cx, e.cy, e.category{on}) = (t.z, t.cx, t.cy, t.category{on_t})
        WHERE e.n IS DISTINCT FROM t.n
           OR abs(e.sum_lon - t.sum_lon) > 1e-9 * e.n OR abs(e.sum_lat - t.sum_lat) > 1e-9 * e.n
    """
    cells = check.format(
        table="incident_tile_cell", month="", group="", on="", on_t="",
        zooms="generate_series(0, 11)",
    )  # fmt: skip
    months = check.format(
        table="incident_tile_month", month="month,", group=", month", on=", e.month",
        on_t=", t.month", zooms="unnest(ARRAY[2, 5, 8, 11])",
    )  # fmt: skip
    return db.execute(cells).fetchall() + db.execute(months).fetchall()


def zero_keys(db) -> int:
    """Keys of incident_tile_cell whose rows add up to no incident."""
    (n,) = db.execute(
        "SELECT count(*) FROM (SELECT FROM incident_tile_cell GROUP BY z, cx, cy, category "
        "HAVING sum(n) = 0) AS k"
    ).fetchone()
    return n


def row_counts(db) -> tuple[int, int, int, int]:
    """Rows and keys of incident_tile_cell, rows and keys of incident_tile_month."""
    return db.execute(
        "SELECT (SELECT count(*) FROM incident_tile_cell), "
        "(SELECT count(*) FROM (SELECT DISTINCT z, cx, cy, category FROM incident_tile_cell) c), "
        "(SELECT count(*) FROM incident_tile_month), "
        "(SELECT count(*) FROM (SELECT DISTINCT z, cx, cy, category, month "
        "FROM incident_tile_month) m)"
    ).fetchone()


def test_the_cells_hold_a_fresh_count(db, spread):
    assert recount_differences(db) == []
    # Every live incident is in one cell a zoom.
    total = db.execute("SELECT count(*) FROM incident WHERE deleted_at IS NULL").fetchone()[0]
    per_zoom = db.execute("SELECT z, sum(n) FROM incident_tile_cell GROUP BY z").fetchall()
    assert dict(per_zoom) == {z: total for z in range(12)}


@pytest.mark.parametrize("query", CELL_QUERIES, ids=lambda q: "&".join(map("=".join, q.items())))
def test_tiles_from_the_cells_equal_the_live_count(db, base_data, spread, query):
    lon, lat = spread
    compared = buffered = 0
    for zxy in tiles_around(lon, lat, (3, 6, 8, 9, 10, 11)):
        cells, source = sql_tile(db, base_data, query, zxy, cells=True)
        assert source == "aggregate"
        live, source = sql_tile(db, base_data, query, zxy, cells=False)
        assert source == "live"
        got, expected = features(cells), features(live)
        assert got == expected, (zxy, query)
        compared += sum(expected.values())
        buffered += sum(not (0 <= x < 4096 and 0 <= y < 4096) for x, y, _ in expected)
    assert compared > 0
    assert buffered > 0  # clusters in tiles' buffers were compared too


def test_a_period_counts_its_months_in_local_time(db, base_data, spread):
    """March in Belize time: from its local midnight (06:00 UTC on 1 March) to 05:59:59
    UTC on 1 April (23:59:59 local on 31 March): the tile over all of them counts so."""
    zxy = tile_of(*CENTRE, 3)
    march = {"occurred_from": "2024-03-01", "occurred_to": "2024-04-01"}
    cells, _ = sql_tile(db, base_data, march, zxy, cells=True)
    (expected,) = db.execute(
        "SELECT count(*) FROM incident WHERE deleted_at IS NULL AND occurred_at >= "
        "'2024-03-01T00:00:00-06:00' AND occurred_at < '2024-04-01T00:00:00-06:00'"
    ).fetchone()
    assert sum(c * k for (_, _, c), k in features(cells).items()) == expected
    edges = db.execute(
        "SELECT occurred_at AT TIME ZONE 'UTC', count(*) FROM incident WHERE source = %s "
        "AND occurred_at IN ('2024-03-01T06:00:00Z', '2024-04-01T05:59:59Z') GROUP BY 1",
        [SOURCE],
    ).fetchall()
    assert len(edges) == 2  # both edge cases are in the data


def test_the_http_tiles_say_where_they_come_from(client, keys, db, base_data, spread):
    analyst = keys["analyst"]
    z, x, y = tile_of(*CENTRE, 10)
    url = f"/tiles/incidents/{z}/{x}/{y}.mvt"
    for query in CELL_QUERIES:
        response = client.get(url, params=query, headers=auth(analyst))
        assert response.status_code == 200, response.text
        assert response.headers["x-tile-source"] == "aggregate", query
        live, _ = sql_tile(db, base_data, query, (z, x, y), cells=False)
        assert features(response.content) == features(live), query
        again = client.get(url, params=query, headers=auth(analyst))
        assert again.headers["x-cache"] == "hit"
        assert again.headers["x-tile-source"] == "aggregate"
    for query in LIVE_QUERIES:
        response = client.get(url, params=query, headers=auth(analyst))
        assert response.status_code == 200, (query, response.text)
        assert response.headers["x-tile-source"] == "live", query
    ogc = client.get(
        f"/collections/incidents/tiles/WebMercatorQuad/{z}/{y}/{x}",
        params={"category": "homicide"},
        headers=auth(analyst),
    )
    assert ogc.headers["x-tile-source"] == "aggregate"
    # Points above the clustered zooms: no clusters, no header.
    points = client.get("/tiles/incidents/14/4178/7382.mvt", headers=auth(analyst))
    assert points.status_code == 200 and "x-tile-source" not in points.headers
    # A malformed filter is still a 400, never a tile.
    bad = client.get(url, params={"occurred_from": "March"}, headers=auth(analyst))
    assert bad.status_code == 400


def test_the_public_and_viewers_get_no_incident_tile(client, keys, spread):
    z, x, y = tile_of(*CENTRE, 8)
    for key, status in ((None, 401), (keys["viewer"], 403)):
        for query in ({}, {"category": "homicide"}, {"occurred_from": "2024-01-01"}):
            response = client.get(f"/tiles/incidents/{z}/{x}/{y}.mvt", params=query,
                                  headers=auth(key))  # fmt: skip
            assert response.status_code == status, (key, query)
            assert "x-tile-source" not in response.headers


def _compare_around(db, settings, points, queries=({}, {"category": "robbery"})) -> int:
    compared = 0
    for zxy in tiles_around(*zip(*points, strict=True), (4, 9, 10, 11)):
        for query in (*queries, {"occurred_from": "2024-01-01", "occurred_to": "2024-07-01"}):
            cells, _ = sql_tile(db, settings, query, zxy, cells=True)
            live, _ = sql_tile(db, settings, query, zxy, cells=False)
            assert features(cells) == features(live), (zxy, query)
            compared += sum(features(live).values())
    return compared


def test_writes_keep_the_cells_equal_to_a_fresh_count(client, keys, db, base_data, spread):
    editor = auth(keys["editor"])
    here, there = (-88.30, 17.40), (-88.05, 17.62)
    created = client.post(
        "/incidents",
        json={
            "source": SOURCE, "source_id": "w1", "category": "robbery",
            "occurred_at": "2024-03-31T23:59:00-06:00",
            "geometry": {"type": "Point", "coordinates": list(here)},
        },
        headers=editor,
    )  # fmt: skip
    assert created.status_code == 201, created.text
    incident = created.json()["id"]
    assert recount_differences(db) == []
    assert _compare_around(db, base_data, [here, there]) > 0

    # Moved, another category, another month: out of its old cells, into new ones.
    moved = client.patch(
        f"/incidents/{incident}",
        json={"geometry": {"type": "Point", "coordinates": list(there)}, "category": "theft",
              "occurred_at": "2024-04-01T00:00:00-06:00"},
        headers=editor,
    )  # fmt: skip
    assert moved.status_code == 200, moved.text
    assert recount_differences(db) == []
    _compare_around(db, base_data, [here, there], queries=({}, {"category": "theft"}))

    deleted = client.delete(f"/incidents/{incident}", headers=editor)
    assert deleted.status_code == 204
    assert recount_differences(db) == []
    # The delete appended negative rows: its cells now add up to zero until compacted.
    assert zero_keys(db) > 0
    db.execute("SELECT incident_tiles_compact()")
    assert zero_keys(db) == 0  # a cell emptied by the delete is gone, not kept at zero
    assert recount_differences(db) == []
    restored = client.post(f"/incidents/{incident}/restore", headers=editor)
    assert restored.status_code == 200, restored.text
    assert recount_differences(db) == []
    _compare_around(db, base_data, [here, there])


def test_an_import_keeps_the_cells_equal_to_a_fresh_count(db, base_data, spread, tmp_path):
    lon, lat = spread
    # 50 new rows, and 20 of the spread's again with another category, a little further
    # inland: the import's upsert rewrites every row it matches, and only these changed.
    moved = db.execute(
        "SELECT source_id, ST_X(geom) - 0.003, ST_Y(geom) FROM incident WHERE source = %s "
        "AND source_id LIKE 'c%%' ORDER BY id LIMIT 20",
        [SOURCE],
    ).fetchall()
    rows = ["source,source_id,category,occurred_at,longitude,latitude,victim_sex,victim_age"]
    for i in range(50):
        rows.append(f"{SOURCE},i{i},burglary,2024-05-{1 + i % 28:02d} 12:00,"
                    f"{lon[i] - 0.01:.6f},{lat[i]:.6f},male,30")  # fmt: skip
    for source_id, x, y in moved:
        rows.append(f"{SOURCE},{source_id},homicide,2024-06-15 08:00,{x:.6f},{y:.6f},female,25")
    path = tmp_path / "more.csv"
    path.write_text("\n".join(rows) + "\n")
    report = import_csv(base_data, path)
    assert report.inserted > 25 and report.updated > 15
    assert recount_differences(db) == []
    points = [(x, y) for _, x, y in moved]
    assert _compare_around(db, base_data, points, queries=({}, {"category": "homicide"})) > 0


def test_months_of_another_zone_are_counted_live(client, keys, db, base_data, spread):
    """A service whose territory's zone is not the one the months were counted in serves
    period tiles live (all-time tiles do not depend on it), equal all the same."""
    z, x, y = tile_of(*CENTRE, 9)
    url = f"/tiles/incidents/{z}/{x}/{y}.mvt"
    query = {"occurred_from": "2024-05-01", "category": "theft,homicide"}
    (zone,) = db.execute("SELECT timezone FROM incident_tile_zone").fetchone()
    db.execute("UPDATE incident_tile_zone SET timezone = 'Asia/Tokyo'")
    try:
        response = client.get(url, params=query, headers=auth(keys["admin"]))
        assert response.headers["x-tile-source"] == "live"
        live, _ = sql_tile(db, base_data, query, (z, x, y), cells=False)
        assert features(response.content) == features(live)
        whole = client.get(url, params={"category": "robbery"}, headers=auth(keys["admin"]))
        assert whole.headers["x-tile-source"] == "aggregate"
    finally:
        db.execute("UPDATE incident_tile_zone SET timezone = %s", [zone])
    # Refilled in a zone, the months are that zone's.
    db.execute("SELECT incident_tiles_refill(%s)", [zone])
    assert recount_differences(db) == []


def test_compaction_leaves_the_tiles_unchanged_and_folds_the_rows(db, base_data, spread):
    """Writes append signed rows (several a key, counts that add up to zero);
    ``incident_tiles_compact`` folds them into one row a key and drops the empty keys,
    and every tile stays the same."""
    lon, lat = spread
    ids = [r[0] for r in db.execute(
        "SELECT id FROM incident WHERE source = %s AND deleted_at IS NULL ORDER BY id LIMIT 40",
        [SOURCE],
    ).fetchall()]  # fmt: skip
    # Another category and month, then back: deltas that add up to nothing; and a few
    # incidents deleted and restored, then deleted for good (emptied cells).
    swap = (
        "UPDATE incident SET category = CASE category WHEN 'theft' THEN 'robbery' "
        "WHEN 'robbery' THEN 'theft' ELSE category END, "
        "occurred_at = occurred_at + %s * interval '40 days' WHERE id = ANY(%s)"
    )
    db.execute(swap, [1, ids[:30]])
    db.execute(swap, [-1, ids[:30]])
    db.execute("UPDATE incident SET deleted_at = now() WHERE id = ANY(%s)", [ids[30:]])
    db.execute("UPDATE incident SET deleted_at = NULL WHERE id = ANY(%s)", [ids[30:35]])
    assert recount_differences(db) == []
    tiles = tiles_around(lon, lat, (3, 8, 10, 11))
    queries = ({}, {"category": "homicide"}, {"occurred_from": "2024-02-01"})
    before = {
        (zxy, i): sql_tile(db, base_data, q, zxy, cells=True)[0]
        for zxy in tiles
        for i, q in enumerate(queries)
    }
    cell_rows, cell_keys, month_rows, month_keys = row_counts(db)
    assert cell_rows > cell_keys and month_rows > month_keys  # deltas to fold
    assert zero_keys(db) > 0

    (removed,) = db.execute("SELECT incident_tiles_compact()").fetchone()

    after_counts = row_counts(db)
    assert removed == cell_rows + month_rows - after_counts[0] - after_counts[2] > 0
    # One row a key, no empty key.
    assert after_counts[0] == after_counts[1] and after_counts[2] == after_counts[3]
    assert after_counts[1] < cell_keys and zero_keys(db) == 0
    assert recount_differences(db) == []
    for (zxy, i), content in before.items():
        again, _ = sql_tile(db, base_data, queries[i], zxy, cells=True)
        assert features(again) == features(content), (zxy, queries[i])
        live, _ = sql_tile(db, base_data, queries[i], zxy, cells=False)
        assert features(again) == features(live), (zxy, queries[i])
    # Nothing left to fold: a second compaction removes nothing.
    assert db.execute("SELECT incident_tiles_compact()").fetchone() == (0,)
    db.execute("UPDATE incident SET deleted_at = NULL WHERE id = ANY(%s)", [ids[35:]])
    assert recount_differences(db) == []


def test_a_write_never_waits_for_another_transactions_cells(db, base_data, spread):
    """The deadlock the upserted cells had: an import (one long transaction) wrote cell
    C, then a PATCH locked incident X (in C) and its trigger waited for C, while the
    import went on to X: each waited for the other. Appended cells take no lock: with a
    transaction open that wrote C, an update of another incident in C goes through at
    once, and the first transaction can then update that incident too."""
    import psycopg

    x, category = db.execute(
        "SELECT id, category FROM incident WHERE source = %s AND deleted_at IS NULL "
        "ORDER BY id LIMIT 1",
        [SOURCE],
    ).fetchone()
    other = "theft" if category != "theft" else "robbery"
    with (
        psycopg.connect(base_data.libpq_url) as importer,
        psycopg.connect(base_data.libpq_url, autocommit=True) as patcher,
    ):
        # The "import": a new incident at X's point, X's category and time (X's cells
        # at every zoom), its transaction left open.
        importer.execute(
            "INSERT INTO incident (source, source_id, category, occurred_at, geom) "
            "SELECT source, 'lock-test', category, occurred_at, geom FROM incident "
            "WHERE id = %s",
            [x],
        )
        # The "PATCH", with a lock timeout (a wait fails it rather than hanging the test).
        patcher.execute("SET lock_timeout = '2s'")
        with patcher.transaction():
            patcher.execute("UPDATE incident SET category = %s WHERE id = %s", [other, x])
        # The importer reaches X after the patch committed: no deadlock either way.
        importer.execute("SET lock_timeout = '2s'")
        importer.execute("UPDATE incident SET category = %s WHERE id = %s", [category, x])
        importer.commit()
    assert recount_differences(db) == []
    db.execute("DELETE FROM incident WHERE source = %s AND source_id = 'lock-test'", [SOURCE])
    assert recount_differences(db) == []
