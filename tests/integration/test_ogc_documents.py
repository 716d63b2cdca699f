"""The OGC API and TileJSON documents follow the models they are built from.

Every document is validated against its model in ``app.schemas.ogc`` (unknown keys are
refused) and written back: the round trip must give the same JSON, so no key the service
sends is missing from the models. The OpenAPI definitions name the models as the
responses' schemas, and each route's docstring is its description.
"""

from __future__ import annotations

import inspect
import time
from datetime import datetime
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel

from app.core.settings import Settings
from app.routers import features, styles, tiles
from app.schemas.ogc import (
    Collection,
    Collections,
    Conformance,
    Landing,
    Link,
    Queryables,
    TileJSON,
    TileSets,
)
from app.schemas.ogc import Styles as StyleList
from tests.conftest import auth
from tests.integration.helpers import import_csv, write_incident_csv

JSON = "application/json"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
SOURCE = "ogc-documents-test"


@pytest.fixture(scope="module")
def incidents(client: TestClient, base_data: Settings, tmp_path_factory) -> int:
    """A few incidents, so that the incidents layer has a spatial and temporal extent."""
    before = client.app.state.data_version.value
    path = write_incident_csv(tmp_path_factory.mktemp("ogc") / "i.csv", n=12, source=SOURCE)
    assert import_csv(base_data, path).inserted == 12
    deadline = time.monotonic() + 10
    while client.app.state.data_version.value == before:  # the service saw the write
        assert time.monotonic() < deadline, "the service never saw the new incidents"
        time.sleep(0.02)
    return 12


