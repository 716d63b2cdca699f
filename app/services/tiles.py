"""Vector tiles: checked, then encoded in PostGIS (``app.sql.tiles``) with the request's
filters. Caching is ``app.tilecache``'s concern."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import NotFound
from app.filters import layer_conditions
from app.layers import Layer
from app.settings import Settings
from app.sql import tiles as sql


def check_tile(layer: Layer, z: int, x: int, y: int, max_zoom: int) -> None:
    if not 0 <= z <= min(max_zoom, layer.tiles.maxzoom):
        raise NotFound(
            f"{layer.id} has tiles from zoom {layer.tiles.minzoom} to "
            f"{min(max_zoom, layer.tiles.maxzoom)} (got {z})"
        )
    if not (0 <= x < 2**z and 0 <= y < 2**z):
        raise NotFound(f"tile {z}/{x}/{y} is outside the WebMercatorQuad grid")


async def render_tile(
    engine: AsyncEngine,
    settings: Settings,
    layer: Layer,
    visible: list[str],
    query: Mapping[str, str],
    z: int,
    x: int,
    y: int,
) -> bytes:
    """Encode one tile in PostGIS, with the request's filters (as for features)."""
    conditions = layer_conditions(query, layer, settings)
    cluster_below = layer.tiles.cluster_below
    if cluster_below is not None and z < cluster_below:
        features = sql.tile_clusters(layer, conditions, z)
    else:
        features = sql.tile_features(layer, visible, conditions)
    async with engine.connect() as conn:
        data = await conn.scalar(sql.tile_mvt(layer, features), {"z": z, "x": x, "y": y})
    return bytes(data or b"")
