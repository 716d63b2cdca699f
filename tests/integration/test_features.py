"""OGC API Features (Parts 1-3) over real HTTP semantics (ASGI) on the real PostGIS.

The assertions mirror the OGC API Features executable test suite (ETS): link relations
and media types, the OpenAPI 3.0 definition, ``limit`` handling, ``bbox`` with 4 and 6
numbers, ``datetime`` instants and intervals, CRS axis order (Part 2) and CQL2 filters
(Part 3). Every count is compared with a direct SQL count on the same table, never with
a number written into the test.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np
import orjson
import pandas as pd
import psycopg
import pytest
from fastapi.testclient import TestClient
from pyproj import Transformer

from app.core.settings import ApiSettings, Settings
from app.main import create_app
from app.ogc.layers import incidents_layer
from tests.conftest import auth
from tests.integration.helpers import CATEGORIES, TOWNS, import_csv

GEOJSON = "application/geo+json"
JSON = "application/json"
PROBLEM = "application/problem+json"
OPENAPI_30 = "application/vnd.oai.openapi+json;version=3.0"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG = "http://www.opengis.net/def/crs/EPSG/0/"
SPEC = "http://www.opengis.net/spec"
QUERYABLES_REL = "http://www.opengis.net/def/rel/ogc/1.0/queryables"

# The incidents this module adds; every count below is restricted to them, so incidents
# written by other test modules in the same session change nothing here.
SOURCE = "oapif-test"
N_INCIDENTS = 57  # not a multiple of the page sizes used, so the last page is partial
# A box around Belize City only (the other towns of TOWNS are > 30 km away): no test
# point lies near its edges, so a box densified and transformed by the service and the
# same box in SQL select the same points.
CITY_BOX = (-88.30, 17.40, -88.10, 17.60)


# --- fixtures and helpers ------------------------------------------------------------------


def _wait_for_new_version(client: TestClient, before: int) -> None:
    """Writes made outside the service reach it by NOTIFY; wait until this app has seen
    ours, so that no cached count predates them (a synchronisation, not a timing test)."""
    deadline = time.monotonic() + 10
    while client.app.state.data_version.value == before:
        assert time.monotonic() < deadline, "the service never saw the new incidents"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def incidents(client: TestClient, base_data: Settings, tmp_path_factory) -> int:
    """N_INCIDENTS incidents of SOURCE near the towns, with some empty victim fields (for
    IS NULL) and one source id with an apostrophe (for quoted CQL2 strings)."""
    rng = np.random.default_rng(5)
    n = N_INCIDENTS
    towns = TOWNS[rng.integers(0, len(TOWNS), n)]
    source_ids = [f"oapif-{i:03d}" for i in range(n)]
    source_ids[3] = "o'neill-003"
    frame = pd.DataFrame(
        {
            "source": SOURCE,
            "source_id": source_ids,
            "category": rng.choice(CATEGORIES, n),
            "occurred_at": (
                pd.Timestamp("2022-01-01") + pd.to_timedelta(rng.integers(0, 3 * 365 * 24, n), "h")
            ).strftime("%Y-%m-%d %H:%M"),
            "longitude": (towns[:, 0] + rng.normal(0, 0.004, n)).round(6),
            "latitude": (towns[:, 1] + rng.normal(0, 0.004, n)).round(6),
            "victim_sex": [None if i % 4 == 0 else ("female", "male")[i % 2] for i in range(n)],
            "victim_age": [
                None if i % 5 == 0 else int(a) for i, a in enumerate(rng.integers(0, 90, n))
            ],
        }
    )
    path = tmp_path_factory.mktemp("oapif") / "incidents.csv"
    frame.to_csv(path, index=False)
    before = client.app.state.data_version.value
    report = import_csv(base_data, path)
    assert report.inserted == n, report
    _wait_for_new_version(client, before)
    return n


def _count(db: psycopg.Connection, where: str = "TRUE", params: tuple = ()) -> int:
    """Live incidents of this module matching a SQL condition."""
    sql = f"SELECT count(*) FROM incident WHERE deleted_at IS NULL AND source = %s AND ({where})"
    if not params:  # a LIKE pattern's % is no placeholder
        where = where.replace("%", "%%")
        sql = (
            f"SELECT count(*) FROM incident WHERE deleted_at IS NULL AND source = %s AND ({where})"
        )
    return db.execute(sql, (SOURCE, *params)).fetchone()[0]


def _link(document: dict, rel: str, type_: str | None = None) -> dict | None:
    return next(
        (x for x in document["links"] if x["rel"] == rel and (type_ is None or x["type"] == type_)),
        None,
    )


def _problem(response) -> dict:
    assert response.headers["content-type"].startswith(PROBLEM), response.text
    body = response.json()
    assert body["status"] == response.status_code and body["title"]
    return body


def _items(client: TestClient, key: str | None, collection: str = "incidents", **params) -> dict:
    response = client.get(f"/collections/{collection}/items", params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(GEOJSON)
    return response.json()


def _walk(client: TestClient, key: str | None, url: str) -> Iterator[dict]:
    """Every page of a listing, following `next` links typed application/geo+json."""
    while url:
        response = client.get(url, headers=auth(key))
        assert response.status_code == 200, response.text
        page = response.json()
        yield page
        url = (_link(page, "next", GEOJSON) or {}).get("href")


def _ours(**params: Any) -> dict[str, Any]:
    """Query parameters restricted to this module's incidents (a Part 1 property filter)."""
    return {"source": SOURCE, "limit": 1000, **params}


# --- landing page, API definition, conformance -----------------------------------------------


