"""Styles of the layers: a MapLibre style of everything, and per layer a QGIS QML and an
OGC SLD, listed for each collection as OGC API Styles does.

The same symbology (``app.styles.symbology``) feeds every format: Gi* hot spots in ArcGIS's
hot/cold ramp by ``bin``, Local Moran by ``label``, emerging hot spots by ``category``,
admin units by the map class of their first composite index, incidents as points.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Response

from app.access import may_read, readable_layer
from app.deps import CatalogDep, CollectionId, EngineDep, PrincipalDep, SettingsDep
from app.ogc.links import absolute, base_url
from app.schemas.ogc import Link, Style, Styles
from app.security import PUBLIC
from app.services.styles import styled_layers, symbologies, territory_extent
from app.settlements import attribution
from app.styles.maplibre import MEDIA_TYPE as MAPLIBRE
from app.styles.maplibre import default_style
from app.styles.qml import qml_document
from app.styles.sld import MEDIA_TYPE as SLD
from app.styles.sld import sld_document

router = APIRouter(tags=["styles"])

QML = "text/xml"


def _inline(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'inline; filename="{name}"'}


@router.get(
    "/styles/default.json",
    summary="MapLibre GL style of every layer (no basemap; works offline)",
    responses={200: {"content": {MAPLIBRE: {}}}},
)
async def maplibre_style(
    request: Request, settings: SettingsDep, engine: EngineDep, catalog: CatalogDep
) -> Response:
    """The MapLibre GL style of the public layers and the incidents.

    Incident tiles answer 401 without an analyst key (send it with MapLibre's
    ``transformRequest``); the other layers draw regardless. Hot spot runs behind a key
    (they count sensitive categories) are left out."""
    layers = styled_layers(
        {
            layer.id: layer
            for layer in (await catalog.layers()).values()
            if may_read(layer, PUBLIC) or layer.style == "incidents"
        }
    )
    style = default_style(
        f"Crime Observatory of {settings.territory.name}",
        base_url(request),
        list(zip(layers, await symbologies(engine, layers), strict=True)),
        await territory_extent(catalog, settings),
        tile_maxzoom=settings.tiles.max_zoom,
        labels_attribution=attribution(settings.territory.settlements_file),
    )
    return Response(orjson.dumps(style), media_type=MAPLIBRE)


@router.get(
    "/styles/{layer_id}.qml",
    summary="QGIS style (QML) of a layer",
    response_class=Response,
    responses={200: {"content": {QML: {}}}},
)
async def qml_style(
    layer_id: CollectionId, engine: EngineDep, catalog: CatalogDep, who: PrincipalDep
) -> Response:
    """The QGIS style (QML) of a layer, from the same symbology as its MapLibre style."""
    layer = await readable_layer(catalog, layer_id, who)
    (sym,) = await symbologies(engine, [layer])
    return Response(qml_document(sym), media_type=QML, headers=_inline(f"{layer.id}.qml"))


@router.get(
    "/styles/{layer_id}.sld",
    summary="OGC SLD 1.0 style of a layer",
    response_class=Response,
    responses={200: {"content": {SLD: {}}}},
)
async def sld_style(
    layer_id: CollectionId, engine: EngineDep, catalog: CatalogDep, who: PrincipalDep
) -> Response:
    """The OGC SLD 1.0 style of a layer, from the same symbology as its MapLibre style."""
    layer = await readable_layer(catalog, layer_id, who)
    (sym,) = await symbologies(engine, [layer])
    body = sld_document(layer.id, layer.title, sym)
    return Response(body, media_type=SLD, headers=_inline(f"{layer.id}.sld"))


@router.get(
    "/collections/{collection_id}/styles",
    summary="Styles of a collection",
    response_model_exclude_none=True,
)
async def collection_styles(
    request: Request, collection_id: CollectionId, catalog: CatalogDep, who: PrincipalDep
) -> Styles:
    """The styles of a collection (OGC API Styles): one ``default`` in three encodings."""
    layer = await readable_layer(catalog, collection_id, who)

    def stylesheet(path: str, type_: str, title: str) -> Link:
        return Link(href=absolute(request, path), rel="stylesheet", type=type_, title=title)

    return Styles(
        default="default",
        styles=[
            Style(
                id="default",
                title=f"{layer.title}: default style",
                links=[
                    stylesheet(f"/styles/{layer.id}.qml", QML, "QGIS style (QML)"),
                    stylesheet(f"/styles/{layer.id}.sld", f"{SLD};version=1.0", "OGC SLD 1.0"),
                    stylesheet("/styles/default.json", MAPLIBRE, "MapLibre style of every layer"),
                ],
            )
        ],
        links=[
            Link(
                href=absolute(request, f"/collections/{layer.id}/styles"),
                rel="self",
                type="application/json",
            ),
            Link(
                href=absolute(request, f"/collections/{layer.id}"),
                rel="collection",
                type="application/json",
            ),
        ],
    )
