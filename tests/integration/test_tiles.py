"""Vector tiles on the real PostGIS, decoded with mapbox-vector-tile: features land in
their tile, properties are there, filters hold, low zooms are clustered, and the cache
answers 304 for a matching ETag and a fresh tile after a write."""

from __future__ import annotations

import gzip
import math
from datetime import datetime, timedelta, timezone

import mapbox_vector_tile
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from tests.conftest import auth
from tests.integration.helpers import import_csv

SOURCE = "tile-test"
MVT = "application/vnd.mapbox-vector-tile"
# Belize City, in the middle of one z14 tile (checked below).
CENTRE = (-88.1873, 17.5079)  # the middle of z14 tile 4178/7382


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    x = (lon + 180) / 360 * n
    y = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n
    return z, int(x), int(y)


def tile_position(lon: float, lat: float, z: int, extent: int = 4096) -> tuple[float, float]:
    """Where the point falls inside its tile, in tile units (y down, as MVT stores it)."""
    n = 2**z
    x = (lon + 180) / 360 * n
    y = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n
    return (x - int(x)) * extent, (y - int(y)) * extent


@pytest.fixture(scope="module")
def points(base_data, tmp_path_factory):
    """40 incidents within ~150 m of CENTRE: 10 homicides, 30 thefts."""
    rng = np.random.default_rng(7)
    lon = CENTRE[0] + rng.uniform(-0.0012, 0.0012, 40)
    lat = CENTRE[1] + rng.uniform(-0.0012, 0.0012, 40)
    path = tmp_path_factory.mktemp("tiles") / "points.csv"
    categories = ["homicide"] * 10 + ["theft"] * 30
    rows = ["source,source_id,category,occurred_at,longitude,latitude,victim_sex,victim_age"]
    for i in range(40):
        rows.append(
            f"{SOURCE},t{i},{categories[i]},2024-03-0{1 + i % 9} 10:00,"
            f"{lon[i]:.6f},{lat[i]:.6f},female,{20 + i}"
        )
    path.write_text("\n".join(rows) + "\n")
    report = import_csv(base_data, path)
    assert report.inserted == 40 and report.rejected == 0
    # Every point is in the same z14 tile, away from its edges.
    assert {tile_of(x, y, 14) for x, y in zip(lon, lat, strict=True)} == {tile_of(*CENTRE, 14)}
    return lon, lat


def decode(content: bytes) -> dict:
    return mapbox_vector_tile.decode(content) if content else {}