def _document(
    client: TestClient, model: type[BaseModel], url: str, key: str | None = None, media=JSON
) -> Any:
    """GET ``url``, validate the body against ``model`` and check the round trip."""
    response = client.get(url, headers=auth(key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media
    body = response.json()
    document = model.model_validate(body)
    assert document.model_dump(mode="json", exclude_none=True) == body
    return document


def test_landing_page_and_conformance(client):
    landing = _document(client, Landing, "/")
    assert {link.rel for link in landing.links} >= {
        "self",
        "service-desc",
        "service-doc",
        "conformance",
        "data",
    }
    assert all(link.href.startswith("http://testserver/") for link in landing.links)
    conformance = _document(client, Conformance, "/conformance")
    assert "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core" in (
        conformance.conforms_to
    )


@pytest.mark.parametrize("role", [None, "analyst"])
def test_collections_and_each_collection(client, keys, incidents, role):
    key = keys[role] if role else None
    listing = _document(client, Collections, "/collections", key)
    ids = [c.id for c in listing.collections]
    assert ("incidents" in ids) is (role == "analyst")  # analysts and above only
    assert "units-1" in ids
    for entry in listing.collections:
        # The entry of the list and the collection's own document are the same.
        assert _document(client, Collection, f"/collections/{entry.id}", key) == entry
        assert entry.item_type == "feature" and entry.storage_crs == CRS84
        west, south, east, north = entry.extent.spatial.bbox[0]
        # Belize, with a margin: grid cells of a run and incidents within the import's
        # tolerance reach past the outline (an H3 cell on the western border: -89.319).
        assert -89.4 < west < east < -87.3 and 15.7 < south < north < 18.7
    if role == "analyst":
        incidents_ = listing.collections[ids.index("incidents")]
        first, last = incidents_.extent.temporal.interval[0]
        assert datetime.fromisoformat(first) <= datetime.fromisoformat(last)
        # write_incident_csv draws times in 2022-2024; other modules' incidents of the
        # session's database may only widen the interval.
        assert first[:4] <= "2022" and last[:4] >= "2024"
    units = listing.collections[ids.index("units-1")]
    assert units.extent.temporal is None  # no datetime field: no temporal extent


def test_queryables(client, keys, incidents):
    queryables = _document(
        client,
        Queryables,
        "/collections/incidents/queryables",
        keys["analyst"],
        media="application/schema+json",
    )
    assert queryables.id == "http://testserver/collections/incidents/queryables"
    geometry = queryables.properties["geometry"]
    assert geometry.ref == "https://geojson.org/schema/Point.json"
    assert geometry.format == "geometry-point" and geometry.x_ogc_role == "primary-geometry"
    occurred = queryables.properties["occurred_at"]
    assert (occurred.type, occurred.format) == ("string", "date-time")
    assert queryables.properties["category"].format is None


def test_tilejson_and_tilesets(client, keys, incidents):
    tilejson = _document(
        client, TileJSON, "/tiles/incidents.json?category=homicide", keys["analyst"]
    )
    assert tilejson.tiles == ["http://testserver/tiles/incidents/{z}/{x}/{y}.mvt?category=homicide"]
    west, south, east, north = tilejson.bounds
    lon, lat, zoom = tilejson.center
    assert west <= lon <= east and south <= lat <= north and zoom == 7
    (layer,) = tilejson.vector_layers
    assert layer.id == "incidents" and "count" in layer.fields
    tilesets = _document(client, TileSets, "/collections/units-1/tiles")
    (tileset,) = tilesets.tilesets
    template = next(link for link in tileset.links if link.rel == "item")
    assert template.templated is True
    assert template.href.endswith("/WebMercatorQuad/{tileMatrix}/{tileRow}/{tileCol}")


def test_styles_list(client):
    styles = _document(client, StyleList, "/collections/units-1/styles")
    assert styles.default == "default"
    (style,) = styles.styles
    assert [link.rel for link in style.links] == ["stylesheet"] * 3


def test_a_field_that_is_none_is_left_out_not_null():
    link = Link(href="http://x/", rel="self")
    assert link.model_dump(mode="json", exclude_none=True) == {"href": "http://x/", "rel": "self"}
    # The schema says what a present field holds: a string, not "string or null".
    assert Link.model_json_schema()["properties"]["type"]["type"] == "string"


_DOCUMENTS = {
    "/": ("Landing", JSON),
    "/conformance": ("Conformance", JSON),
    "/collections": ("Collections", JSON),
    "/collections/{collection_id}": ("Collection", JSON),
    "/collections/{collection_id}/queryables": ("Queryables", "application/schema+json"),
    "/tiles/{layer_id}.json": ("TileJSON", JSON),
    "/collections/{collection_id}/tiles": ("TileSets", JSON),
    "/collections/{collection_id}/styles": ("Styles", JSON),
}


def _property_names(schema: Any) -> set[str]:
    """Every property name declared in a JSON Schema and its subschemas."""
    if not isinstance(schema, dict):
        return set()
    properties = schema.get("properties", {})
    names = set(properties)
    subschemas = [*properties.values(), schema.get("items"), schema.get("additionalProperties")]
    for keyword in ("anyOf", "allOf", "oneOf"):
        subschemas += schema.get(keyword, [])
    return names.union(*map(_property_names, subschemas))


@pytest.mark.parametrize("url", ["/api", "/openapi.json"])
def test_openapi_shows_the_document_schemas(client, url):
    document = client.get(url).json()
    for path, (name, media) in _DOCUMENTS.items():
        content = document["paths"][path]["get"]["responses"]["200"]["content"]
        assert content[media]["schema"] == {"$ref": f"#/components/schemas/{name}"}, path
        assert name in document["components"]["schemas"]
    # A property named $ref is taken for a reference by Swagger UI's resolver.
    components = document["components"]["schemas"]
    assert "$id" in _property_names(components["Queryables"])  # the walk finds names
    assert not any("$ref" in _property_names(schema) for schema in components.values())


def test_every_route_has_a_docstring_and_it_is_the_description(client):
    operations = client.get("/openapi.json").json()["paths"]
    for module in (features, tiles, styles):
        for route in module.router.routes:
            assert isinstance(route, APIRoute)
            doc = inspect.getdoc(route.endpoint)
            assert doc, f"{module.__name__}.{route.endpoint.__name__} has no docstring"
            (method,) = route.methods
            assert operations[route.path][method.lower()]["description"] == doc
