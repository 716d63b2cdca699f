"""Which cached tiles a located change drops (``app.ogc.tilecache``), and how change
notifications read (``app.core.versions``): checked against tiles computed by hand."""

from __future__ import annotations

import math

from starlette.datastructures import QueryParams

from app.core.versions import EVERYTHING, Change, DataVersion, parse
from app.ogc.tilecache import LOCATED_MARGIN, TileCache, make_tile, tiles_touched


def _key(layer: str, zxy: tuple[int, int, int], query: str = "") -> tuple:
    return (layer, zxy, tuple(sorted(QueryParams(query).multi_items())), (), 0)


def test_a_point_touches_its_tile_and_the_neighbours_whose_buffer_holds_it():
    # (0, 0) is the corner of four tiles at every zoom; a point well inside touches one.
    columns, rows = tiles_touched((0.0, 0.0, 0.0, 0.0), 3, LOCATED_MARGIN)
    assert (list(columns), list(rows)) == ([3, 4], [3, 4])
    lon, lat = -88.7650, 17.2550
    n = 2**14
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    columns, rows = tiles_touched((lon, lat, lon, lat), 14, LOCATED_MARGIN)
    assert (list(columns), list(rows)) == ([x], [y])
    # At z0 the world is one tile.
    assert tuple(map(list, tiles_touched((-180, -85, 180, 85), 0, LOCATED_MARGIN))) == ([0], [0])


def test_drop_near_keeps_the_other_tiles_and_layers():
    cache = TileCache(10**6)
    tile = make_tile(b"x" * 10)
    here = (-88.7650, 17.2550, -88.7650, 17.2550)
    held = {
        _key("incidents", (14, 4152, 7394)),  # the point's z14 tile
        _key("incidents", (14, 4152, 7394), "category=theft"),  # the same, filtered
        _key("incidents", (14, 4153, 7394)),  # its neighbour: 1 km away, beyond the buffer
        _key("incidents", (0, 0, 0)),
        _key("units-1", (14, 4152, 7394)),
    }
    columns, rows = tiles_touched(here, 14, LOCATED_MARGIN)
    assert (list(columns), list(rows)) == ([4152], [7394])
    for key in held:
        cache.put(key, tile)
    assert cache.drop_near("incidents", [here], LOCATED_MARGIN) == 3
    assert {k for k in held if k in cache} == {
        _key("incidents", (14, 4153, 7394)),
        _key("units-1", (14, 4152, 7394)),
    }
    assert cache.bytes == 2 * tile.size
    # A box wider than the tiles held is tested tile by tile: the same answer.
    cache.put(_key("incidents", (14, 4152, 7394)), tile)
    assert cache.drop_near("incidents", [(-89.0, 17.0, -88.0, 18.5)], LOCATED_MARGIN) == 2


def test_follow_catches_up_with_the_located_changes():
    cache, version = TileCache(10**6), DataVersion()
    tile = make_tile(b"x")
    near, far = _key("incidents", (14, 4152, 7394)), _key("incidents", (14, 4161, 7355))
    for key in (near, far):
        cache.put(key, tile)
    version.notified('incident:{"op": "insert", "p": [[-88.765, 17.255]]}')
    assert version.tables["incident"] == 1 and version.tables["incident:anywhere"] == 0
    cache.follow(version)
    assert near not in cache and far in cache
    # Further behind than the log keeps: every incident tile goes.
    cache.put(near, tile)
    for _ in range(600):
        version.notified('incident:{"op": "update", "b": [-88.77, 17.25, -88.76, 17.26]}')
    cache.follow(version)
    assert len(cache) == 0


def test_payloads():
    assert parse(None) == EVERYTHING and parse("") == EVERYTHING
    assert parse("sync:abc") is None
    assert parse("alert:update") == Change("alert", "update")
    assert parse("incident") == Change("incident")  # migration 0007's payload
    assert parse('incident:{"op": "delete", "b": [1, 2, 3, 4]}') == Change(
        "incident", "delete", ((1.0, 2.0, 3.0, 4.0),)
    )
    assert parse('incident:{"op": "insert", "p": [[1, 2]], "t": [10, 20.5]}') == Change(
        "incident", "insert", ((1.0, 2.0, 1.0, 2.0),), (10.0, 20.5)
    )
    version = DataVersion()
    version.notified("analysis_run:delete")
    version.notified("incident:truncate")
    assert version.tables["analysis_run:removed"] == 1
    assert version.tables["incident:anywhere"] == 1 and version.located == 0
    assert version.everything == 0
    version.notified(None)
    assert version.everything == 1 and version.listening
