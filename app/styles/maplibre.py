"""The MapLibre GL style (version 8) of the service's vector tiles.

No basemap or sprites, and nothing from the internet: the glyphs of its place names come
from the service itself (``/fonts/{fontstack}/{range}.pbf``, DejaVu Sans) and so do the
points it labels (``/labels.geojson``: a point inside each district, the territory's towns
and villages). Every other source is a vector source by its absolute TileJSON URL, except
incidents (see :func:`default_style`).
"""

from __future__ import annotations

import math
from typing import Any

from app.ogc.layers import Layer
from app.styles.symbology import Symbology

MEDIA_TYPE = "application/vnd.mapbox.style+json"
# The one font the service serves glyphs of (app/routers/labels.py).
FONT = "DejaVu Sans"
# Settlements of at least this many people are labelled at every zoom; the others (the
# villages) from LABEL_VILLAGES_ZOOM on, so that the country view stays readable.
TOWN_POPULATION = 5_000
LABEL_VILLAGES_ZOOM = 9
_HALO = {"text-halo-color": "#ffffff", "text-halo-width": 1.5, "text-halo-blur": 0.5}


def _match(sym: Symbology, what: str, default: Any) -> Any:
    """A ``match`` expression on the styled property (a constant for a single symbol).

    Each label is written as a one-value array (``[-3]``), which MapLibre reads like the
    bare value: the MapLibre style converter of QGIS 3.22 (Debian 12) reads only arrays
    there and turns a bare label into ``"bin" IN ()``, leaving every feature in the
    fallback colour (scripts/verify_qgis.py checks it)."""
    if sym.attribute is None:
        return default
    pairs: list[Any] = []
    for cat in sym.categories:
        pairs += [[cat.value], cat.colour if what == "colour" else cat.opacity]
    return ["match", ["get", sym.attribute], *pairs, default]


def _fill(layer: Layer, sym: Symbology, visible: bool) -> dict[str, Any]:
    return {
        "id": f"{layer.id}-fill",
        "type": "fill",
        "source": layer.id,
        "source-layer": layer.id,
        "layout": {"visibility": "visible" if visible else "none"},
        "paint": {
            "fill-color": _match(sym, "colour", sym.default.colour),
            "fill-opacity": _match(sym, "opacity", sym.default.opacity),
        },
        "metadata": {"observatory:legend": _legend(sym)},
    }


def _legend(sym: Symbology) -> list[dict[str, Any]]:
    if sym.attribute is None:
        return [{"label": sym.default.label, "colour": sym.default.colour}]
    return [{"value": c.value, "label": c.label, "colour": c.colour} for c in sym.categories]


def _line(layer: Layer, sym: Symbology, width: float, visible: bool) -> dict[str, Any]:
    return {
        "id": f"{layer.id}-line",
        "type": "line",
        "source": layer.id,
        "source-layer": layer.id,
        "layout": {"visibility": "visible" if visible else "none", "line-join": "round"},
        "paint": {"line-color": sym.outline, "line-width": width},
    }


def _circles(layer: Layer, sym: Symbology) -> dict[str, Any]:
    # Below the clustering zoom a feature is a cluster with its ``count``: the circle's
    # area grows with the count (radius with its square root), 1 incident = 3 px.
    radius = ["*", 3, ["sqrt", ["max", 1, ["coalesce", ["get", "count"], 1]]]]
    return {
        "id": f"{layer.id}-circle",
        "type": "circle",
        "source": layer.id,
        "source-layer": layer.id,
        "paint": {
            "circle-color": sym.default.colour,
            "circle-opacity": 0.8,
            "circle-radius": ["min", 30, radius],
            "circle-stroke-color": sym.outline,
            "circle-stroke-width": 0.5,
        },
    }


