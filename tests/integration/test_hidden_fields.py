"""Filters see what the caller sees (issue 13, point 3).

A public hot spot layer withholds ``count``, ``z``, ``p``, ``p_sim``, ``i`` and
``quadrant`` below analyst. Filtering on them used to work for everyone, with the values
nulled in the answer: walking ``count=1..k`` gave every cell's count away. Now the
queryables list only what the caller sees, and a filter on anything else (``name=value``,
CQL2 text or JSON, on items or tiles, cached or not) is one 400 whose body is that of a
field that does not exist.

The data: a few incidents of non-sensitive categories around seven towns under this
module's own source, 1 to 4 a town, and one Gi* run over them on 10 km cells (public:
no sensitive category).
"""

from __future__ import annotations

import csv
import math
import re
import time
from pathlib import Path

import mapbox_vector_tile
import pytest
from starlette.datastructures import QueryParams

from app.access import visible_fields
from app.ogc.layers import incidents_layer
from app.ogc.tilecache import tile_key
from app.security import PUBLIC, Principal
from tests.conftest import auth
from tests.integration.helpers import import_csv

SOURCE = "hidden-fields"
PROBLEM = "application/problem+json"
# Town centres, far enough apart (> 10 km) to fall in different cells, and how many
# incidents lie around each: the small counts the attack recovered.
TOWNS = {
    (-88.1962, 17.5046): 4,  # Belize City
    (-88.7710, 17.2510): 3,  # Belmopan
    (-89.0691, 17.1588): 2,  # San Ignacio
    (-88.5633, 18.0812): 1,  # Orange Walk
    (-88.3933, 18.3937): 2,  # Corozal
    (-88.2267, 16.9691): 3,  # Dangriga
    (-88.8083, 16.0989): 1,  # Punta Gorda
}
HIDDEN = ("count", "z", "p", "p_sim", "i", "quadrant")
SHOWN = ("cell_id", "bin", "label", "category")
BELOW_ANALYST = ("none", "viewer")


def _key(keys: dict[str, str], role: str) -> str | None:
    return None if role == "none" else keys[role]


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return z, x, y


@pytest.fixture(scope="module")
def layer_id(base_data, client, keys, tmp_path_factory) -> str:
    """The collection id of a completed, public Gi* run over this module's incidents."""
    path = Path(tmp_path_factory.mktemp("hidden")) / "incidents.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source", "source_id", "category", "occurred_at", "longitude", "latitude"])
        i = 0
        for (lon, lat), n in TOWNS.items():
            for j in range(n):
                i += 1
                category = ("theft", "burglary")[i % 2]
                point = (round(lon + 0.001 * j, 6), round(lat - 0.0007 * j, 6))
                writer.writerow([SOURCE, f"hf-{i}", category, f"2024-03-{1 + i:02d} 10:00", *point])
    report = import_csv(base_data, path)
    assert report.inserted == sum(TOWNS.values()) and report.rejected == 0
    analyst = auth(keys["analyst"])
    body = {
        "method": "gi_star",
        "units": {"type": "grid", "cell_size_m": 10_000},
        "filters": {"sources": [SOURCE], "categories": ["theft", "burglary"]},
    }
    response = client.post("/analyses/hotspots", json=body, headers=analyst)
    assert response.status_code in (201, 202), response.text
    run_id, deadline = response.json()["id"], time.monotonic() + 300
    while (run := client.get(f"/analyses/{run_id}", headers=analyst)).status_code == 202:
        assert time.monotonic() < deadline, "the analysis never finished"
        time.sleep(0.2)
    assert run.status_code == 200, run.text
    layer = f"hotspots-{run_id}"
    # The catalog follows the data version, bumped by NOTIFY: allow it a moment.
    while client.get(f"/collections/{layer}").status_code != 200:
        assert time.monotonic() < deadline, f"{layer} never became a public collection"
        time.sleep(0.2)
    return layer


@pytest.fixture(scope="module")
def cells(client, keys, layer_id) -> list[dict]:
    """Every cell of the run as the analyst sees it (the truth the attack was after)."""
    response = client.get(
        f"/collections/{layer_id}/items", params={"limit": 10_000}, headers=auth(keys["analyst"])
    )
    assert response.status_code == 200, response.text
    features = response.json()["features"]
    counts = {f["properties"]["count"] for f in features}
    assert {1, 2, 3, 4} <= counts, counts  # the small counts the attack recovered
    return features


def _refused(response, instance: str) -> dict:
    """A 400 problem+json for ``instance``; its body."""
    assert response.status_code == 400, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["instance"] == instance
    assert "features" not in body
    return body


def _as_if(body: dict, name: str, instead: str) -> dict:
    """The body with a refused name replaced by another one: equal for an existing hidden
    field and a field that does not exist, so the answer says nothing of which it is."""
    return {
        k: v.replace(f"`{name}`", f"`{instead}`") if k == "detail" else v for k, v in body.items()
    }