def test_landing_page_links_are_absolute_and_typed(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith(JSON)
    landing = response.json()
    assert landing["title"]
    for link in landing["links"]:
        assert link["href"].startswith("http://testserver/"), link
        assert link["type"], link
    # The relations and types the ETS checks, and QGIS looks for (QgsOapifLandingPageRequest:
    # service-desc typed application/vnd.oai.openapi+json;version=3.0, data typed
    # application/json; either missing and QGIS refuses the server).
    expected = {
        "self": JSON,
        "service-desc": OPENAPI_30,
        "service-doc": "text/html",
        "conformance": JSON,
        "data": JSON,
    }
    for rel, type_ in expected.items():
        link = _link(landing, rel, type_)
        assert link is not None, f"no {rel} link typed {type_}"
        target = client.get(link["href"])
        assert target.status_code == 200, (rel, target.text)
        assert target.headers["content-type"].split(";")[0] == type_.split(";")[0], rel


def _walk_schema(node: Any) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk_schema(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk_schema(value)


def test_api_definition_is_openapi_30_with_limit(client, base_data):
    response = client.get("/api")
    assert response.status_code == 200
    assert response.headers["content-type"] == OPENAPI_30
    api = response.json()
    assert re.fullmatch(r"3\.0\.\d+", api["openapi"]), api["openapi"]
    # components.parameters.limit with integer default and maximum: QGIS reads both
    # (QgsOapifApiRequest::processReply) and pages by 100 without them.
    limit = api["components"]["parameters"]["limit"]
    assert limit["in"] == "query" and limit["name"] == "limit"
    schema = limit["schema"]
    assert schema["type"] == "integer"
    assert schema["default"] == base_data.api.default_limit
    assert schema["maximum"] == base_data.api.max_limit
    assert schema["minimum"] == 1
    items = api["paths"]["/collections/{collection_id}/items"]["get"]
    assert {"$ref": "#/components/parameters/limit"} in items["parameters"]
    # A 3.0 document carries none of the 3.1 constructs FastAPI writes.
    for node in _walk_schema(api):
        assert node.get("type") != "null", node
        for key in ("anyOf", "oneOf"):
            assert {"type": "null"} not in node.get(key, []), node
            # an optional field is ``nullable`` on its type, not a null alternative
            assert {"nullable": True} not in node.get(key, []), node
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(node.get(bound, False), bool), node
        assert "const" not in node, node


def test_conformance_declares_what_qgis_checks(client):
    response = client.get("/conformance")
    assert response.status_code == 200
    conforms = set(response.json()["conformsTo"])
    required = {
        f"{SPEC}/ogcapi-features-1/1.0/conf/core",
        f"{SPEC}/ogcapi-features-1/1.0/conf/oas30",
        f"{SPEC}/ogcapi-features-1/1.0/conf/geojson",
        f"{SPEC}/ogcapi-features-2/1.0/conf/crs",
        # QgsOapifProvider::init filters on the server only when these four are all listed.
        f"{SPEC}/cql2/1.0/conf/basic-cql2",
        f"{SPEC}/cql2/1.0/conf/cql2-text",
        f"{SPEC}/ogcapi-features-3/1.0/conf/filter",
        f"{SPEC}/ogcapi-features-3/1.0/conf/features-filter",
        # ... and sends LIKE/BETWEEN/IN and S_INTERSECTS only with these.
        f"{SPEC}/cql2/1.0/conf/advanced-comparison-operators",
        f"{SPEC}/cql2/1.0/conf/basic-spatial-functions",
        f"{SPEC}/cql2/1.0/conf/cql2-json",
    }
    assert required <= conforms, required - conforms


# --- collections ---------------------------------------------------------------------------


def test_collections_are_described_with_typed_links(client, keys, incidents):
    response = client.get("/collections", headers=auth(keys["analyst"]))
    assert response.status_code == 200
    body = response.json()
    assert _link(body, "self", JSON)["href"] == "http://testserver/collections"
    ids = [c["id"] for c in body["collections"]]
    assert {"units-0", "units-1", "incidents"} <= set(ids)
    for collection in body["collections"]:
        cid = collection["id"]
        # QGIS builds URLs from the id and the WFS URI syntax breaks on dots.
        assert re.fullmatch(r"[A-Za-z0-9_-]+", cid), cid
        assert _link(collection, "self", JSON)["href"] == f"http://testserver/collections/{cid}"
        items = _link(collection, "items", GEOJSON)
        assert items["href"] == f"http://testserver/collections/{cid}/items"
        assert _link(collection, QUERYABLES_REL, "application/schema+json")
        # Part 2: the CRS list and the storage CRS.
        crs = collection["crs"]
        assert crs[0] == CRS84 and collection["storageCrs"] in crs
        assert {f"{EPSG}4326", f"{EPSG}3857", f"{EPSG}32616"} <= set(crs)
        west, south, east, north = collection["extent"]["spatial"]["bbox"][0]
        assert -90 < west < east < -87 and 15 < south < north < 19, (cid, west, south)
        # The collection's own document says the same.
        one = client.get(f"/collections/{cid}", headers=auth(keys["analyst"]))
        assert one.status_code == 200 and one.json() == collection
    temporal = next(c for c in body["collections"] if c["id"] == "incidents")["extent"]["temporal"]
    start, end = temporal["interval"][0]
    assert start < end


def test_unknown_collection_is_a_404_problem(client):
    response = client.get("/collections/no-such-layer/items")
    assert response.status_code == 404
    _problem(response)
    assert client.get("/collections/units.1").status_code in (404, 422)


def test_incidents_need_an_analyst_key(client, keys, incidents):
    """Point locations of incidents are never public: the collection is absent from the
    public list, and each of its resources answers 401 without a key, 403 to a viewer."""
    for who in (None, "viewer"):
        listed = client.get("/collections", headers=auth(keys.get(who))).json()
        assert "incidents" not in [c["id"] for c in listed["collections"]], who
    feature_id = _items(client, keys["analyst"], **_ours(limit=1))["features"][0]["id"]
    for path in ("", "/items", "/queryables", f"/items/{feature_id}"):
        url = f"/collections/incidents{path}"
        nobody = client.get(url)
        assert nobody.status_code == 401, url
        assert nobody.headers["www-authenticate"].startswith("Bearer realm=")
        _problem(nobody)
        viewer = client.get(url, headers=auth(keys["viewer"]))
        assert viewer.status_code == 403, url
        _problem(viewer)
        for role in ("analyst", "editor", "admin"):
            assert client.get(url, headers=auth(keys[role])).status_code == 200, (url, role)
    # Boundaries are public.
    public = _items(client, None, "units-1")
    codes = sorted(f["id"] for f in public["features"])
    assert codes == ["BZ-BZ", "BZ-CY", "BZ-CZL", "BZ-OW", "BZ-SC", "BZ-TOL"]


def test_queryables_are_a_json_schema_with_types(client, keys, incidents):
    response = client.get("/collections/incidents/queryables", headers=auth(keys["analyst"]))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/schema+json")
    schema = response.json()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "http://testserver/collections/incidents/queryables"
    assert schema["type"] == "object"
    properties = schema["properties"]
    layer = incidents_layer()
    assert {f.name for f in layer.queryables} | {"geometry"} == set(properties)
    for name, prop in properties.items():
        if name == "geometry":
            # Part 3 (format geometry-*) and QGIS, which only takes a $ref to
            # https://geojson.org/schema/ as the geometry it may filter on
            # (QgsOapifQueryablesRequest::processReply).
            assert prop["format"] == "geometry-point"
            assert prop["$ref"].startswith("https://geojson.org/schema/"), prop
            continue
        assert prop["type"] in ("string", "integer", "number", "boolean"), (name, prop)
    assert properties["occurred_at"] == {
        **properties["occurred_at"],
        "type": "string",
        "format": "date-time",
    }
    assert properties["victim_age"]["type"] == "integer"


# --- items: pages, limit, paging -----------------------------------------------------------


def test_every_feature_carries_every_property_key(client, keys, db, incidents):
    page = _items(client, keys["analyst"], **_ours())
    expected = {f.name for f in incidents_layer().fields}
    assert len(page["features"]) == N_INCIDENTS
    nulls = 0
    for feature in page["features"]:
        assert feature["type"] == "Feature" and isinstance(feature["id"], int)
        assert set(feature["properties"]) == expected, feature["properties"]
        nulls += feature["properties"]["victim_age"] is None
    assert nulls == _count(db, "victim_age IS NULL") > 0  # empty values: the key, with null
    units = _items(client, None, "units-1")
    assert len(units["features"]) == 6
    keys_of_units = {frozenset(f["properties"]) for f in units["features"]}
    assert len(keys_of_units) == 1, keys_of_units
    assert {"code", "name", "level", "parent_code", "area_km2"} <= set(next(iter(keys_of_units)))


def test_number_matched_equals_sql_count(client, keys, db, incidents):
    analyst = keys["analyst"]
    everything = _items(client, analyst, limit=1)
    total = db.execute("SELECT count(*) FROM incident WHERE deleted_at IS NULL").fetchone()[0]
    assert everything["numberMatched"] == total
    assert everything["numberReturned"] == 1 == len(everything["features"])
    ours = _items(client, analyst, **_ours(limit=5))
    assert ours["numberMatched"] == _count(db) == N_INCIDENTS
    assert ours["numberReturned"] == 5
    units = _items(client, None, "units-1")
    assert units["numberMatched"] == units["numberReturned"] == 6
    assert db.execute("SELECT count(*) FROM admin_unit WHERE level = 1").fetchone()[0] == 6


def test_walking_next_links_visits_every_feature_once(client, keys, db, incidents):
    analyst = keys["analyst"]
    # Filters must survive in the next links, with the page size.
    url = (
        f"/collections/incidents/items?source={SOURCE}&limit=7&filter=victim_age%20IS%20NOT%20NULL"
    )
    seen: list[int] = []
    pages = list(_walk(client, analyst, url))
    expected = _count(db, "victim_age IS NOT NULL")
    for page in pages:
        assert page["numberMatched"] == expected
        assert page["numberReturned"] == len(page["features"]) <= 7
        seen += [f["id"] for f in page["features"]]
        nxt = _link(page, "next")
        if nxt is not None:
            assert nxt["type"] == GEOJSON and nxt["href"].startswith("http://testserver/")
            query = parse_qs(urlsplit(nxt["href"]).query)
            assert query["limit"] == ["7"] and query["source"] == [SOURCE]
            assert query["filter"] == ["victim_age IS NOT NULL"]
    assert len(pages) == -(-expected // 7)
    assert len(seen) == len(set(seen)) == expected
    assert seen == sorted(seen)  # keyset order: stable ids, no feature twice
    assert all(_link(p, "self", GEOJSON) for p in pages)


def test_walking_every_incident_with_small_pages(client, keys, db, incidents):
    total = db.execute("SELECT count(*) FROM incident WHERE deleted_at IS NULL").fetchone()[0]
    ids = [
        f["id"]
        for page in _walk(client, keys["analyst"], "/collections/incidents/items?limit=500")
        for f in page["features"]
    ]
    assert len(ids) == len(set(ids)) == total


@pytest.fixture(scope="module")
def small_pages(base_data: Settings) -> Iterator[TestClient]:
    """A service whose page size is small, so a limit above the maximum can be seen
    clamped on collections this test session holds."""
    settings = base_data.model_copy(update={"api": ApiSettings(default_limit=3, max_limit=5)})
    with TestClient(create_app(settings)) as client:
        yield client


def test_limit_above_the_maximum_is_clamped_not_an_error(small_pages, keys, incidents):
    analyst = keys["analyst"]
    api = small_pages.get("/api").json()["components"]["parameters"]["limit"]["schema"]
    assert (api["default"], api["maximum"]) == (3, 5)
    page = _items(small_pages, analyst, source=SOURCE, limit=100_000)
    assert page["numberReturned"] == len(page["features"]) == 5
    assert page["numberMatched"] == N_INCIDENTS
    assert parse_qs(urlsplit(_link(page, "next", GEOJSON)["href"]).query)["limit"] == ["5"]
    assert len(_items(small_pages, analyst, source=SOURCE)["features"]) == 3  # the default
    walked = [
        f["id"]
        for p in _walk(small_pages, analyst, f"/collections/incidents/items?source={SOURCE}")
        for f in p["features"]
    ]
    assert len(walked) == len(set(walked)) == N_INCIDENTS


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "1.5"])
def test_invalid_limit_is_a_problem(client, limit):
    response = client.get("/collections/units-1/items", params={"limit": limit})
    assert 400 <= response.status_code < 500, response.text
    _problem(response)


def test_invalid_cursor_or_nul_bytes_are_problems_not_500(client, keys):
    analyst = keys["analyst"]
    for params in (
        {"after": "abc"},  # incidents have integer ids
        {"after": "1e3"},
        {"category": "a\x00b"},  # PostgreSQL text cannot hold NUL: a 400, not a 500
        {"filter": "category = 'a\x00b'"},
    ):
        response = client.get("/collections/incidents/items", params=params, headers=auth(analyst))
        assert response.status_code in (400, 422), (params, response.text)
        _problem(response)
    response = client.get("/collections/units-1/items", params={"after": "\x00"})
    assert response.status_code in (400, 422), response.text
    _problem(response)
    # A cursor past the last id is an empty page, not an error.
    response = client.get("/collections/units-1/items", params={"after": "ZZ"})
    assert response.status_code == 200 and response.json()["features"] == []


def test_single_feature(client, keys, incidents):
    analyst = keys["analyst"]
    listed = _items(client, analyst, **_ours(limit=1))["features"][0]
    response = client.get(f"/collections/incidents/items/{listed['id']}", headers=auth(analyst))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(GEOJSON)
    feature = response.json()
    links = feature.pop("links")
    assert feature == listed
    assert _link({"links": links}, "self", GEOJSON)["href"].endswith(
        f"/collections/incidents/items/{listed['id']}"
    )
    assert _link({"links": links}, "collection", JSON)["href"].endswith("/collections/incidents")
    district = client.get("/collections/units-1/items/BZ-CY")
    assert district.status_code == 200 and district.json()["properties"]["name"]
    for missing in ("/collections/units-1/items/XX", "/collections/incidents/items/999999999"):
        response = client.get(missing, headers=auth(analyst))
        assert response.status_code == 404, missing
        _problem(response)
    assert client.get("/collections/incidents/items/abc", headers=auth(analyst)).status_code == 404


# --- bbox and datetime ---------------------------------------------------------------------

_SQL_BOX = "ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, 4326))"


def test_bbox_with_four_and_six_numbers(client, keys, db, incidents):
    analyst = keys["analyst"]
    west, south, east, north = CITY_BOX
    expected = _count(db, _SQL_BOX, CITY_BOX)
    assert 0 < expected < N_INCIDENTS
    four = _items(client, analyst, **_ours(bbox=f"{west},{south},{east},{north}"))
    # Six numbers: minx, miny, minz, maxx, maxy, maxz; the heights do not restrict 2D data.
    six = _items(client, analyst, **_ours(bbox=f"{west},{south},-100,{east},{north},100"))
    for page in (four, six):
        assert page["numberMatched"] == len(page["features"]) == expected
        for f in page["features"]:
            x, y = f["geometry"]["coordinates"]
            assert west <= x <= east and south <= y <= north
    assert [f["id"] for f in four["features"]] == [f["id"] for f in six["features"]]
    # The next link keeps the box.
    first = _items(client, analyst, source=SOURCE, bbox=",".join(map(str, CITY_BOX)), limit=1)
    assert "bbox" in parse_qs(urlsplit(_link(first, "next")["href"]).query)


NEAR_SOURCE = "oapif-nearest"
NEAR_BOX = (-88.50, 17.00, -88.40, 17.10)  # countryside south of Belize City, no towns


def test_a_bbox_of_points_comes_nearest_the_centre_first(client, keys, db, base_data, tmp_path):
    """The first page of a bbox of points holds the features nearest the box's centre
    (ties, points at one place, by id); the next pages the rest of the box by id. A walk
    through the next links visits each feature once, also when the first page ends inside
    a group of points at one place."""
    west, south, east, north = NEAR_BOX
    centre = ((west + east) / 2, (south + north) / 2)
    rng = np.random.default_rng(11)
    places = [centre] * 12 + [(centre[0] + 0.01, centre[1])] * 7  # two stacks of points
    places += [
        tuple(map(float, p)) for p in rng.uniform((west, south), (east, north), (21, 2)).round(6)
    ]
    rows = ["source,source_id,category,occurred_at,longitude,latitude"]
    rows += [
        f"{NEAR_SOURCE},n{i},theft,2024-02-01 10:00,{x!r},{y!r}" for i, (x, y) in enumerate(places)
    ]
    (path := tmp_path / "stacks.csv").write_text("\n".join(rows) + "\n")
    before = client.app.state.data_version.value
    assert import_csv(base_data, path).inserted == len(places)
    _wait_for_new_version(client, before)

    url = "/collections/incidents/items?" + urlencode(
        {"source": NEAR_SOURCE, "bbox": ",".join(map(repr, NEAR_BOX)), "limit": 8}
    )
    documents = list(_walk(client, keys["analyst"], url))
    pages = [[f["id"] for f in document["features"]] for document in documents]
    assert [len(p) for p in pages] == [8, 8, 8, 8, 8]
    where = {
        fid: (x, y)
        for fid, x, y in db.execute(
            "SELECT id, ST_X(geom), ST_Y(geom) FROM incident WHERE source = %s", (NEAR_SOURCE,)
        )
    }
    # The order, computed here from the stored coordinates: (squared distance, id).
    nearest = sorted(
        where, key=lambda i: ((where[i][0] - centre[0]) ** 2 + (where[i][1] - centre[1]) ** 2, i)
    )
    assert pages[0] == nearest[:8]  # 8 of the 12 points at the centre: ends inside a stack
    rest = [i for page in pages[1:] for i in page]
    assert rest == sorted(nearest[8:])  # each feature once, the rest by id

    after = [parse_qs(urlsplit(_link(d, "next")["href"]).query)["after"] for d in documents[:2]]
    assert after[0] == [f"0.0:{pages[0][-1]}"]  # the first page's last row
    assert after[1] == [f"0.0:{pages[0][-1]}:{pages[1][-1]}"]  # and the last id since
    assert all(d["numberMatched"] == len(places) for d in documents)


@pytest.mark.parametrize(
    "after", ["abc", "12", "-1.0:3", "nan:3", "0.5:x", "inf:1", "0.5:1:y", "0.5:1:2:3"]
)
def test_a_malformed_nearest_cursor_is_a_400(client, keys, after):
    response = client.get(
        "/collections/incidents/items",
        params={"bbox": ",".join(map(str, NEAR_BOX)), "after": after},
        headers=auth(keys["analyst"]),
    )
    assert response.status_code == 400
    assert "after" in _problem(response)["detail"]


def test_bbox_is_exact_on_its_edges(client, keys, db, incidents):
    """A point on the box's west edge is in the box; 1 ulp further east, it is out. The
    spatial index alone (``&&`` on float boxes) would take it too: the exact test decides."""
    fid, x, y = db.execute(
        "SELECT id, ST_X(geom), ST_Y(geom) FROM incident WHERE deleted_at IS NULL "
        "AND source = %s ORDER BY id LIMIT 1",
        (SOURCE,),
    ).fetchone()
    for west, inside in ((x, True), (float(np.nextafter(x, np.inf)), False)):
        box = (west, y - 0.01, x + 0.01, y + 0.01)
        page = _items(client, keys["analyst"], **_ours(bbox=",".join(map(repr, box))))
        ids = [f["id"] for f in page["features"]]
        assert (fid in ids) is inside
        assert page["numberMatched"] == len(ids) == _count(db, _SQL_BOX, box)


def test_a_filtered_page_is_the_same_read_either_way(db, incidents):
    """``ORDER BY id + 0`` (through the filters) and ``ORDER BY id`` (along the primary
    key) give the same page, after a cursor too; the service picks the cheaper one."""
    from sqlalchemy.dialects.postgresql import psycopg as pg

    from app.core.db import driver_statement
    from app.ogc.crs import parse_crs
    from app.sql.features import bbox_condition, filters_first, select_items

    layer = incidents_layer()
    out = parse_crs(None, 32616)
    visible = [f.name for f in layer.fields]
    conditions = [bbox_condition(layer, CITY_BOX, 4326)]
    pages = {}
    for first in (False, True):
        for after in (None, 0):
            select = select_items(
                layer, conditions, out, visible, after=after, limit=5, filter_first=first
            )
            late = {} if after is None else {"after": after}
            statement = driver_statement(select, pg.dialect(), **late)
            rows = db.execute(statement.sql, statement.params).fetchall()
            pages[first, after] = [r[0] for r in rows]
            assert pages[first, after] == sorted(pages[first, after])
    assert pages[False, None] == pages[True, None] and pages[False, 0] == pages[True, 0]
    assert pages[True, None] and len(pages[True, None]) <= 6
    # Few matches among many rows: through the filters; most rows match: along the key.
    assert filters_first(1_000, 1_000_000, 1_000)
    assert not filters_first(500_000, 1_000_000, 1_000)


def test_driver_statements_run_with_json_index_values(db, base_data):
    """Pages and tiles run on psycopg itself (``app.core.db.driver_statement``): a units layer's
    index values, one JSON parameter, reach PostgreSQL as JSON (a plain dict cannot be
    adapted: the bug the privacy matrix found)."""
    from sqlalchemy.dialects.postgresql import psycopg as pg
    from starlette.datastructures import QueryParams

    from app.core.db import driver_statement
    from app.ogc.crs import parse_crs
    from app.ogc.layers import IndexColumn, units_layer
    from app.security import PUBLIC
    from app.services.tiles import tile_statement
    from app.sql.features import select_items

    index = IndexColumn("vi-1", "Violence", "2024", 1, {"BZ-BZ": (0.5, 1, 3)})
    layer = units_layer(1, (index,))
    visible = [f.name for f in layer.fields]
    page = select_items(layer, [], parse_crs(None, 32616), visible, after=None, limit=10)
    statement = driver_statement(page, pg.dialect())
    features = [orjson.loads(r[1]) for r in db.execute(statement.sql, statement.params)]
    assert features and all("vi_1_score" in f["properties"] for f in features)
    belize = [f for f in features if f["properties"]["code"] == "BZ-BZ"]
    assert [f["properties"]["vi_1_score"] for f in belize] in ([], [0.5])
    tile = tile_statement(layer, PUBLIC, visible, QueryParams(""), base_data, clustered=False)
    statement = driver_statement(tile, pg.dialect(), z=5, x=7, y=14)
    assert db.execute(statement.sql, statement.params).fetchone()[0] is not None


@pytest.mark.parametrize(
    "bbox", ["1,2,3", "a,b,c,d", "1,2,3,4,5", "", "1,,2,3", "nan,0,1,1", "1,2,3,4,5,6,7"]
)
def test_invalid_bbox_is_a_problem(client, bbox):
    response = client.get("/collections/units-1/items", params={"bbox": bbox})
    assert response.status_code in (400, 422), response.text
    _problem(response)


def test_bbox_crs_epsg_4326_is_lat_lon_and_3857_is_metres(client, keys, db, incidents):
    analyst = keys["analyst"]
    west, south, east, north = CITY_BOX
    expected = [
        f["id"]
        for f in _items(client, analyst, **_ours(bbox=",".join(map(str, CITY_BOX))))["features"]
    ]
    # EPSG:4326 boxes are south, west, north, east (latitude first).
    lat_lon = _items(
        client,
        analyst,
        **_ours(bbox=f"{south},{west},{north},{east}", **{"bbox-crs": f"{EPSG}4326"}),
    )
    assert [f["id"] for f in lat_lon["features"]] == expected
    to_3857 = Transformer.from_crs(4326, 3857, always_xy=True)
    x0, y0 = to_3857.transform(west, south)
    x1, y1 = to_3857.transform(east, north)
    metres = _items(
        client, analyst, **_ours(bbox=f"{x0},{y0},{x1},{y1}", **{"bbox-crs": f"{EPSG}3857"})
    )
    # The same features; nearest first from the box's centre in its own CRS, so in an
    # order of their own (the middle of a 3857 box is not the middle of its 4326 one).
    assert sorted(f["id"] for f in metres["features"]) == sorted(expected)
    assert len(expected) == _count(db, _SQL_BOX, CITY_BOX)
    bad = client.get(
        "/collections/units-1/items", params={"bbox": "0,0,1,1", "bbox-crs": f"{EPSG}2154"}
    )
    assert bad.status_code == 400
    _problem(bad)


def test_datetime_instants_and_intervals(client, keys, db, incidents):
    analyst = keys["analyst"]
    instant = db.execute(
        "SELECT occurred_at FROM incident WHERE source = %s ORDER BY id LIMIT 1", (SOURCE,)
    ).fetchone()[0]
    start, end = "2022-07-01T00:00:00Z", "2023-06-30T23:59:59Z"
    cases = {
        instant.isoformat(): ("occurred_at = %s", (instant,)),
        f"{start}/{end}": ("occurred_at BETWEEN %s AND %s", (start, end)),
        f"../{end}": ("occurred_at <= %s", (end,)),
        f"{start}/..": ("occurred_at >= %s", (start,)),
        f"/{end}": ("occurred_at <= %s", (end,)),
        f"{start}/": ("occurred_at >= %s", (start,)),
        "../..": ("TRUE", ()),
        # QGIS writes half-open ranges with dummy bounds (compileExpressionNodeUsingPart1:
        # "0000-01-01T00:00:00Z/x" and "x/9999-12-31T00:00:00Z").
        f"0000-01-01T00:00:00Z/{end}": ("occurred_at <= %s", (end,)),
        f"{start}/9999-12-31T00:00:00Z": ("occurred_at >= %s", (start,)),
        "2023-01-01T00:00:00-06:00/2023-12-31T23:59:59.999-06:00": (
            "occurred_at >= '2023-01-01 06:00Z' AND occurred_at < '2024-01-01 06:00Z'",
            (),
        ),
    }
    for value, (where, params) in cases.items():
        expected = _count(db, where, params)
        page = _items(client, analyst, **_ours(datetime=value))
        assert page["numberMatched"] == len(page["features"]) == expected, value
    assert _count(db, "occurred_at = %s", (instant,)) >= 1
    assert 0 < _count(db, *cases[f"{start}/{end}"]) < N_INCIDENTS
    for bad in ("yesterday", "2024-13-01T00:00:00Z", f"{end}/{start}", "2024-01-01T00:00:00Z/x/y"):
        response = client.get(
            "/collections/incidents/items", params={"datetime": bad}, headers=auth(analyst)
        )
        assert response.status_code in (400, 422), bad
        _problem(response)


def test_property_equality_filters(client, keys, db, incidents):
    analyst = keys["analyst"]
    for params, where, args in (
        ({"category": "robbery"}, "category = %s", ("robbery",)),
        (
            {"victim_sex": "female", "category": "theft"},
            "victim_sex = 'female' AND category = 'theft'",
            (),
        ),
        ({"victim_age": "30"}, "victim_age = 30", ()),
        ({"source_id": "o'neill-003"}, "source_id = %s", ("o'neill-003",)),
        ({"category": "x'; DROP TABLE incident; --"}, "FALSE", ()),
    ):
        page = _items(client, analyst, **_ours(**params))
        assert page["numberMatched"] == len(page["features"]) == _count(db, where, args), params
    assert db.execute("SELECT to_regclass('incident') IS NOT NULL").fetchone()[0]
    bad = client.get(
        "/collections/incidents/items", params={"victim_age": "old"}, headers=auth(analyst)
    )
    assert bad.status_code in (400, 422)
    _problem(bad)


# --- CRS (Part 2) --------------------------------------------------------------------------


def test_output_crs_axis_order_and_content_crs(client, keys, incidents):
    analyst = keys["analyst"]
    params = _ours(limit=3)
    default = client.get("/collections/incidents/items", params=params, headers=auth(analyst))
    assert default.headers["content-crs"] == f"<{CRS84}>"
    lon_lat = [f["geometry"]["coordinates"] for f in default.json()["features"]]
    responses = {
        srid: client.get(
            "/collections/incidents/items",
            params={**params, "crs": f"{EPSG}{srid}"},
            headers=auth(analyst),
        )
        for srid in (4326, 3857, 32616)
    }
    for srid, response in responses.items():
        assert response.status_code == 200, response.text
        assert response.headers["content-crs"] == f"<{EPSG}{srid}>"
    # EPSG:4326 is latitude first.
    lat_lon = [f["geometry"]["coordinates"] for f in responses[4326].json()["features"]]
    assert lat_lon == [[y, x] for x, y in lon_lat]
    # Web Mercator and UTM 16N: the coordinates pyproj computes (to the centimetre the
    # service writes; the input coordinates are rounded to 1e-7 degrees, ~1 cm).
    for srid in (3857, 32616):
        transformer = Transformer.from_crs(4326, srid, always_xy=True)
        got = [f["geometry"]["coordinates"] for f in responses[srid].json()["features"]]
        for (x, y), (gx, gy) in zip(lon_lat, got, strict=True):
            ex, ey = transformer.transform(x, y)
            assert abs(gx - ex) < 0.05 and abs(gy - ey) < 0.05, (srid, gx, ex, gy, ey)
    # UTM 16N eastings lie within the zone's 166-834 km band; Belize is ~1.9 Mm north.
    east, north = responses[32616].json()["features"][0]["geometry"]["coordinates"]
    assert 166_000 < east < 834_000 and 1_750_000 < north < 2_050_000
    one_id = default.json()["features"][0]["id"]
    single = client.get(
        f"/collections/incidents/items/{one_id}",
        params={"crs": f"{EPSG}4326"},
        headers=auth(analyst),
    )
    assert single.headers["content-crs"] == f"<{EPSG}4326>"
    assert single.json()["geometry"]["coordinates"] == lat_lon[0]
    # The same CRS written as the CRS84 URI in angle brackets is accepted.
    bracketed = client.get("/collections/units-1/items", params={"crs": f"<{CRS84}>", "limit": 1})
    assert bracketed.status_code == 200


@pytest.mark.parametrize(
    "crs", [f"{EPSG}2154", "EPSG:4326", "urn:ogc:def:crs:EPSG::9999", "http://example.org/crs/1"]
)
def test_unsupported_crs_is_a_400(client, crs):
    response = client.get("/collections/units-1/items", params={"crs": crs})
    assert response.status_code == 400, response.text
    assert crs in _problem(response)["detail"]


# --- CQL2 (Part 3) -------------------------------------------------------------------------

_POLYGON = "POLYGON((-88.3 17.4, -88.1 17.4, -88.1 17.6, -88.3 17.6, -88.3 17.4))"
_RING = [[-88.3, 17.4], [-88.1, 17.4], [-88.1, 17.6], [-88.3, 17.6], [-88.3, 17.4]]
_SQL_CITY = "ST_Intersects(geom, ST_MakeEnvelope(-88.3, 17.4, -88.1, 17.6, 4326))"

CQL2_TEXT = [
    ("category = 'robbery'", "category = 'robbery'"),
    ("category <> 'robbery'", "category <> 'robbery'"),
    ("victim_age > 30", "victim_age > 30"),
    ("victim_age >= 30 AND victim_age < 60", "victim_age >= 30 AND victim_age < 60"),
    ("category LIKE 'rob%'", "category LIKE 'rob%'"),
    ("category NOT LIKE '%e%'", "category NOT LIKE '%e%'"),
    ("source_id LIKE 'oapif-00_'", "source_id LIKE 'oapif-00_'"),
    ("category IN ('robbery', 'theft')", "category IN ('robbery', 'theft')"),
    ("category NOT IN ('robbery', 'theft')", "category NOT IN ('robbery', 'theft')"),
    ("victim_age BETWEEN 20 AND 40", "victim_age BETWEEN 20 AND 40"),
    ("victim_age NOT BETWEEN 20 AND 40", "victim_age NOT BETWEEN 20 AND 40"),
    ("victim_age IS NULL", "victim_age IS NULL"),
    ("weapon IS NULL", "weapon IS NULL"),
    ("victim_age IS NOT NULL", "victim_age IS NOT NULL"),
    ("NOT victim_age IS NULL", "victim_age IS NOT NULL"),
    ("NOT (category = 'theft' OR victim_age < 18)", "NOT (category = 'theft' OR victim_age < 18)"),
    (
        "(category = 'theft' OR category = 'burglary') AND victim_sex = 'female'",
        "category IN ('theft', 'burglary') AND victim_sex = 'female'",
    ),
    ("occurred_at >= TIMESTAMP('2023-01-01T00:00:00Z')", "occurred_at >= '2023-01-01T00:00:00Z'"),
    # A DATE is a local day (Belize is UTC-6 all year): it starts at 06:00 UTC.
    ("occurred_at < DATE('2023-01-01')", "occurred_at < '2023-01-01T06:00:00Z'"),
    ("source_id = 'o''neill-003'", "source_id = 'o''neill-003'"),
    (f"S_INTERSECTS(geometry, {_POLYGON})", _SQL_CITY),
    ("S_INTERSECTS(geometry, BBOX(-88.3, 17.4, -88.1, 17.6))", _SQL_CITY),
    ("S_INTERSECTS(geometry, BBOX(-88.3, 17.4, -1, -88.1, 17.6, 1))", _SQL_CITY),
    (
        f"NOT S_INTERSECTS(geometry, {_POLYGON}) AND category = 'theft'",
        f"NOT {_SQL_CITY} AND category = 'theft'",
    ),
    # As QGIS writes them (QgsOapifCql2TextExpressionCompiler): every node in parentheses,
    # identifiers with underscores double-quoted, timestamps with milliseconds.
    (
        '(("victim_sex" = \'female\') AND (NOT (("victim_age" > 30))))',
        "victim_sex = 'female' AND NOT victim_age > 30",
    ),
    (
        "(\"occurred_at\" >= TIMESTAMP('2023-01-01T00:00:00.000Z'))",
        "occurred_at >= '2023-01-01T00:00:00Z'",
    ),
    ("S_INTERSECTS(geometry,BBOX(-88.3,17.4,-88.1,17.6))", _SQL_CITY),
    ("(\"source_id\" = 'o''neill-003')", "source_id = 'o''neill-003'"),
]


@pytest.mark.parametrize(("cql", "where"), CQL2_TEXT, ids=[c for c, _ in CQL2_TEXT])
def test_cql2_text_equals_sql(client, keys, db, incidents, cql, where):
    page = _items(client, keys["analyst"], **_ours(filter=cql, **{"filter-lang": "cql2-text"}))
    expected = _count(db, where)
    assert page["numberMatched"] == len(page["features"]) == expected
    assert expected > 0 or where == "FALSE"  # a filter that selects nothing proves little


def _p(name: str) -> dict:
    return {"property": name}


CQL2_JSON = [
    ({"op": "=", "args": [_p("category"), "robbery"]}, "category = 'robbery'"),
    ({"op": ">", "args": [_p("victim_age"), 30]}, "victim_age > 30"),
    ({"op": "like", "args": [_p("category"), "rob%"]}, "category LIKE 'rob%'"),
    (
        {"op": "in", "args": [_p("category"), ["robbery", "theft"]]},
        "category IN ('robbery', 'theft')",
    ),
    ({"op": "between", "args": [_p("victim_age"), 20, 40]}, "victim_age BETWEEN 20 AND 40"),
    ({"op": "isNull", "args": [_p("victim_age")]}, "victim_age IS NULL"),
    (
        {"op": "not", "args": [{"op": "isNull", "args": [_p("victim_age")]}]},
        "victim_age IS NOT NULL",
    ),
    (
        {
            "op": "and",
            "args": [
                {"op": ">=", "args": [_p("victim_age"), 18]},
                {
                    "op": "or",
                    "args": [
                        {"op": "=", "args": [_p("category"), "theft"]},
                        {"op": "=", "args": [_p("category"), "robbery"]},
                    ],
                },
            ],
        },
        "victim_age >= 18 AND category IN ('theft', 'robbery')",
    ),
    (
        {"op": ">=", "args": [_p("occurred_at"), {"timestamp": "2023-01-01T00:00:00Z"}]},
        "occurred_at >= '2023-01-01T00:00:00Z'",
    ),
    (
        {
            "op": "s_intersects",
            "args": [_p("geometry"), {"type": "Polygon", "coordinates": [_RING]}],
        },
        _SQL_CITY,
    ),
    (
        {"op": "s_intersects", "args": [_p("geometry"), {"bbox": [-88.3, 17.4, -88.1, 17.6]}]},
        _SQL_CITY,
    ),
    ({"op": "=", "args": [_p("category"), "x'; DROP TABLE incident; --"]}, "FALSE"),
]


@pytest.mark.parametrize(
    ("cql", "where"), CQL2_JSON, ids=[c["op"] + str(i) for i, (c, _) in enumerate(CQL2_JSON)]
)
def test_cql2_json_equals_sql(client, keys, db, incidents, cql, where):
    text = orjson.dumps(cql).decode()
    page = _items(client, keys["analyst"], **_ours(filter=text, **{"filter-lang": "cql2-json"}))
    expected = _count(db, where)
    assert page["numberMatched"] == len(page["features"]) == expected
    assert expected > 0 or where == "FALSE"
    # The language is also recognised without filter-lang.
    assert (
        _items(client, keys["analyst"], **_ours(filter=text))["numberMatched"]
        == page["numberMatched"]
    )


def test_filter_crs_for_geometry_literals(client, keys, db, incidents):
    analyst = keys["analyst"]
    unsupported = client.get(
        "/collections/incidents/items",
        params={"filter": "S_INTERSECTS(geometry, BBOX(0, 0, 1, 1))", "filter-crs": f"{EPSG}2154"},
        headers=auth(analyst),
    )
    assert unsupported.status_code == 400
    _problem(unsupported)
    expected = _count(db, _SQL_CITY)
    to_3857 = Transformer.from_crs(4326, 3857, always_xy=True)
    x0, y0 = to_3857.transform(-88.3, 17.4)
    x1, y1 = to_3857.transform(-88.1, 17.6)
    for cql, crs in (
        (f"S_INTERSECTS(geometry, BBOX({x0}, {y0}, {x1}, {y1}))", f"{EPSG}3857"),
        (
            f"S_INTERSECTS(geometry, POLYGON(({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, "
            f"{x0} {y0})))",
            f"{EPSG}3857",
        ),
        # EPSG:4326 literals are latitude first.
        ("S_INTERSECTS(geometry, BBOX(17.4, -88.3, 17.6, -88.1))", f"{EPSG}4326"),
        (
            "S_INTERSECTS(geometry, POLYGON((17.4 -88.3, 17.4 -88.1, 17.6 -88.1, 17.6 -88.3, "
            "17.4 -88.3)))",
            f"{EPSG}4326",
        ),
        ("S_INTERSECTS(geometry, BBOX(-88.3, 17.4, -88.1, 17.6))", CRS84),
    ):
        page = _items(client, analyst, **_ours(filter=cql, **{"filter-crs": crs}))
        assert page["numberMatched"] == expected, (cql, crs)
    # The output CRS does not change what a CRS84 filter selects.
    page = _items(
        client,
        analyst,
        **_ours(filter="S_INTERSECTS(geometry, BBOX(-88.3, 17.4, -88.1, 17.6))", crs=f"{EPSG}3857"),
    )
    assert page["numberMatched"] == expected


@pytest.mark.parametrize(
    ("cql", "lang"),
    [
        ("no_such_property = 1", None),
        ("category = 'x' AND secret > 2", None),
        ('{"op": "=", "args": [{"property": "nope"}, 1]}', "cql2-json"),
        ("category = ", None),
        ("category ==== 'x'", None),
        ("{not json", "cql2-json"),
        ("category = 'x'", "cql3-text"),
        ("attributes IS NULL", None),  # an object property is not queryable
        ("S_INTERSECTS(geometry, BBOX(1, 2, 3))", None),
        ("NO_SUCH_FUNCTION(category) = 'x'", None),
        # A literal of the wrong type is the caller's error, not a database error (500).
        ("victim_age = 'old'", None),
        ("category = 3", None),
        ("occurred_at > '2024-01-01'", None),
        ("victim_age LIKE '1%'", None),
        ('{"op": "between", "args": [{"property": "victim_age"}, 1, "x"]}', "cql2-json"),
    ],
)
def test_invalid_filters_are_400_problems(client, keys, incidents, cql, lang):
    params = {"filter": cql, **({"filter-lang": lang} if lang else {})}
    response = client.get(
        "/collections/incidents/items", params=params, headers=auth(keys["analyst"])
    )
    assert response.status_code == 400, response.text
    _problem(response)


@pytest.mark.parametrize(
    "cql",
    [
        "category = 'x''; DROP TABLE incident; --'",
        "category = 'x'' OR ''1''=''1'",
        "source_id LIKE '%''; DELETE FROM incident; --'",
        "\"category; DROP TABLE incident\" = 'x'",
    ],
)
def test_sql_injection_looking_filters_stay_parameters(client, keys, db, incidents, cql):
    before = _count(db)
    response = client.get(
        "/collections/incidents/items",
        params={"filter": cql, "source": SOURCE},
        headers=auth(keys["analyst"]),
    )
    # Either a literal that matches nothing, or an unknown property: never SQL.
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200:
        assert response.json()["numberMatched"] == 0
    assert db.execute("SELECT to_regclass('incident') IS NOT NULL").fetchone()[0]
    assert _count(db) == before == N_INCIDENTS


# --- links behind a proxy ------------------------------------------------------------------


@pytest.fixture
def proxied(base_data: Settings) -> Iterator[TestClient]:
    """The service behind one trusted proxy: only then do forwarded headers move links
    (from anyone else they are ignored: tests/integration/test_forwarded_links.py)."""
    settings = base_data.model_copy(update={"api": ApiSettings(trusted_proxy_hops=1)})
    with TestClient(create_app(settings)) as client:
        yield client


def test_links_honour_forwarded_headers(proxied, keys, incidents):
    client = proxied
    proxy = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "maps.example.org",
        "X-Forwarded-Prefix": "/observatory/",
    }
    base = "https://maps.example.org/observatory"
    landing = client.get("/", headers=proxy).json()
    assert {x["href"] for x in landing["links"]} >= {
        f"{base}/",
        f"{base}/api",
        f"{base}/conformance",
        f"{base}/collections",
    }
    assert all(x["href"].startswith(f"{base}/") for x in landing["links"])
    collections = client.get("/collections", headers=proxy).json()
    for c in collections["collections"]:
        assert all(x["href"].startswith(f"{base}/") for x in c["links"]), c["id"]
    page = client.get(
        "/collections/incidents/items",
        params={"source": SOURCE, "limit": 2},
        headers={**proxy, **auth(keys["analyst"])},
    ).json()
    nxt = _link(page, "next", GEOJSON)["href"]
    assert nxt.startswith(f"{base}/collections/incidents/items?"), nxt
    queryables = client.get("/collections/units-1/queryables", headers=proxy).json()
    assert queryables["$id"] == f"{base}/collections/units-1/queryables"
    # Without the headers the links name the host the client asked.
    assert client.get("/").json()["links"][0]["href"] == "http://testserver/"


