"""A write of incidents drops only the tiles it touches (issue 22): the incident tiles that
hold a written point (old and new position), at every zoom; the districts' tiles and a
hot spot run's stay cached, as do the incident tiles elsewhere, in this worker and in
another one (NOTIFY). ``X-Cache`` says hit or miss; the tiles are decoded to check that a
dropped tile shows the write at once."""

from __future__ import annotations

import math
import time

import mapbox_vector_tile
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import auth
from tests.integration.publishing import completed_gi_run

SOURCE = "invalidation-test"
# Near Belmopan, and near Orange Walk Town: 100 km apart, in different tiles down to z4.
HERE = (-88.7650, 17.2550)
THERE = (-88.5600, 18.0790)
# Old enough to move no index value of the latest complete period.
WHEN = "2015-06-01T10:00:00-06:00"


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    x = (lon + 180) / 360 * n
    y = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n
    return z, int(x), int(y)


def fetch(client, layer: str, zxy, key=None, **params) -> tuple[str, int]:
    """``X-Cache`` and the number of incidents (or features) the tile shows."""
    z, x, y = zxy
    response = client.get(f"/tiles/{layer}/{z}/{x}/{y}.mvt", params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    tile = mapbox_vector_tile.decode(response.content) if response.content else {}
    features = tile.get(layer, {}).get("features", [])
    shown = sum(f["properties"].get("count", 1) for f in features)
    return response.headers["x-cache"], shown


def warm(client, layer: str, zxy, key=None, **params) -> int:
    """Fetch a tile until it is a cache hit; what it shows."""
    fetch(client, layer, zxy, key, **params)
    cache, shown = fetch(client, layer, zxy, key, **params)
    assert cache == "hit", (layer, zxy)
    return shown


@pytest.fixture(scope="module")
def run_layer(client, base_data, keys, tmp_path_factory) -> str:
    """A completed public Gi* run over 2,000 incidents of SOURCE around four towns."""
    folder = tmp_path_factory.mktemp("invalidation")
    return completed_gi_run(client, base_data, keys["analyst"], folder, SOURCE)


def post_incident(client, keys, where, source_id: str) -> int:
    body = {
        "source": SOURCE,
        "source_id": source_id,
        "category": "theft",
        "occurred_at": WHEN,
        "geometry": {"type": "Point", "coordinates": list(where)},
    }
    created = client.post("/incidents", json=body, headers=auth(keys["editor"]))
    assert created.status_code == 201, created.text
    return created.json()["id"]


def delete_incident(client, keys, incident_id: int) -> None:
    response = client.delete(f"/incidents/{incident_id}", headers=auth(keys["editor"]))
    assert response.status_code == 204, response.text


def matched(client, keys) -> int:
    response = client.get(
        "/collections/incidents/items",
        params={"source": SOURCE, "limit": 1},
        headers=auth(keys["analyst"]),
    )
    assert response.status_code == 200, response.text
    return response.json()["numberMatched"]


def test_a_write_drops_only_the_incident_tiles_that_hold_it(client, keys, run_layer):
    analyst = keys["analyst"]
    districts = ("units-1", tile_of(*HERE, 6))
    hotspots = (run_layer, tile_of(*HERE, 8))
    # Incident tiles over the point: clustered (z0, z8) and points (z14, z16); and the
    # z14 tile of the other town.
    near = [tile_of(*HERE, z) for z in (0, 8, 14, 16)]
    far = tile_of(*THERE, 14)
    warm(client, *districts)
    warm(client, *hotspots)
    before = {zxy: warm(client, "incidents", zxy, analyst, source=SOURCE) for zxy in near}
    far_before = warm(client, "incidents", far, analyst, source=SOURCE)
    far_all = warm(client, "incidents", far, analyst)  # no filter: another cached tile
    count = matched(client, keys)

    incident_id = post_incident(client, keys, HERE, "inv-1")
    try:
        assert fetch(client, *districts)[0] == "hit"
        assert fetch(client, *hotspots)[0] == "hit"
        assert fetch(client, "incidents", far, analyst, source=SOURCE) == ("hit", far_before)
        assert fetch(client, "incidents", far, analyst) == ("hit", far_all)
        for zxy in near:  # dropped at every zoom, and shows the new incident at once
            assert fetch(client, "incidents", zxy, analyst, source=SOURCE) == (
                "miss",
                before[zxy] + 1,
            ), zxy
        assert matched(client, keys) == count + 1  # pages and counts are not stale either
    finally:
        delete_incident(client, keys, incident_id)
    # The deletion drops them again.
    for zxy in near:
        assert fetch(client, "incidents", zxy, analyst, source=SOURCE) == ("miss", before[zxy])
    assert fetch(client, *districts)[0] == "hit"
    assert matched(client, keys) == count


def test_a_moved_incident_drops_its_old_and_new_tiles(client, keys, run_layer):
    analyst = keys["analyst"]
    incident_id = post_incident(client, keys, HERE, "inv-2")
    try:
        old, new = tile_of(*HERE, 14), tile_of(*THERE, 14)
        elsewhere = tile_of(-88.1962, 17.5046, 14)  # Belize City
        at_old = warm(client, "incidents", old, analyst, source=SOURCE)
        at_new = warm(client, "incidents", new, analyst, source=SOURCE)
        at_elsewhere = warm(client, "incidents", elsewhere, analyst, source=SOURCE)
        hotspots = (run_layer, tile_of(*HERE, 8))
        warm(client, *hotspots)

        moved = client.patch(
            f"/incidents/{incident_id}",
            json={"geometry": {"type": "Point", "coordinates": list(THERE)}},
            headers=auth(keys["editor"]),
        )
        assert moved.status_code == 200, moved.text
        assert fetch(client, "incidents", old, analyst, source=SOURCE) == ("miss", at_old - 1)
        assert fetch(client, "incidents", new, analyst, source=SOURCE) == ("miss", at_new + 1)
        assert fetch(client, "incidents", elsewhere, analyst, source=SOURCE) == (
            "hit",
            at_elsewhere,
        )
        assert fetch(client, *hotspots)[0] == "hit"
    finally:
        delete_incident(client, keys, incident_id)


def _wait(condition, what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_another_worker_drops_the_same_tiles_by_notify(client, keys, base_data, run_layer, db):
    """A second app is a second worker: it hears of the first one's write, and of a write
    in plain SQL, by NOTIFY only, and drops the same tiles."""
    analyst = keys["analyst"]
    with TestClient(create_app(base_data)) as other:
        version = other.app.state.data_version
        _wait(lambda: version.listening, "the second worker never listened")
        districts = ("units-1", tile_of(*HERE, 6))
        hotspots = (run_layer, tile_of(*HERE, 8))
        near, far = tile_of(*HERE, 14), tile_of(*THERE, 14)
        warm(other, *districts)
        warm(other, *hotspots)
        at_near = warm(other, "incidents", near, analyst, source=SOURCE)
        at_far = warm(other, "incidents", far, analyst, source=SOURCE)

        located = version.located
        incident_id = post_incident(client, keys, HERE, "inv-3")  # through the first worker
        try:
            _wait(lambda: version.located > located, "the second worker never heard of it")
            assert fetch(other, *districts)[0] == "hit"
            assert fetch(other, *hotspots)[0] == "hit"
            assert fetch(other, "incidents", far, analyst, source=SOURCE) == ("hit", at_far)
            assert fetch(other, "incidents", near, analyst, source=SOURCE) == (
                "miss",
                at_near + 1,
            )
            warm(other, "incidents", near, analyst, source=SOURCE)

            # Moved in plain SQL: both workers drop both tiles.
            warm(client, "incidents", far, analyst, source=SOURCE)
            located, mine = version.located, client.app.state.data_version
            mine_located = mine.located
            db.execute(
                "UPDATE incident SET geom = ST_SetSRID(ST_MakePoint(%s, %s), 4326) WHERE id = %s",
                [*THERE, incident_id],
            )
            _wait(lambda: version.located > located, "the SQL write never arrived")
            assert fetch(other, "incidents", near, analyst, source=SOURCE) == ("miss", at_near)
            assert fetch(other, "incidents", far, analyst, source=SOURCE) == ("miss", at_far + 1)
            assert fetch(other, *districts)[0] == "hit"
            _wait(lambda: mine.located > mine_located, "the first worker never heard of it")
            assert fetch(client, "incidents", far, analyst, source=SOURCE) == ("miss", at_far + 1)
        finally:
            delete_incident(client, keys, incident_id)


def _units(client) -> dict[str, dict]:
    response = client.get("/collections/units-1/items", params={"limit": 50})
    assert response.status_code == 200, response.text
    return {f["properties"]["code"]: f["properties"] for f in response.json()["features"]}


def test_district_tiles_follow_their_index_values_not_every_incident(client, keys, run_layer):
    """The districts carry an index's latest values: an incident long before the periods
    they read keeps their tiles cached, one in the latest period changes the values and
    drops them (and the pages show the new values at once)."""
    definition = {
        "name": "invalidation-index",
        "title": "Thefts (tile invalidation test)",
        "unit_level": 1,
        "period": "year",
        "indicators": [
            {
                "code": "thefts",
                "source": {"incidents": {"categories": ["theft"], "measure": "count"}},
            }
        ],
    }
    created = client.post("/indexes", json=definition, headers=auth(keys["admin"]))
    assert created.status_code in (200, 201), created.text
    _wait(lambda: "invalidation_index_score" in _units(client)["BZ-CY"], "no index values")
    latest = client.get("/indexes/invalidation-index/periods").json()["latest"]
    districts = ("units-1", tile_of(*HERE, 6))
    before = _units(client)
    warm(client, *districts)

    old = post_incident(client, keys, HERE, "inv-4")  # 2015: outside what the index reads
    try:
        assert fetch(client, *districts)[0] == "hit"
        assert _units(client) == before
        body = {
            "source": SOURCE,
            "source_id": "inv-5",
            "category": "theft",
            "occurred_at": f"{latest}-06-15T10:00:00-06:00",
            "geometry": {"type": "Point", "coordinates": list(HERE)},
        }
        created = client.post("/incidents", json=body, headers=auth(keys["editor"]))
        assert created.status_code == 201, created.text
        try:
            after = _units(client)
            assert after != before  # one more theft in Cayo moves the scores
            assert fetch(client, *districts)[0] == "miss"
        finally:
            delete_incident(client, keys, created.json()["id"])
        assert _units(client) == before
    finally:
        delete_incident(client, keys, old)