# Each filter on a hidden field, and the same filter on a field that does not exist.
HIDDEN_FILTERS = [
    ("count", {"count": "1"}),
    ("count", {"count": "not-a-number"}),  # no type check before the name is allowed
    ("z", {"z": "2"}),
    ("p", {"p": "0.01"}),
    ("quadrant", {"quadrant": "1"}),
    ("z", {"filter": '"z" > 2'}),
    ("z", {"filter": "z > 2"}),  # one-letter names unquoted parse too (app.ogc.cql2)
    ("z", {"filter": '"z" > 2', "filter-lang": "cql2-text"}),
    ("z", {"filter": '{"op": ">", "args": [{"property": "z"}, 2]}', "filter-lang": "cql2-json"}),
    ("count", {"filter": "count=1"}),
    ("p_sim", {"filter": "p_sim < 0.05 AND bin = 3"}),
    ("i", {"filter": '{"op": "=", "args": [{"property": "i"}, 0]}'}),
]


def _nonexistent(params: dict[str, str], name: str) -> dict[str, str]:
    """The same parameters with the hidden field renamed to one that does not exist."""
    if "filter" in params:
        return {**params, "filter": re.sub(rf"\b{name}\b", "nosuchfield", params["filter"])}
    return {"nosuchfield" if k == name else k: v for k, v in params.items()}


# --- queryables ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", BELOW_ANALYST)
def test_queryables_list_no_hidden_field(client, keys, layer_id, role):
    response = client.get(f"/collections/{layer_id}/queryables", headers=auth(_key(keys, role)))
    assert response.status_code == 200, response.text
    assert set(response.json()["properties"]) == {"geometry", *SHOWN}


def test_analysts_see_every_queryable_of_a_run(client, keys, layer_id):
    response = client.get(f"/collections/{layer_id}/queryables", headers=auth(keys["analyst"]))
    assert set(response.json()["properties"]) == {"geometry", *SHOWN, *HIDDEN}


def test_analysts_still_see_every_incident_queryable(client, keys, base_data):
    response = client.get("/collections/incidents/queryables", headers=auth(keys["analyst"]))
    assert response.status_code == 200, response.text
    expected = {f.name for f in incidents_layer().queryables}
    assert {"category", "occurred_at", "victim_sex", "victim_age"} <= expected
    assert set(response.json()["properties"]) == {"geometry", *expected}


# --- items --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", BELOW_ANALYST)
@pytest.mark.parametrize(("name", "params"), HIDDEN_FILTERS)
def test_item_filters_on_hidden_fields_are_refused_like_unknown_ones(
    client, keys, layer_id, role, name, params
):
    url, headers = f"/collections/{layer_id}/items", auth(_key(keys, role))
    hidden = _refused(client.get(url, params=params, headers=headers), url)
    missing = _refused(client.get(url, params=_nonexistent(params, name), headers=headers), url)
    assert _as_if(hidden, name, "nosuchfield") == missing
    # The message names only what this caller may filter on.
    assert missing["detail"] == (
        f"`nosuchfield` is not a queryable property of {layer_id}; "
        f"you may filter on: {', '.join(SHOWN)}"
    )


@pytest.mark.parametrize("role", BELOW_ANALYST)
def test_walking_the_counts_yields_no_cell(client, keys, layer_id, cells, role):
    """The replay of the attack: every count the analyst sees, asked for one by one, with
    both filter forms. Not one cell comes back."""
    url, headers = f"/collections/{layer_id}/items", auth(_key(keys, role))
    top = max(int(f["properties"]["count"]) for f in cells)
    for count in range(1, top + 1):
        for params in ({"count": str(count)}, {"filter": f"count = {count}"}):
            _refused(client.get(url, params=params, headers=headers), url)


@pytest.mark.parametrize("role", BELOW_ANALYST)
def test_shown_fields_still_filter(client, keys, layer_id, cells, role):
    url, headers = f"/collections/{layer_id}/items", auth(_key(keys, role))
    bins = {f["properties"]["bin"] for f in cells}
    for value in bins:
        page = client.get(url, params={"bin": str(value), "limit": 10_000}, headers=headers)
        assert page.status_code == 200, page.text
        expected = sorted(f["id"] for f in cells if f["properties"]["bin"] == value)
        assert sorted(f["id"] for f in page.json()["features"]) == expected
        assert all(f["properties"]["count"] is None for f in page.json()["features"])
    cql = client.get(url, params={"filter": "bin >= 0 AND cell_id IS NOT NULL"}, headers=headers)
    assert cql.status_code == 200, cql.text