def _labels(base: str, attribution: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The labels' GeoJSON source and its layers: a dot and the name of every town (then of
    every village from LABEL_VILLAGES_ZOOM), and the districts' names, uppercase, on top
    (MapLibre places the topmost layer's labels first)."""
    source: dict[str, Any] = {"type": "geojson", "data": f"{base}/labels.geojson"}
    if attribution:
        source["attribution"] = attribution
    settlement = ["==", ["get", "kind"], "settlement"]
    town = ["all", settlement, [">=", ["get", "population"], TOWN_POPULATION]]
    village = ["all", settlement, ["<", ["get", "population"], TOWN_POPULATION]]

    def dots(layer_id: str, where: list, radius: float, minzoom: float = 0) -> dict[str, Any]:
        return {
            "id": layer_id,
            "type": "circle",
            "source": "labels",
            "filter": where,
            "minzoom": minzoom,
            "paint": {
                "circle-color": "#333333",
                "circle-radius": radius,
                "circle-stroke-color": "#ffffff",
                "circle-stroke-width": 1,
            },
        }

    def names(layer_id: str, where: list, size: list, minzoom: float = 0) -> dict[str, Any]:
        return {
            "id": layer_id,
            "type": "symbol",
            "source": "labels",
            "filter": where,
            "minzoom": minzoom,
            "layout": {
                "text-field": ["get", "name"],
                "text-font": [FONT],
                "text-size": size,
                "text-variable-anchor": ["left", "right", "top", "bottom"],
                "text-radial-offset": 0.5,
                "text-justify": "auto",
                # Larger places first: they keep their label where names collide.
                "symbol-sort-key": ["get", "rank"],
            },
            "paint": {"text-color": "#1f1f1f", **_HALO},
        }

    zoomed = lambda low, high: ["interpolate", ["linear"], ["zoom"], 6, low, 12, high]  # noqa: E731
    layers = [
        dots("labels-villages-dot", village, 2, LABEL_VILLAGES_ZOOM),
        dots("labels-towns-dot", town, 3),
        names("labels-villages", village, zoomed(10, 13), LABEL_VILLAGES_ZOOM),
        names("labels-towns", town, zoomed(11, 16)),
        {
            "id": "labels-units",
            "type": "symbol",
            "source": "labels",
            "filter": ["==", ["get", "kind"], "unit"],
            "layout": {
                "text-field": ["get", "name"],
                "text-font": [FONT],
                "text-size": zoomed(12, 18),
                "text-transform": "uppercase",
                "text-letter-spacing": 0.12,
                "text-max-width": 8,
            },
            "paint": {"text-color": "#4d4d4d", **_HALO},
        },
    ]
    return source, layers


def view(extent: tuple[float, float, float, float] | None) -> tuple[list[float], float]:
    """Centre and zoom that fit a (west, south, east, north) extent in a ~1000 px map."""
    if extent is None:
        return [0.0, 0.0], 1.0
    west, south, east, north = extent
    span = max(east - west, (north - south) * 1.5, 1e-6)
    zoom = max(0.0, min(16.0, math.floor(math.log2(360 * 1000 / 512 / span) * 2) / 2))
    return [round((west + east) / 2, 5), round((south + north) / 2, 5)], zoom


def default_style(
    title: str,
    base: str,
    layers: list[tuple[Layer, Symbology]],
    extent: tuple[float, float, float, float] | None,
    *,
    tile_maxzoom: int = 22,
    labels_attribution: str | None = None,
) -> dict[str, Any]:
    """The style of every given layer.

    Parameters
    ----------
    title : str
        The style's name.
    base : str
        The service's absolute base URL (``scheme://host[/prefix]``).
    layers : list of (Layer, Symbology)
        Admin units (country outline, district choropleth, finer levels hidden), hot spot
        runs (the last one in the list visible, the older ones hidden), alerts, near-repeat
        risk zones and incidents.
    extent : tuple, optional
        The territory (west, south, east, north), for the initial view.
    tile_maxzoom : int
        The service's highest tile zoom (``settings.tiles.max_zoom``).
    labels_attribution : str, optional
        Credit for the labelled towns and villages (GeoNames' for Belize's).

    Notes
    -----
    Incidents need ``Authorization: Bearer <analyst key>`` (MapLibre: ``transformRequest``).
    Their source lists its tile URL template instead of a TileJSON URL, so a map opened
    without a key still loads the style; it only gets 401 for the incident tiles.

    Place names (districts, towns, villages) are drawn on top of everything, with the
    service's own glyphs (``glyphs``) and label points (source ``labels``).
    """
    sources: dict[str, Any] = {}
    fills: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    runs = [layer for layer, _ in layers if layer.style == "hotspots"]
    latest = runs[-1].id if runs else None
    for layer, sym in layers:
        if layer.style == "incidents":
            sources[layer.id] = {
                "type": "vector",
                "tiles": [f"{base}/tiles/{layer.id}/{{z}}/{{x}}/{{y}}.mvt"],
                "minzoom": layer.tiles.minzoom,
                "maxzoom": min(layer.tiles.maxzoom, tile_maxzoom),
            }
            if extent is not None:
                sources[layer.id]["bounds"] = list(extent)
            points.append(_circles(layer, sym))
            continue
        sources[layer.id] = {"type": "vector", "url": f"{base}/tiles/{layer.id}.json"}
        if layer.style == "hotspots":
            fills.append(_fill(layer, sym, visible=layer.id == latest))
            continue
        if layer.style == "alerts":
            fills.append(_fill(layer, sym, visible=True))
            lines.append(_line(layer, sym, 1.2, visible=True))
            continue
        if layer.style == "risk_zones":
            fills.append(_fill(layer, sym, visible=True))
            lines.append(_line(layer, sym, 0.8, visible=True))
            continue
        level = layer.id.rsplit("-", 1)[-1]
        if level == "0":
            lines.append(_line(layer, sym, 1.6, visible=True))
        elif level == "1":
            fills.insert(0, _fill(layer, sym, visible=True))
            lines.append(_line(layer, sym, 0.8, visible=True))
        else:
            lines.append(_line(layer, sym, 0.4, visible=False))
    sources["labels"], labels = _labels(base, labels_attribution)
    centre, zoom = view(extent)
    background = {"id": "background", "type": "background"}
    background["paint"] = {"background-color": "#f7f7f5"}
    return {
        "version": 8,
        "name": title,
        "metadata": {
            "observatory:note": "No basemap or sprites; glyphs and place names from this "
            "service (works offline). Incident tiles need 'Authorization: Bearer <analyst "
            "key>' (MapLibre transformRequest); without it they answer 401 and only "
            "incidents stay empty.",
        },
        "glyphs": f"{base}/fonts/{{fontstack}}/{{range}}.pbf",
        "center": centre,
        "zoom": zoom,
        "sources": sources,
        "layers": [background, *fills, *lines, *points, *labels],
    }
