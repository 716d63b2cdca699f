"""OGC API Features (Part 1 core + GeoJSON + OpenAPI 3.0, Part 2 CRS, Part 3 CQL2 filters)
over the layers declared in ``app.ogc.layers``, so that QGIS and GDAL connect with a URL."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from app.access import queryable_fields, readable_layer, readable_layers, visible_fields
from app.core.errors import NotFound
from app.deps import CatalogDep, CollectionId, PrincipalDep, ReaderDep, SettingsDep
from app.ogc.crs import CRS84, parse_crs, supported_uris
from app.ogc.filters import feature_id as _feature_id
from app.ogc.items import crs_header, items_page
from app.ogc.layers import Layer
from app.ogc.links import absolute
from app.sql import features as sql

router = APIRouter(tags=["ogc"])

GEOJSON = "application/geo+json"
JSON = "application/json"
OPENAPI_30 = "application/vnd.oai.openapi+json;version=3.0"

_SPEC = "http://www.opengis.net/spec"
CONFORMANCE = [
    f"{_SPEC}/ogcapi-features-1/1.0/conf/core",
    f"{_SPEC}/ogcapi-features-1/1.0/conf/oas30",
    f"{_SPEC}/ogcapi-features-1/1.0/conf/geojson",
    f"{_SPEC}/ogcapi-features-2/1.0/conf/crs",
    f"{_SPEC}/ogcapi-features-3/1.0/conf/filter",
    f"{_SPEC}/ogcapi-features-3/1.0/conf/features-filter",
    f"{_SPEC}/ogcapi-features-3/1.0/conf/queryables",
    f"{_SPEC}/ogcapi-features-3/1.0/conf/queryables-query-parameters",
    f"{_SPEC}/cql2/1.0/conf/cql2-text",
    f"{_SPEC}/cql2/1.0/conf/cql2-json",
    f"{_SPEC}/cql2/1.0/conf/basic-cql2",
    f"{_SPEC}/cql2/1.0/conf/advanced-comparison-operators",
    f"{_SPEC}/cql2/1.0/conf/basic-spatial-functions",
    f"{_SPEC}/cql2/1.0/conf/basic-spatial-functions-plus",
    f"{_SPEC}/cql2/1.0/conf/spatial-functions",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tileset",
]
# --- landing, conformance, collections ------------------------------------------------------


@router.get("/", summary="Landing page (OGC API)")
async def landing(request: Request, settings: SettingsDep) -> dict[str, Any]:
    link = lambda path, rel, type_, title: {  # noqa: E731
        "href": absolute(request, path),
        "rel": rel,
        "type": type_,
        "title": title,
    }
    return {
        "title": f"Crime Observatory of {settings.territory.name}",
        "description": "Georeferenced incidents, hot spots and territorial violence indexes "
        "as OGC API Features collections, vector tiles, GeoJSON and tables.",
        "links": [
            link("/", "self", JSON, "This document"),
            link("/api", "service-desc", OPENAPI_30, "The API definition (OpenAPI 3.0)"),
            link("/docs", "service-doc", "text/html", "The API documentation"),
            link("/conformance", "conformance", JSON, "Conformance classes"),
            link("/collections", "data", JSON, "The collections"),
            link("/styles/default.json", "stylesheet", JSON, "MapLibre style of every layer"),
            link("/qgis/project.qgz", "alternate", "application/zip", "A QGIS project"),
        ],
    }


@router.get("/conformance", summary="Conformance classes")
async def conformance() -> dict[str, list[str]]:
    return {"conformsTo": CONFORMANCE}


def collection_document(
    request: Request, layer: Layer, settings, extent: tuple | None = None
) -> dict[str, Any]:
    base = f"/collections/{layer.id}"
    document: dict[str, Any] = {
        "id": layer.id,
        "title": layer.title,
        "description": layer.description,
        "keywords": list(layer.keywords),
        "itemType": "feature",
        "crs": supported_uris(settings.territory.projected_crs),
        "storageCrs": CRS84,
        "links": [
            {"href": absolute(request, base), "rel": "self", "type": JSON, "title": layer.title},
            {
                "href": absolute(request, f"{base}/items"),
                "rel": "items",
                "type": GEOJSON,
                "title": "Features",
            },
            {
                "href": absolute(request, f"{base}/queryables"),
                "rel": "http://www.opengis.net/def/rel/ogc/1.0/queryables",
                "type": "application/schema+json",
                "title": "Queryable properties",
            },
            {
                "href": absolute(request, f"/tiles/{layer.id}.json"),
                "rel": "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector",
                "type": JSON,
                "title": "Vector tiles (TileJSON 3.0)",
            },
            {
                "href": absolute(request, f"/styles/{layer.id}.qml"),
                "rel": "describedby",
                "type": "text/xml",
                "title": "QGIS style (QML)",
            },
            {
                "href": absolute(request, f"/styles/{layer.id}.sld"),
                "rel": "describedby",
                "type": "application/vnd.ogc.sld+xml",
                "title": "OGC SLD style",
            },
            {
                "href": absolute(request, f"{base}/styles"),
                "rel": "http://www.opengis.net/def/rel/ogc/1.0/styles",
                "type": JSON,
                "title": "Styles of this collection",
            },
        ],
    }
    if extent is not None:
        spatial = {"bbox": [list(extent[:4])], "crs": CRS84}
        document["extent"] = {"spatial": spatial}
        if layer.datetime_field is not None and len(extent) == 6:
            interval = [v.isoformat() if v is not None else None for v in extent[4:]]
            document["extent"]["temporal"] = {
                "interval": [interval],
                "trs": "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian",
            }
    return document


@router.get("/collections", summary="The collections the caller may read")
async def collections(
    request: Request, settings: SettingsDep, catalog: CatalogDep, who: PrincipalDep
) -> dict[str, Any]:
    layers = await readable_layers(catalog, who)
    return {
        "links": [
            {"href": absolute(request, "/collections"), "rel": "self", "type": JSON},
        ],
        "collections": [
            collection_document(request, layer, settings, await catalog.extent(layer))
            for layer in layers
        ],
    }


@router.get("/collections/{collection_id}", summary="One collection")
async def collection(
    request: Request,
    collection_id: CollectionId,
    settings: SettingsDep,
    catalog: CatalogDep,
    who: PrincipalDep,
) -> dict[str, Any]:
    layer = await readable_layer(catalog, collection_id, who)
    return collection_document(request, layer, settings, await catalog.extent(layer))


@router.get("/collections/{collection_id}/queryables", summary="Properties a filter may use")
async def queryables(
    request: Request, collection_id: CollectionId, catalog: CatalogDep, who: PrincipalDep
) -> Response:
    layer = await readable_layer(catalog, collection_id, who)
    # Only what this caller may filter on: a withheld field is not listed, and a filter
    # on it is refused (app.ogc.filters) exactly as one on a field that does not exist.
    # The geometry both ways: Part 3's ``format`` and a ``$ref`` to the GeoJSON schema,
    # the only form QGIS takes as the geometry its spatial filters may name
    # (QgsOapifQueryablesRequest::processReply); without it QGIS filters map extents
    # on the client.
    properties: dict[str, Any] = {
        "geometry": {
            "$ref": f"https://geojson.org/schema/{layer.geometry_type}.json",
            "format": f"geometry-{layer.geometry_type.lower()}",
            "x-ogc-role": "primary-geometry",
        }
    }
    for f in queryable_fields(layer, who):
        schema: dict[str, Any] = (
            {"type": "string", "format": "date-time"} if f.type == "date-time" else {"type": f.type}
        )
        if f.description:
            schema["description"] = f.description
        properties[f.name] = {"title": f.name, **schema}
    body = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": absolute(request, f"/collections/{layer.id}/queryables"),
        "type": "object",
        "title": layer.title,
        "properties": properties,
        "additionalProperties": False,
    }
    return Response(orjson.dumps(body), media_type="application/schema+json")


# --- items ---------------------------------------------------------------------------------


@router.get(
    "/collections/{collection_id}/items",
    summary="Features of a collection (GeoJSON), filtered and paged",
    response_class=StreamingResponse,
    responses={200: {"content": {GEOJSON: {}}}},
)
async def items(
    request: Request,
    collection_id: CollectionId,
    catalog: CatalogDep,
    who: PrincipalDep,
    limit: Annotated[
        int | None, Query(ge=1, description="page size; above the maximum it is clamped")
    ] = None,
    bbox: Annotated[
        str | None, Query(description="minx,miny,maxx,maxy (or 6 numbers) in bbox-crs")
    ] = None,
    bbox_crs: Annotated[str | None, Query(alias="bbox-crs")] = None,
    datetime_: Annotated[
        str | None, Query(alias="datetime", description="instant or start/end, '..' open")
    ] = None,
    crs: Annotated[str | None, Query(description="output CRS URI (default CRS84)")] = None,
    filter_: Annotated[str | None, Query(alias="filter", description="CQL2 text or JSON")] = None,
    filter_lang: Annotated[str | None, Query(alias="filter-lang")] = None,
    filter_crs: Annotated[str | None, Query(alias="filter-crs")] = None,
    after: Annotated[str | None, Query(description="cursor: the next link sets it")] = None,
) -> Response:
    layer = await readable_layer(catalog, collection_id, who)
    return await items_page(request, catalog, layer, who, limit=limit, crs=crs, after=after)


@router.get(
    "/collections/{collection_id}/items/{feature_id}",
    summary="One feature",
    responses={200: {"content": {GEOJSON: {}}}},
)
async def item(
    request: Request,
    collection_id: CollectionId,
    feature_id: str,
    settings: SettingsDep,
    reader: ReaderDep,
    catalog: CatalogDep,
    who: PrincipalDep,
    crs: Annotated[str | None, Query(description="output CRS URI (default CRS84)")] = None,
) -> Response:
    layer = await readable_layer(catalog, collection_id, who)
    out = parse_crs(crs, settings.territory.projected_crs)
    statement = sql.select_item(
        layer, _feature_id(layer, feature_id), out, visible_fields(layer, who)
    )
    async with reader.connect() as conn:
        feature = (await conn.execute(statement)).scalar()
    if feature is None:
        raise NotFound(f"No feature {feature_id!r} in {layer.id}.")
    base = f"/collections/{layer.id}"
    links = [
        {"href": absolute(request, f"{base}/items/{feature_id}"), "rel": "self", "type": GEOJSON},
        {"href": absolute(request, base), "rel": "collection", "type": JSON},
    ]
    body = feature[:-1] + ',"links":' + orjson.dumps(links).decode() + "}"
    return Response(body, media_type=GEOJSON, headers=crs_header(out))
