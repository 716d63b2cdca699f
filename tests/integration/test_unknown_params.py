"""Every route refuses a query parameter it does not declare (issue 16, point 1): 400
``application/problem+json`` naming it and the nearest known name, from the parameters
each operation declares in the OpenAPI document (``app.core.query``); the OGC items and
tile routes answer from the caller's queryables (``app.ogc.filters``)."""

from __future__ import annotations

import re

import pytest

from app.core.settings import Settings
from app.main import create_app
from tests.conftest import auth

PROBLEM = "application/problem+json"
BOGUS = "nosuchparam"

# Values for the path parameters of every operation: the routes that check names only
# after finding the layer (items, tiles, TileJSON) need a real, public one.
PATH_VALUES = {
    "collection_id": "units-1",
    "layer_id": "units-1",
    "z": "0",
    "x": "0",
    "y": "0",
}


def _operations() -> list[tuple[str, str, list[str]]]:
    """(method, path template, declared query names) of every operation in the OpenAPI
    document, read from an app that needs no database to describe itself."""
    document = create_app(Settings(environment="test", analysis={"warm_up": False})).openapi()
    out = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            out.append((method.upper(), path, names))
    return out


OPERATIONS = _operations()


def _url(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES.get(m.group(1), "1"), template)


def _refused(response, name: str) -> str:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert f"`{name}`" in body["detail"], body
    return body["detail"]


def test_the_operations_are_all_there():
    """The parametrisation below covers the whole API, not a stale list."""
    gets = {path for method, path, _ in OPERATIONS if method == "GET"}
    assert {"/incidents", "/stats", "/rankings", "/units", "/analyses", "/api"} <= gets
    assert "/collections/{collection_id}/items" in gets
    assert "/tiles/{layer_id}/{z}/{x}/{y}.mvt" in gets
    assert len(OPERATIONS) > 50


@pytest.mark.parametrize(
    ("method", "template", "names"),
    OPERATIONS,
    ids=[f"{m} {p}" for m, p, _ in OPERATIONS],
)
def test_every_operation_refuses_an_unknown_parameter(client, keys, method, template, names):
    """One bogus parameter, every operation of the OpenAPI document, with an admin key
    (so that no route refuses the caller first): 400 naming it. The declared ones are
    listed in the answer, exactly those of the OpenAPI document."""
    response = client.request(
        method, _url(template), params={BOGUS: "1"}, headers=auth(keys["admin"])
    )
    detail = _refused(response, BOGUS)
    if "queryables" in names:  # free-form: the layer's own answer
        assert detail.startswith(f"`{BOGUS}` is not a queryable property of units-1")
    elif names:
        declared = [n for n in names if n != "queryables"]
        assert detail.endswith(f"; it takes: {', '.join(sorted(declared))}."), detail
    else:
        assert detail.endswith("; it takes none."), detail


GETS_WITH_PARAMETERS = [(p, n) for m, p, n in OPERATIONS if m == "GET" and n]


@pytest.mark.parametrize(
    ("template", "names"), GETS_WITH_PARAMETERS, ids=[p for p, _ in GETS_WITH_PARAMETERS]
)
def test_a_nul_in_any_parameter_is_a_400(client, keys, template, names):
    """PostgreSQL text cannot hold NUL: a NUL in any parameter of any route is a 400 that
    names it, never the 500 of a refused statement (``/audit?actor=%00`` was one)."""
    name = next((n for n in names if n != "queryables"), "category")
    response = client.get(_url(template), params={name: "a\x00b"}, headers=auth(keys["admin"]))
    assert response.status_code == 400, (template, name, response.text)
    assert response.headers["content-type"] == PROBLEM
    assert "NUL" in response.json()["detail"]


GETS_WITH_PATH_PARAMETERS = [p for m, p, _ in OPERATIONS if m == "GET" and "{" in p]


@pytest.mark.parametrize("template", GETS_WITH_PATH_PARAMETERS)
def test_a_nul_in_any_path_parameter_is_a_400(client, keys, template):
    """The same for a NUL in a path (``/units/%00`` was a 500), every GET with one."""
    url = re.sub(r"\{(\w+)\}", "a%00", template, count=1)
    url = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES.get(m.group(1), "1"), url)
    response = client.get(url, headers=auth(keys["admin"]))
    assert response.status_code in (400, 404, 422), (url, response.text)
    assert response.headers["content-type"] == PROBLEM


def test_misspelt_incident_filter_is_refused_with_the_right_name(client, keys):
    """The case of the issue: one ``c`` short, and the answer was every incident."""
    for key in (keys["analyst"], None):  # refused before the key is even looked at
        response = client.get(
            "/incidents", params={"ocurred_from": "2024-01-01"}, headers=auth(key)
        )
        detail = _refused(response, "ocurred_from")
        assert detail.startswith(
            "GET /incidents has no query parameter `ocurred_from` "
            "(did you mean `occurred_from`?); it takes: "
        )
        assert "occurred_to" in detail and "category" in detail
    spelt = client.get(
        "/incidents", params={"occurred_from": "2024-01-01"}, headers=auth(keys["analyst"])
    )
    assert spelt.status_code == 200, spelt.text