def get_tile(client, layer: str, zxy: tuple[int, int, int], key=None, **params):
    z, x, y = zxy
    response = client.get(f"/tiles/{layer}/{z}/{x}/{y}.mvt", params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == MVT
    return response


def test_points_land_in_their_tile_with_their_properties(client, keys, points):
    lon, lat = points
    zxy = tile_of(*CENTRE, 14)
    tile = decode(get_tile(client, "incidents", zxy, keys["analyst"], source=SOURCE).content)
    features = tile["incidents"]["features"]
    assert len(features) == 40
    expected = np.array([tile_position(x, y, 14) for x, y in zip(lon, lat, strict=True)])
    # mapbox-vector-tile flips y to point up by default: turn it back to MVT's y-down.
    got = np.array([(f["geometry"]["coordinates"][0], 4096 - f["geometry"]["coordinates"][1])
                    for f in features])  # fmt: skip
    # Each point is where it should be, to the tile's integer grid.
    assert cdist(expected, got).min(axis=1).max() <= 1.5
    for f in features:
        assert 0 <= f["geometry"]["coordinates"][0] < 4096
        props = f["properties"]
        assert {"category", "occurred_at", "victim_sex", "victim_age", "count"} <= props.keys()
        assert props["count"] == 1 and props["victim_sex"] == "female"
        assert isinstance(f["id"], int)
    # The times travel as Unix time: 10:00 in Belize (UTC-6) on 1-9 March 2024.
    belize = timezone(timedelta(hours=-6))
    days = range(1, 10)
    expected_times = {int(datetime(2024, 3, d, 10, tzinfo=belize).timestamp()) for d in days}
    assert {f["properties"]["occurred_at"] for f in features} == expected_times


def test_points_sit_where_st_asmvtgeom_puts_them(client, keys, points, db):
    """Points are placed on the tile grid by formula (``app.sql.tiles``), not by
    ``ST_AsMVTGeom``: on every tile around them, at zooms where some fall in a tile's
    buffer, the tile holds exactly the points PostGIS's own call keeps, at its pixels."""
    lon, lat = points
    buffered = 0
    for z in (16, 17, 18, 19):
        corners = {tile_of(x, y, z) for x, y in zip(lon, lat, strict=True)}
        tiles = {
            (z, x + dx, y + dy) for _, x, y in corners for dx in (-1, 0, 1) for dy in (-1, 0, 1)
        }
        for zxy in sorted(tiles):
            reference = {
                fid: (x, y)
                for fid, x, y in db.execute(
                    "SELECT id, ST_X(g), ST_Y(g) FROM (SELECT id, ST_AsMVTGeom("
                    "ST_Transform(geom, 3857), ST_TileEnvelope(%s, %s, %s), 4096, 64, true) AS g"
                    " FROM incident WHERE source = %s) s WHERE g IS NOT NULL",
                    [*zxy, SOURCE],
                )
            }
            content = get_tile(client, "incidents", zxy, keys["analyst"], source=SOURCE).content
            features = decode(content).get("incidents", {}).get("features", [])
            got = {f["id"]: tuple(f["geometry"]["coordinates"]) for f in features}
            # mapbox-vector-tile flips y up; the reference is MVT's y-down.
            assert got == {fid: (x, 4096 - y) for fid, (x, y) in reference.items()}, zxy
            buffered += sum(not (0 <= x < 4096 and 0 <= y < 4096) for x, y in reference.values())
    assert buffered > 0  # some points were in a buffer: the edges were tested


def test_filters_are_respected(client, keys, points):
    zxy = tile_of(*CENTRE, 14)
    analyst = keys["analyst"]
    homicides = decode(
        get_tile(client, "incidents", zxy, analyst, source=SOURCE, category="homicide").content
    )
    assert len(homicides["incidents"]["features"]) == 10
    assert {f["properties"]["category"] for f in homicides["incidents"]["features"]} == {"homicide"}
    both = decode(
        get_tile(
            client, "incidents", zxy, analyst, source=SOURCE, category="homicide,theft"
        ).content
    )
    assert len(both["incidents"]["features"]) == 40  # a comma list is any of its values
    cql = decode(
        get_tile(
            client, "incidents", zxy, analyst, source=SOURCE, filter="victim_age >= 50"
        ).content
    )
    assert len(cql["incidents"]["features"]) == 10  # ages 20..59
    early = decode(
        get_tile(
            client,
            "incidents",
            zxy,
            analyst,
            source=SOURCE,
            datetime="2024-03-01T00:00:00Z/2024-03-02T00:00:00Z",
        ).content
    )
    assert len(early["incidents"]["features"]) == 5  # the 1st of March, i % 9 == 0


def test_low_zoom_tiles_are_clustered_and_keep_the_counts(client, keys, points):
    zxy = tile_of(*CENTRE, 8)
    tile = decode(get_tile(client, "incidents", zxy, keys["analyst"], source=SOURCE).content)
    features = tile["incidents"]["features"]
    assert 1 <= len(features) <= 2  # 300 m of points in one or two cells of ~2.4 km
    assert sum(f["properties"]["count"] for f in features) == 40
    assert all(set(f["properties"]) == {"count"} for f in features)  # no victim attributes


def test_the_ogc_form_serves_the_same_tile(client, keys, points):
    z, x, y = tile_of(*CENTRE, 14)
    xyz = get_tile(client, "incidents", (z, x, y), keys["analyst"], source=SOURCE)
    ogc = client.get(
        f"/collections/incidents/tiles/WebMercatorQuad/{z}/{y}/{x}",
        params={"source": SOURCE},
        headers=auth(keys["analyst"]),
    )
    assert ogc.status_code == 200 and ogc.content == xyz.content


def test_etag_304_and_a_fresh_tile_after_a_write(client, keys, points):
    zxy = tile_of(*CENTRE, 14)
    analyst = keys["analyst"]
    first = get_tile(client, "incidents", zxy, analyst, source=SOURCE)
    etag = first.headers["etag"]
    assert first.headers["cache-control"].startswith("private")
    z, x, y = zxy
    url = f"/tiles/incidents/{z}/{x}/{y}.mvt?source={SOURCE}"
    again = client.get(url, headers={**auth(analyst), "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag

    created = client.post(
        "/incidents",
        json={
            "source": SOURCE,
            "source_id": "t-new",
            "category": "robbery",
            "occurred_at": "2024-05-01T21:30:00-06:00",
            "geometry": {"type": "Point", "coordinates": list(CENTRE)},
        },
        headers=auth(keys["editor"]),
    )
    assert created.status_code == 201, created.text
    fresh = client.get(url, headers={**auth(analyst), "If-None-Match": etag})
    assert fresh.status_code == 200 and fresh.headers["etag"] != etag
    assert len(decode(fresh.content)["incidents"]["features"]) == 41
    client.delete(f"/incidents/{created.json()['id']}", headers=auth(keys["editor"]))
    after_delete = get_tile(client, "incidents", zxy, analyst, source=SOURCE)
    assert len(decode(after_delete.content)["incidents"]["features"]) == 40


def test_a_write_in_plain_sql_reaches_the_cache_by_notify(client, keys, points, db):
    zxy = tile_of(*CENTRE, 14)
    analyst = keys["analyst"]
    before = get_tile(client, "incidents", zxy, analyst, source=SOURCE, category="theft")
    assert len(decode(before.content)["incidents"]["features"]) == 30
    db.execute(
        "UPDATE incident SET category = 'robbery' WHERE source = %s AND source_id = 't39'",
        [SOURCE],
    )
    try:
        for _ in range(100):  # the notification arrives within moments
            tile = get_tile(client, "incidents", zxy, analyst, source=SOURCE, category="theft")
            if len(decode(tile.content)["incidents"]["features"]) == 29:
                break
        else:
            pytest.fail("a write in SQL never reached the tile cache")
    finally:
        db.execute(
            "UPDATE incident SET category = 'theft' WHERE source = %s AND source_id = 't39'",
            [SOURCE],
        )


def test_gzip_only_with_content_encoding(client, keys, base_data):
    zxy = tile_of(*CENTRE, 6)
    plain = client.get(
        "/tiles/units-1/{}/{}/{}.mvt".format(*zxy), headers={"Accept-Encoding": "identity"}
    )
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    assert plain.content[:2] != b"\x1f\x8b"  # raw protobuf, not gzip bytes
    packed = client.get(
        "/tiles/units-1/{}/{}/{}.mvt".format(*zxy), headers={"Accept-Encoding": "gzip"}
    )
    assert packed.headers["content-encoding"] == "gzip"
    # httpx undoes the gzip it was told about; the bytes are the same tile.
    assert packed.content == plain.content
    assert gzip.decompress(gzip.compress(plain.content)) == plain.content
    assert plain.headers["cache-control"].startswith("public")


def test_district_tiles_are_public_and_carry_their_properties(client, base_data):
    tile = decode(get_tile(client, "units-1", tile_of(*CENTRE, 6)).content)
    codes = {f["properties"]["code"] for f in tile["units-1"]["features"]}
    assert "BZ-BZ" in codes
    assert all("name" in f["properties"] for f in tile["units-1"]["features"])


@pytest.mark.parametrize(("role", "status"), [(None, 401), ("viewer", 403), ("analyst", 200)])
def test_incident_tiles_need_an_analyst_key(client, keys, points, role, status):
    z, x, y = tile_of(*CENTRE, 14)
    response = client.get(
        f"/tiles/incidents/{z}/{x}/{y}.mvt", headers=auth(keys[role] if role else None)
    )
    assert response.status_code == status
    if status != 200:
        assert response.headers["content-type"] == "application/problem+json"


def test_tiles_outside_the_grid_are_404(client, base_data):
    for url in ("/tiles/units-1/3/8/0.mvt", "/tiles/units-1/3/0/9.mvt", "/tiles/nowhere/1/0/0.mvt"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.headers["content-type"] == "application/problem+json"


def test_tilejson_describes_the_layer_and_keeps_the_filters(client, keys, points):
    response = client.get("/tiles/incidents.json?category=homicide", headers=auth(keys["analyst"]))
    assert response.status_code == 200
    body = response.json()
    assert body["tilejson"] == "3.0.0"
    (template,) = body["tiles"]
    assert template.startswith("http://testserver/tiles/incidents/{z}/{x}/{y}.mvt")
    assert template.endswith("?category=homicide")
    west, south, east, north = body["bounds"]
    assert west <= CENTRE[0] <= east and south <= CENTRE[1] <= north
    (layer,) = body["vector_layers"]
    assert layer["id"] == "incidents" and "category" in layer["fields"]
    assert "Unix time" in layer["fields"]["occurred_at"]
    assert body["minzoom"] <= body["maxzoom"]


def test_cached_tiles_keep_cors_and_the_access_rules(client, keys, points):
    """The second request of a tile is answered from the cache before routing
    (app.ogc.tilecache.CachedTiles): CORS headers, ETag and the role rules still hold."""
    z, x, y = tile_of(*CENTRE, 14)
    url = f"/tiles/incidents/{z}/{x}/{y}.mvt?source={SOURCE}"
    headers = {**auth(keys["analyst"]), "Origin": "https://dashboard.example"}
    first = client.get(url, headers=headers)
    hits = client.app.state.tile_cache.hits
    second = client.get(url, headers=headers)
    assert client.app.state.tile_cache.hits == hits + 1
    assert second.status_code == 200 and second.content == first.content
    assert second.headers["etag"] == first.headers["etag"]
    assert second.headers["access-control-allow-origin"] == "*"
    assert second.headers["content-type"] == MVT
    # The cached tile is never handed to a caller without the role.
    assert client.get(url).status_code == 401
    assert client.get(url, headers=auth(keys["viewer"])).status_code == 403
    assert client.get(url, headers=auth("obs_00000000_not-a-real-key")).status_code == 401


def test_cached_tiles_at_the_door_answer_as_the_whole_stack(client, keys, points):
    """A cached tile asked without ``Origin`` is answered by ``TileHits``, the outermost
    middleware, before the others run: the same body and headers as the same hit through
    the whole stack (``Vary`` naming ``Origin`` as CORS adds it), a 304 for its ETag, and
    the same access rules (an unknown key and the public go the normal way)."""
    from app.ogc.tilecache import TileHits

    z, x, y = tile_of(*CENTRE, 14)
    url = f"/tiles/incidents/{z}/{x}/{y}.mvt?source={SOURCE}&category=homicide"
    analyst = auth(keys["analyst"])
    browser = {**analyst, "Origin": "https://dashboard.example", "Accept-Encoding": "identity"}
    client.get(url, headers=browser)  # rendered and cached (or already cached)
    stack = client.get(url, headers=browser)  # a hit through every middleware (CORS)
    hits = client.app.state.tile_cache.hits
    door = client.get(url, headers={**analyst, "Accept-Encoding": "identity"})
    assert client.app.state.tile_cache.hits == hits + 1
    assert door.status_code == 200 and door.content == stack.content
    assert len(decode(door.content)["incidents"]["features"]) == 10  # the homicides
    cors = {k for k in stack.headers if k.startswith("access-control-")}
    assert cors and not cors & door.headers.keys()
    assert {k: v for k, v in stack.headers.items() if k not in cors} == dict(door.headers)
    assert door.headers["vary"] == "Accept-Encoding, Authorization, Origin"
    assert door.headers["x-cache"] == "hit" and door.headers["cache-control"].startswith("private")
    again = client.get(url, headers={**analyst, "If-None-Match": door.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == door.headers["etag"]
    assert client.get(url).status_code == 401
    assert client.get(url, headers=auth("obs_00000000_not-a-real-key")).status_code == 401
    # The door is the outermost of the app's own middlewares (rate limiting is off here).
    assert client.app.user_middleware[0].cls is TileHits
