"""Vector tiles of every layer: XYZ (``/tiles/{layer}/{z}/{x}/{y}.mvt``), the OGC API
Tiles form (``/collections/{id}/tiles/WebMercatorQuad/{z}/{y}/{x}``) and TileJSON 3.0.

Filters are query parameters, as for features (``category=homicide``,
``datetime=2024-01-01T00:00:00Z/..``, ``filter=<CQL2>``), so a QGIS XYZ template or a
MapLibre source URL can bake them in. Tiles are cached in process (``app.ogc.tilecache``)
and answer ``If-None-Match`` with ``304 Not Modified``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from app.access import readable_layer, visible_fields
from app.deps import CatalogDep, CollectionId, PrincipalDep, SettingsDep
from app.ogc.filters import PROPERTY_FILTERS, layer_conditions
from app.ogc.links import absolute
from app.ogc.tilecache import MVT, cached_tile, tile_reply
from app.schemas.ogc import Link, TileJSON, TileSet, TileSets, VectorLayer
from app.services.tiles import check_tile

router = APIRouter(tags=["tiles"])

WEB_MERCATOR_QUAD = "WebMercatorQuad"
_TMS_URI = "http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad"

Zoom = Annotated[int, Path(ge=0, le=30)]
Column = Annotated[int, Path(ge=0)]


async def _tile(request: Request, layer_id: str, z: int, x: int, y: int, who) -> Response:
    """Most tiles never get here: ``app.ogc.tilecache.CachedTiles`` answers them first. This
    path serves the rest (a key or a catalog not yet cached) and answers the errors."""
    state = request.app.state
    layer = await readable_layer(state.catalog, layer_id, who)
    check_tile(layer, z, x, y, state.settings.tiles.max_zoom)
    tile, hit = await cached_tile(state, layer, who, request.query_params, (z, x, y))
    max_age = state.settings.tiles.max_age_s
    status, headers, body = tile_reply(tile, layer, who, request.headers, max_age, hit)
    return Response(body, status_code=status, headers=headers)


@router.get(
    "/tiles/{layer_id}/{z}/{x}/{y}.mvt",
    summary="One vector tile (XYZ)",
    response_class=Response,
    openapi_extra=PROPERTY_FILTERS,
    responses={200: {"content": {MVT: {}}}, 304: {"description": "Not modified (ETag)"}},
)
async def xyz_tile(
    request: Request,
    layer_id: CollectionId,
    z: Zoom,
    x: Column,
    y: Column,
    who: PrincipalDep,
) -> Response:
    """One Mapbox vector tile of a layer at zoom ``z``, column ``x``, row ``y``."""
    return await _tile(request, layer_id, z, x, y, who)


@router.get(
    "/collections/{collection_id}/tiles/WebMercatorQuad/{z}/{y}/{x}",
    summary="One vector tile (OGC API Tiles: zoom, row, column)",
    response_class=Response,
    openapi_extra=PROPERTY_FILTERS,
    responses={200: {"content": {MVT: {}}}, 304: {"description": "Not modified (ETag)"}},
)
async def ogc_tile(
    request: Request,
    collection_id: CollectionId,
    z: Zoom,
    y: Column,
    x: Column,
    who: PrincipalDep,
) -> Response:
    """One Mapbox vector tile of a collection (the same tile as the XYZ form)."""
    return await _tile(request, collection_id, z, x, y, who)


def _tile_field(description: str, json_type: str) -> str:
    """A field's TileJSON description; a timestamp says how tiles carry it
    (``app.sql.tiles``: Unix time, where features and items give ISO 8601)."""
    if json_type == "date-time":
        return f"{description} In tiles: Unix time (seconds since 1970-01-01 UTC)."
    return description


def _tile_template(request: Request, layer_id: str) -> str:
    query = f"?{request.url.query}" if request.url.query else ""
    return absolute(request, f"/tiles/{layer_id}") + "/{z}/{x}/{y}.mvt" + query


@router.get(
    "/tiles/{layer_id}.json",
    summary="TileJSON 3.0 of a layer's vector tiles",
    openapi_extra=PROPERTY_FILTERS,
    response_model_exclude_none=True,
)
async def tilejson(
    request: Request,
    layer_id: CollectionId,
    settings: SettingsDep,
    catalog: CatalogDep,
    who: PrincipalDep,
) -> TileJSON:
    """TileJSON 3.0.0 of a layer: tile URL template, zooms, bounds and the fields.

    Query parameters (filters) are carried into the tile URL template, once checked
    as the tiles will check them: a template whose every tile is a 400 helps nobody."""
    layer = await readable_layer(catalog, layer_id, who)
    layer_conditions(request.query_params, layer, settings, who)
    extent = await catalog.extent(layer)
    bounds = extent[:4] if extent else (-180, -85.0511, 180, 85.0511)
    visible = visible_fields(layer, who)
    fields = {
        f.name: _tile_field(f.description or f.type, f.type)
        for f in layer.fields
        if f.in_tiles and f.name in visible
    }
    if layer.style == "incidents":
        fields = {
            "count": f"Incidents at this point (a cluster below zoom {layer.tiles.cluster_below})",
            **fields,
        }
    maxzoom = min(settings.tiles.max_zoom, layer.tiles.maxzoom)
    return TileJSON(
        name=layer.title,
        description=layer.description,
        tiles=[_tile_template(request, layer.id)],
        minzoom=layer.tiles.minzoom,
        maxzoom=maxzoom,
        bounds=bounds,
        center=((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2, 7),
        attribution="Crime Observatory",
        vector_layers=[
            VectorLayer(
                id=layer.id,
                description=layer.title,
                minzoom=layer.tiles.minzoom,
                maxzoom=maxzoom,
                fields=fields,
            )
        ],
    )


@router.get(
    "/collections/{collection_id}/tiles",
    summary="Tilesets of a collection",
    response_model_exclude_none=True,
)
async def tilesets(
    request: Request, collection_id: CollectionId, catalog: CatalogDep, who: PrincipalDep
) -> TileSets:
    """The tilesets of a collection: one vector tileset in WebMercatorQuad."""
    layer = await readable_layer(catalog, collection_id, who)
    base = absolute(request, f"/collections/{layer.id}/tiles/{WEB_MERCATOR_QUAD}")
    return TileSets(
        tilesets=[
            TileSet(
                title=layer.title,
                data_type="vector",
                crs="http://www.opengis.net/def/crs/EPSG/0/3857",
                tile_matrix_set_uri=_TMS_URI,
                links=[
                    Link(href=base, rel="self", type="application/json"),
                    Link(
                        href=base + "/{tileMatrix}/{tileRow}/{tileCol}",
                        rel="item",
                        type=MVT,
                        templated=True,
                    ),
                    Link(
                        href=absolute(request, f"/tiles/{layer.id}.json"),
                        rel="describedby",
                        type="application/json",
                        title="TileJSON",
                    ),
                ],
            )
        ]
    )