def test_several_unknown_parameters_are_all_named(client):
    response = client.get("/units", params={"levle": "1", "simplfy": "10", "zzz": "1"})
    detail = _refused(response, "levle")
    assert detail == (
        "GET /units has no query parameters `levle` (did you mean `level`?), "
        "`simplfy` (did you mean `simplify`?), `zzz`; it takes: level, simplify."
    )


@pytest.mark.parametrize(
    ("url", "params", "name", "suggested"),
    [
        ("/stats", {"level": "1", "by": "category", "catgory": "theft"}, "catgory", "category"),
        ("/rankings", {"indx": "x"}, "indx", "index"),
        ("/units", {"level": "1", "simplify_m": "10"}, "simplify_m", "simplify"),
        ("/analyses", {"limt": "5"}, "limt", "limit"),
        ("/qgis/project.qgz", {"embedkey": "false"}, "embedkey", "embed_key"),
        ("/collections", {"f": "json"}, "f", None),
        ("/api", {"f": "json"}, "f", None),
    ],
)
def test_other_routes_refuse_a_misspelt_parameter(client, keys, url, params, name, suggested):
    detail = _refused(client.get(url, params=params, headers=auth(keys["analyst"])), name)
    if suggested:
        assert f"(did you mean `{suggested}`?)" in detail
    else:
        assert "did you mean" not in detail


@pytest.mark.parametrize(
    ("url", "params"),
    [
        ("/units", {"level": "1", "simplify": "0.01"}),
        ("/stats", {"level": "1", "by": "category"}),
        ("/analyses", {"limit": "5"}),
        ("/collections/units-1/items", {"limit": "2", "f": "json", "name": "Belize"}),
        ("/collections/units-1/items", {"bbox": "-89,16,-88,17", "bbox-crs": None}),
        ("/tiles/units-1.json", {"level": "1"}),
        ("/tiles/units-1/0/0/0.mvt", {"level": "1"}),
        ("/collections/units-1/tiles/WebMercatorQuad/0/0/0", {"datetime": None}),
        ("/qgis/project.qgz", {"embed_key": "false"}),
    ],
)
def test_declared_parameters_still_pass(client, keys, url, params):
    params = {k: v for k, v in params.items() if v is not None}
    response = client.get(url, params=params, headers=auth(keys["analyst"]))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("url", "name", "suggested"),
    [
        ("/collections/units-1/items", "datetme", "datetime"),
        ("/collections/units-1/items", "nmae", "name"),
        ("/collections/units-1/items", "limits", "limit"),
        ("/tiles/units-1.json", "levl", "level"),
        ("/tiles/units-1/5/7/14.mvt", "levl", "level"),
        ("/collections/units-1/tiles/WebMercatorQuad/5/14/7", "filtr", "filter"),
    ],
)
def test_ogc_routes_suggest_from_the_callers_queryables(client, url, name, suggested):
    """Items and tiles take property filters by name; a misspelt one is refused with the
    queryables the caller may use, and the nearest of them or of the reserved names."""
    detail = _refused(client.get(url, params={name: "1"}), name)
    assert detail.startswith(
        f"`{name}` is not a queryable property of units-1 (did you mean `{suggested}`?); "
        "you may filter on: "
    ), detail


def test_the_api_definition_declares_the_property_filters(client):
    """The free-form parameter that tells clients (and ``app.core.query``) that the items
    and tile routes take other names, in both OpenAPI documents."""
    for document in (client.get("/openapi.json").json(), client.get("/api").json()):
        for path in (
            "/collections/{collection_id}/items",
            "/tiles/{layer_id}/{z}/{x}/{y}.mvt",
            "/collections/{collection_id}/tiles/WebMercatorQuad/{z}/{y}/{x}",
            "/tiles/{layer_id}.json",
        ):
            parameters = document["paths"][path]["get"]["parameters"]
            (free,) = [p for p in parameters if p.get("name") == "queryables"]
            assert free["in"] == "query" and free["style"] == "form" and free["explode"]
            assert free["schema"]["type"] == "object"
        units = document["paths"]["/units"]["get"]["parameters"]
        assert not [p for p in units if p.get("schema", {}).get("type") == "object"]


def test_pages_docs_and_static_files_are_not_checked(client):
    """Outside the OpenAPI document: the pages read their own query string in the
    browser (``/map?period=``), and the docs and static files are no API operation."""
    for url, params in (
        ("/map", {"period": "2024"}),
        ("/docs", {"v": "1"}),
        ("/openapi.json", {"v": "1"}),
        ("/static/js/api.js", {"v": "1"}),
    ):
        response = client.get(url, params=params)
        assert response.status_code == 200, (url, response.text)
    html = client.get("/rankings", params={"index": "x"}, headers={"Accept": "text/html"})
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
