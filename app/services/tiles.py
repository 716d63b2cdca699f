"""Vector tiles: checked, then encoded in PostGIS (``app.sql.tiles``) with the request's
filters. Caching is ``app.tilecache``'s concern."""

from __future__ import annotations

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.datastructures import QueryParams

from app.cache import TTLCache
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


def tile_statement(
    layer: Layer, visible: list[str], query: QueryParams, settings: Settings, *, clustered: bool
) -> Select:
    """The tile query of a layer with the request's filters (as for features); only z, x
    and y are left to bind. Building it costs more than running an empty tile (~1.7 ms of
    SQLAlchemy), so :class:`Catalog` keeps the statements it built per layer and filters."""
    conditions = layer_conditions(query, layer, settings)
    if clustered:
        return sql.tile_mvt(layer, sql.tile_clusters(layer, conditions))
    return sql.tile_mvt(layer, sql.tile_features(layer, visible, conditions))


async def render_tile(
    engine: AsyncEngine,
    statements: TTLCache,
    settings: Settings,
    layer: Layer,
    visible: list[str],
    query: QueryParams,
    zxy: tuple[int, int, int],
) -> bytes:
    """Encode one tile in PostGIS (``engine`` reads in autocommit: no BEGIN/ROLLBACK)."""
    z, x, y = zxy
    clustered = layer.tiles.cluster_below is not None and z < layer.tiles.cluster_below
    key = (layer.id, tuple(visible), tuple(sorted(query.multi_items())), clustered)
    if (statement := statements.get(key)) is None:
        statement = tile_statement(layer, visible, query, settings, clustered=clustered)
        statements.set(key, statement)
    async with engine.connect() as conn:
        data = await conn.scalar(statement, {"z": z, "x": x, "y": y})
    return bytes(data or b"")
