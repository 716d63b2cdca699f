"""``GET /qgis/project.qgz``: a QGIS project with every layer the caller may read,
connected to this service at the URL the caller used, and styled."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.access import may_embed_key, may_read, readable_layers
from app.deps import CatalogDep, EngineDep, PrincipalDep, SettingsDep
from app.ogc.layers import Layer
from app.ogc.links import base_url
from app.security import PUBLIC, Principal
from app.services.styles import styled_layers, symbologies, territory_extent
from app.styles.qgis import ProjectLayer, project_archive, project_document
from app.styles.symbology import Symbology

router = APIRouter(tags=["qgis"])

QGZ = "application/zip"

BOUNDARIES = "Boundaries and indexes"
HOTSPOTS = "Hot spots"
INCIDENTS = "Incidents"
ALERTS = "Early-warning alerts"
RISK_ZONES = "Near-repeat risk zones"
TILES = "Vector tiles (faster, same data)"


def _caller_headers(request: Request, who: Principal, embed_key: bool) -> dict[str, str]:
    """The header the incidents layer sends.

    The caller's own key goes into the project: they sent it to download this file, the
    file is theirs, and the incidents layer cannot load without it. QGIS has no other way
    to carry a key in a project file except its authentication database, which would need
    manual steps on every machine. The key is never written for public callers, the
    project's title warns about it, and ``embed_key=false`` leaves it out (then add an
    "API Header" authentication to the layer in QGIS), as does ``authcfg`` (the id of
    the user's own authentication configuration, written in the key's stead).
    """
    header = request.headers.get("authorization", "")
    if not (embed_key and may_embed_key(who) and header.lower().startswith("bearer ")):
        return {}
    return {"Authorization": header}


def project_layers(
    layers: list[Layer],
    symbols: list[Symbology],
    key_headers: dict[str, str],
    tile_maxzoom: int,
    authcfg: str | None = None,
) -> list[ProjectLayer]:
    """Drawing order (first on top): incidents, near-repeat risk zones (only the first
    shown: the exact zones for an analyst, else the public ones), alerts, hot spot runs
    newest first (only the newest shown), vector tiles (hidden), boundaries (country over
    districts, finer levels hidden). Layers behind a key (incidents, runs that count
    sensitive categories, exact risk zones) carry the caller's key, or the authentication
    configuration ``authcfg``; public ones never do."""

    def headers(layer: Layer) -> dict[str, str]:
        return {} if may_read(layer, PUBLIC) else key_headers

    def auth(layer: Layer) -> str | None:
        return None if may_read(layer, PUBLIC) else authcfg

    styled = dict(zip((layer.id for layer in layers), symbols, strict=True))
    units = [layer for layer in layers if layer.style == "units"]
    runs = [layer for layer in layers if layer.style == "hotspots"][::-1]
    out = [
        ProjectLayer(
            layer,
            styled[layer.id],
            "oapif",
            INCIDENTS,
            headers=headers(layer),
            authcfg=auth(layer),
        )
        for layer in layers
        if layer.style == "incidents"
    ]
    # The exact zones (analysts) before the public squares of the same zones.
    zones = sorted(
        (layer for layer in layers if layer.style == "risk_zones"),
        key=lambda z: may_read(z, PUBLIC),
    )
    out += [
        ProjectLayer(
            layer,
            styled[layer.id],
            "oapif",
            RISK_ZONES,
            visible=i == 0,
            headers=headers(layer),
            authcfg=auth(layer),
        )
        for i, layer in enumerate(zones)
    ]
    out += [
        ProjectLayer(
            layer, styled[layer.id], "oapif", ALERTS, headers=headers(layer), authcfg=auth(layer)
        )
        for layer in layers
        if layer.style == "alerts"
    ]
    out += [
        ProjectLayer(
            layer,
            styled[layer.id],
            "oapif",
            HOTSPOTS,
            visible=i == 0,
            headers=headers(layer),
            authcfg=auth(layer),
        )
        for i, layer in enumerate(runs)
    ]
    tiled = [*runs[:1], *(layer for layer in units if layer.id == "units-1")]
    out += [
        ProjectLayer(
            layer,
            styled[layer.id],
            "tiles",
            TILES,
            visible=False,
            tile_maxzoom=tile_maxzoom,
            headers=headers(layer),
            authcfg=auth(layer),
        )
        for layer in tiled
    ]
    out += [
        ProjectLayer(layer, styled[layer.id], "oapif", BOUNDARIES, visible=level(layer) <= 1)
        for layer in units
    ]
    return out


def level(layer: Layer) -> int:
    """The admin level of a units layer, from its id (``units-1`` is 1)."""
    return int(layer.id.rsplit("-", 1)[-1])


@router.get(
    "/qgis/project.qgz",
    summary="A QGIS project with every layer you may read, connected and styled",
    response_class=Response,
    responses={200: {"content": {QGZ: {}}}},
)
async def qgis_project(
    request: Request,
    settings: SettingsDep,
    engine: EngineDep,
    catalog: CatalogDep,
    who: PrincipalDep,
    embed_key: Annotated[
        bool,
        Query(description="Analysts: write your API key into the incidents layer's source"),
    ] = True,
    authcfg: Annotated[
        str | None,
        Query(
            pattern=r"^[A-Za-z0-9]{7}$",
            description="The id of an authentication configuration of your QGIS (e.g. "
            "Basic: any user name, your API key as the password), written into the layers "
            "that need a key instead of the key itself",
        ),
    ] = None,
) -> Response:
    """Open it in QGIS (Project > Open): boundaries with index classes, hot spot runs
    (ArcGIS hot/cold colours) and, for analysts, incidents, as OGC API Features layers;
    districts and the newest hot spots also as vector tiles."""
    layers = styled_layers({layer.id: layer for layer in await readable_layers(catalog, who)})
    symbols = await symbologies(engine, layers)
    headers = _caller_headers(request, who, embed_key and authcfg is None)
    title = f"Crime Observatory of {settings.territory.name}"
    entries = project_layers(layers, symbols, headers, settings.tiles.max_zoom, authcfg)
    qgs = project_document(
        title + (" (contains your API key: do not share this file)" if headers else ""),
        base_url(request),
        entries,
        await territory_extent(catalog, settings),
    )
    name = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return Response(
        project_archive(name, qgs),
        media_type=QGZ,
        headers={"Content-Disposition": f'attachment; filename="{name}.qgz"'},
    )
