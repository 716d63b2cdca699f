"""OGC API Features (Part 1 core + GeoJSON + OpenAPI 3.0, Part 2 CRS, Part 3 CQL2 filters)
over the layers declared in ``app.ogc.layers``, so that QGIS and GDAL connect with a URL."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from app.access import queryable_fields, readable_layer, readable_layers, visible_fields
from app.core.errors import NotFound
from app.core.settings import Settings
from app.deps import CatalogDep, CollectionId, PrincipalDep, ReaderDep, SettingsDep
from app.ogc.crs import CRS84, parse_crs, supported_uris
from app.ogc.filters import PROPERTY_FILTERS
from app.ogc.filters import feature_id as _feature_id
from app.ogc.items import crs_header, items_page
from app.ogc.layers import Layer
from app.ogc.links import absolute
from app.schemas.ogc import (
    Collection,
    Collections,
    Conformance,
    Extent,
    Landing,
    Link,
    Queryable,
    Queryables,
    Spatial,
    Temporal,
)
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


@router.get("/", summary="Landing page (OGC API)", response_model_exclude_none=True)
async def landing(request: Request, settings: SettingsDep) -> Landing:
    """The landing page: links to the API definition, conformance and the collections."""

    def link(path: str, rel: str, type_: str, title: str) -> Link:
        return Link(href=absolute(request, path), rel=rel, type=type_, title=title)

    return Landing(
        title=f"Crime Observatory of {settings.territory.name}",
        description="Georeferenced incidents, hot spots and territorial violence indexes "
        "as OGC API Features collections, vector tiles, GeoJSON and tables.",
        links=[
            link("/", "self", JSON, "This document"),
            link("/api", "service-desc", OPENAPI_30, "The API definition (OpenAPI 3.0)"),
            link("/docs", "service-doc", "text/html", "The API documentation"),
            link("/conformance", "conformance", JSON, "Conformance classes"),
            link("/collections", "data", JSON, "The collections"),
            link("/styles/default.json", "stylesheet", JSON, "MapLibre style of every layer"),
            link("/qgis/project.qgz", "alternate", "application/zip", "A QGIS project"),
        ],
    )


_CONFORMANCE = Conformance(conforms_to=CONFORMANCE)  # built once: it never changes


@router.get("/conformance", summary="Conformance classes")
async def conformance() -> Conformance:
    """The conformance classes: OGC API Features Parts 1-3, CQL2 and OGC API Tiles."""
    return _CONFORMANCE


def collection_document(
    request: Request, layer: Layer, settings: Settings, extent: tuple | None = None
) -> Collection:
    """The collection of a layer: its CRS, its links and (when it has rows) its extent."""
    base = f"/collections/{layer.id}"

    def link(path: str, rel: str, type_: str, title: str) -> Link:
        return Link(href=absolute(request, path), rel=rel, type=type_, title=title)

    return Collection(
        id=layer.id,
        title=layer.title,
        description=layer.description,
        keywords=list(layer.keywords),
        crs=supported_uris(settings.territory.projected_crs),
        storage_crs=CRS84,
        links=[
            link(base, "self", JSON, layer.title),
            link(f"{base}/items", "items", GEOJSON, "Features"),
            link(
                f"{base}/queryables",
                "http://www.opengis.net/def/rel/ogc/1.0/queryables",
                "application/schema+json",
                "Queryable properties",
            ),
            link(
                f"/tiles/{layer.id}.json",
                "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector",
                JSON,
                "Vector tiles (TileJSON 3.0)",
            ),
            link(f"/styles/{layer.id}.qml", "describedby", "text/xml", "QGIS style (QML)"),
            link(
                f"/styles/{layer.id}.sld",
                "describedby",
                "application/vnd.ogc.sld+xml",
                "OGC SLD style",
            ),
            link(
                f"{base}/styles",
                "http://www.opengis.net/def/rel/ogc/1.0/styles",
                JSON,
                "Styles of this collection",
            ),
        ],
        extent=None if extent is None else _extent(layer, extent),
    )


def _extent(layer: Layer, extent: tuple) -> Extent:
    """(west, south, east, north[, first, last]) as an OGC extent (time as ISO 8601)."""
    temporal = None
    if layer.datetime_field is not None and len(extent) == 6:
        interval = [v.isoformat() if v is not None else None for v in extent[4:]]
        temporal = Temporal(
            interval=[interval], trs="http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"
        )
    return Extent(spatial=Spatial(bbox=[list(extent[:4])], crs=CRS84), temporal=temporal)


@router.get(
    "/collections", summary="The collections the caller may read", response_model_exclude_none=True
)
async def collections(
    request: Request, settings: SettingsDep, catalog: CatalogDep, who: PrincipalDep
) -> Collections:
    """The collections this caller may read (layers behind a role are left out)."""
    layers = await readable_layers(catalog, who)
    return Collections(
        links=[Link(href=absolute(request, "/collections"), rel="self", type=JSON)],
        collections=[
            collection_document(request, layer, settings, await catalog.extent(layer))
            for layer in layers
        ],
    )


@router.get(
    "/collections/{collection_id}", summary="One collection", response_model_exclude_none=True
)
async def collection(
    request: Request,
    collection_id: CollectionId,
    settings: SettingsDep,
    catalog: CatalogDep,
    who: PrincipalDep,
) -> Collection:
    """One collection: its CRS, links and extent (404 if unknown, 401/403 if not readable)."""
    layer = await readable_layer(catalog, collection_id, who)
    return collection_document(request, layer, settings, await catalog.extent(layer))


class SchemaJSONResponse(JSONResponse):
    """JSON typed ``application/schema+json`` (Part 3 queryables)."""

    media_type = "application/schema+json"


@router.get(
    "/collections/{collection_id}/queryables",
    summary="Properties a filter may use",
    response_class=SchemaJSONResponse,
    response_model_exclude_none=True,
)
async def queryables(
    request: Request, collection_id: CollectionId, catalog: CatalogDep, who: PrincipalDep
) -> Queryables:
    """The properties this caller may filter the collection on, as a JSON Schema."""
    layer = await readable_layer(catalog, collection_id, who)
    # Only what this caller may filter on: a withheld field is not listed, and a filter
    # on it is refused (app.ogc.filters) exactly as one on a field that does not exist.
    # The geometry both ways: Part 3's ``format`` and a ``$ref`` to the GeoJSON schema,
    # the only form QGIS takes as the geometry its spatial filters may name
    # (QgsOapifQueryablesRequest::processReply); without it QGIS filters map extents
    # on the client.
    properties = {
        "geometry": Queryable(
            ref=f"https://geojson.org/schema/{layer.geometry_type}.json",
            format=f"geometry-{layer.geometry_type.lower()}",
            x_ogc_role="primary-geometry",
        )
    }
    for f in queryable_fields(layer, who):
        date_time = f.type == "date-time"
        properties[f.name] = Queryable(
            title=f.name,
            type="string" if date_time else f.type,
            format="date-time" if date_time else None,
            description=f.description or None,
        )
    return Queryables(
        id=absolute(request, f"/collections/{layer.id}/queryables"),
        title=layer.title,
        properties=properties,
    )


# --- items ---------------------------------------------------------------------------------


@router.get(
    "/collections/{collection_id}/items",
    summary="Features of a collection (GeoJSON), filtered and paged",
    response_class=StreamingResponse,
    openapi_extra=PROPERTY_FILTERS,
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
    """A page of a collection's features (GeoJSON), filtered, with counts and a next link."""
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
    """One feature of a collection (GeoJSON), with the properties this caller may see."""
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