def test_analysts_still_filter_on_count_and_z(client, keys, layer_id, cells):
    url, headers = f"/collections/{layer_id}/items", auth(keys["analyst"])
    for count in (1, 2, 3, 4):
        page = client.get(url, params={"count": str(count), "limit": 10_000}, headers=headers)
        assert page.status_code == 200, page.text
        expected = sorted(f["id"] for f in cells if f["properties"]["count"] == count)
        assert sorted(f["id"] for f in page.json()["features"]) == expected != []
    # Gi* z of the cells around the towns: the threshold splits them (some above, some not).
    zs = sorted(f["properties"]["z"] for f in cells if f["properties"]["z"] is not None)
    threshold = zs[len(zs) // 2]
    expected = sorted(f["id"] for f in cells if (f["properties"]["z"] or -math.inf) > threshold)
    for params in (
        {"filter": f'"z" > {threshold!r}'},
        {"filter": f"z > {threshold!r}"},
        {"filter": f'{{"op": ">", "args": [{{"property": "z"}}, {threshold!r}]}}'},
    ):
        page = client.get(url, params={**params, "limit": 10_000}, headers=headers)
        assert page.status_code == 200, page.text
        assert sorted(f["id"] for f in page.json()["features"]) == expected != []


def test_unknown_parameters_are_refused_and_reserved_ones_kept(client, layer_id):
    for url in ("/collections/units-1/items", f"/collections/{layer_id}/items"):
        _refused(client.get(url, params={"nosuchfield": "1"}), url)
        _refused(client.get(url, params={"sortby": "count"}), url)  # no sort key either
        ok = client.get(url, params={"f": "json", "limit": 2})
        assert ok.status_code == 200, ok.text


# --- tiles --------------------------------------------------------------------------------


def _tile_urls(layer_id: str, z: int) -> tuple[str, str]:
    """The same tile in both forms: XYZ and OGC API Tiles (zoom, row, column)."""
    _, x, y = tile_of(*next(iter(TOWNS)), z)
    return (
        f"/tiles/{layer_id}/{z}/{x}/{y}.mvt",
        f"/collections/{layer_id}/tiles/WebMercatorQuad/{z}/{y}/{x}",
    )


def _cached(client, layer_id: str, z: int, query: str = "") -> bool:
    """Whether the worker holds this tile for a caller below analyst."""
    state = client.app.state
    layer = state.catalog.current()[layer_id]
    zxy = tile_of(*next(iter(TOWNS)), z)
    visible = visible_fields(layer, PUBLIC)
    assert visible == visible_fields(layer, Principal(role="viewer"))
    key = tile_key(layer, zxy, QueryParams(query), visible, state.catalog.tile_version(layer))
    return key in state.tile_cache


@pytest.mark.parametrize(("role", "zooms"), [("none", (6, 7)), ("viewer", (8, 9))])
def test_tile_filters_on_hidden_fields_are_refused_cached_or_not(
    client, keys, layer_id, role, zooms
):
    """Each tile form at its own zoom (XYZ, then OGC API Tiles): first while the tile is
    not cached, then once the same tile without a filter is (the fast path answers
    neither)."""
    headers = auth(_key(keys, role))
    for form, z in enumerate(zooms):
        url = _tile_urls(layer_id, z)[form]
        assert not _cached(client, layer_id, z)
        for cached in (False, True):
            for name, params in HIDDEN_FILTERS:
                hidden = _refused(client.get(url, params=params, headers=headers), url)
                missing = client.get(url, params=_nonexistent(params, name), headers=headers)
                assert _as_if(hidden, name, "nosuchfield") == _refused(missing, url)
            if not cached:
                plain = client.get(url, headers=headers)
                assert plain.status_code == 200, plain.text
                assert _cached(client, layer_id, z)
        assert not _cached(client, layer_id, z, "count=1")


def test_analysts_still_filter_tiles_on_count(client, keys, layer_id, cells):
    z = 5
    for url in _tile_urls(layer_id, z):
        tile = client.get(url, params={"count": "1"}, headers=auth(keys["analyst"]))
        assert tile.status_code == 200, tile.text
        features = mapbox_vector_tile.decode(tile.content)[layer_id]["features"]
        assert features and {f["properties"]["count"] for f in features} == {1}


def test_an_analysts_tile_of_a_public_layer_stays_out_of_shared_caches(client, keys, layer_id):
    """It holds the counts the public never gets: Cache-Control private, both paths (the
    route, then the cached fast path); the public's own tile may be shared."""
    url = _tile_urls(layer_id, 4)[0]
    for _ in range(2):
        analyst = client.get(url, headers=auth(keys["analyst"]))
        assert analyst.status_code == 200
        assert analyst.headers["cache-control"].startswith("private"), analyst.headers
        public = client.get(url)
        assert public.headers["cache-control"].startswith("public"), public.headers


def test_tilejson_refuses_a_hidden_filter(client, keys, layer_id):
    url = f"/tiles/{layer_id}.json"
    hidden = _refused(client.get(url, params={"count": "1"}), url)
    assert _as_if(hidden, "count", "nosuchfield") == _refused(
        client.get(url, params={"nosuchfield": "1"}), url
    )
    kept = client.get(url, params={"bin": "3"})
    assert kept.status_code == 200 and kept.json()["tiles"][0].endswith("?bin=3")
    analyst = client.get(url, params={"count": "1"}, headers=auth(keys["analyst"]))
    assert analyst.status_code == 200, analyst.text