# --- QGIS: the requests of "Add WFS / OGC API Features layer", replayed ------------------------


def test_qgis_connection_sequence(client, keys, db, incidents):
    """The requests QGIS's OAPIF provider makes when a layer is added, in its order
    (QgsOapifProvider::init, src/providers/wfs/oapif/qgsoapifprovider.cpp), each with the
    checks QGIS makes on the answer."""
    headers = auth(keys["analyst"])
    # 1. Landing page (QgsOapifLandingPageRequest): JSON with a service-desc link typed
    #    OpenAPI 3.0 and a data link typed application/json, else "Missing information".
    landing = client.get("/", headers={**headers, "Accept": JSON})
    assert landing.status_code == 200
    links = landing.json()["links"]
    api_url = _link({"links": links}, "service-desc", OPENAPI_30)["href"]
    collections_url = _link({"links": links}, "data", JSON)["href"].split("?")[0]
    conformance_url = _link({"links": links}, "conformance")["href"]

    # 2. The API (QgsOapifApiRequest): components.parameters.limit.schema maximum and
    #    default as JSON integers; QGIS pages by min(max(1000, default), maximum).
    api = client.get(
        api_url,
        headers={
            **headers,
            "Accept": f"{OPENAPI_30}, application/openapi+json;version=3.0, application/json",
        },
    )
    assert api.status_code == 200
    schema = api.json()["components"]["parameters"]["limit"]["schema"]
    assert isinstance(schema["maximum"], int) and isinstance(schema["default"], int)
    page_size = min(max(1000, schema["default"]), schema["maximum"])
    assert page_size >= 1000
    # Simple queryables from the items operation's parameters: only parameters with
    # in=query, style=form, explode=false and a schema type are taken, and limit must
    # resolve through its $ref with all of name/in/style/explode/schema present.
    operation = api.json()["paths"]["/collections/{collection_id}/items"]["get"]
    resolved = [
        api.json()["components"]["parameters"]["limit"] if "$ref" in p else p
        for p in operation["parameters"]
    ]
    limit = next(p for p in resolved if p["name"] == "limit")
    assert {"name", "in", "style", "explode", "schema"} <= set(limit)

    # 3. The collection: collectionsUrl + "/" + id, JSON; the first extent bbox and its crs
    #    become the layer extent; storageCrs (Part 2) becomes the layer CRS.
    collection = client.get(f"{collections_url}/incidents", headers={**headers, "Accept": JSON})
    assert collection.status_code == 200
    described = collection.json()
    assert described["id"] == "incidents"
    assert len(described["extent"]["spatial"]["bbox"][0]) in (4, 6)
    assert described["storageCrs"] == CRS84
    assert _link(described, "items", GEOJSON)

    # 4. Conformance: Part 2 for the CRS, and the CQL2 classes for server-side filters.
    conforms = client.get(conformance_url, headers=headers).json()["conformsTo"]
    assert f"{SPEC}/ogcapi-features-2/1.0/conf/crs" in conforms
    server_filters = {
        f"{SPEC}/cql2/1.0/conf/basic-cql2",
        f"{SPEC}/ogcapi-features-3/1.0/conf/filter",
        f"{SPEC}/ogcapi-features-3/1.0/conf/features-filter",
        f"{SPEC}/cql2/1.0/conf/cql2-text",
    }
    assert server_filters <= set(conforms)

    # 5. Queryables (only fetched because of 4): properties with a string "type" (and a
    #    "format" for date-times), the geometry as a $ref to https://geojson.org/schema/.
    queryables = client.get(
        f"{collections_url}/incidents/queryables",
        headers={**headers, "Accept": "application/schema+json"},
    ).json()["properties"]
    typed = {k for k, v in queryables.items() if isinstance(v.get("type"), str)}
    geometry = [
        k
        for k, v in queryables.items()
        if v.get("$ref", "").startswith("https://geojson.org/schema/")
    ]
    assert geometry == ["geometry"]
    assert {"category", "occurred_at", "victim_age"} <= typed
    assert queryables["occurred_at"]["format"] == "date-time"

    # 6. items?limit=10 (QgsOapifItemsRequest): GeoJSON that OGR reads, the fields and
    #    geometry type come from these features, and numberMatched an integer.
    items_url = f"{collections_url}/incidents/items"
    ten = client.get(f"{items_url}?limit=10", headers={**headers, "Accept": f"{GEOJSON}, {JSON}"})
    assert ten.status_code == 200 and ten.headers["content-type"].startswith(GEOJSON)
    body = ten.json()
    total = db.execute("SELECT count(*) FROM incident WHERE deleted_at IS NULL").fetchone()[0]
    assert body["numberMatched"] == total and isinstance(body["numberMatched"], int)
    assert len(body["features"]) == 10
    assert {f["geometry"]["type"] for f in body["features"]} == {"Point"}
    assert len({frozenset(f["properties"]) for f in body["features"]}) == 1
    assert all("id" in f for f in body["features"])  # mFoundIdTopLevel: stable ids

    # 7. featureCount(): items?limit=1 and its numberMatched.
    one = client.get(f"{items_url}?limit=1", headers=headers).json()
    assert one["numberMatched"] == total and len(one["features"]) == 1

    # 8. The download (QgsOapifFeatureDownloaderImpl): limit=page size, then the `next`
    #    link typed application/geo+json, until a page without one; with a filter QGIS
    #    built itself (datetime with a dummy bound, an equality, a CQL2 text filter).
    url = (
        f"{items_url}?limit={page_size}&datetime=2023-01-01T00:00:00.000Z%2F9999-12-31T00:00:00Z"
        f"&source={SOURCE}&filter=%28%22victim_age%22%20IS%20NOT%20NULL%29&filter-lang=cql2-text"
    )
    seen = [f["id"] for page in _walk(client, keys["analyst"], url) for f in page["features"]]
    expected = _count(db, "occurred_at >= '2023-01-01Z' AND victim_age IS NOT NULL")
    assert len(seen) == len(set(seen)) == expected > 0
    # ... and with small pages, as a user who sets "page size" to 10.
    small = [
        f["id"]
        for page in _walk(client, keys["analyst"], f"{items_url}?limit=10&source={SOURCE}")
        for f in page["features"]
    ]
    assert len(small) == len(set(small)) == N_INCIDENTS

    # 9. A map extent in a layer CRS of EPSG:4326 (Part 2): bbox lat/lon with bbox-crs
    #    and crs, coordinates back latitude first.
    west, south, east, north = CITY_BOX
    boxed = client.get(
        items_url,
        params={
            "limit": page_size,
            "source": SOURCE,
            "bbox": f"{south},{west},{north},{east}",
            "bbox-crs": f"{EPSG}4326",
            "crs": f"{EPSG}4326",
        },
        headers=headers,
    ).json()
    assert boxed["numberMatched"] == _count(db, _SQL_BOX, CITY_BOX)
    for f in boxed["features"]:
        lat, lon = f["geometry"]["coordinates"]
        assert south <= lat <= north and west <= lon <= east
