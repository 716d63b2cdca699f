"""Vector tiles: checked, then encoded in PostGIS (``app.sql.tiles``) with the request's
filters. Caching is ``app.ogc.tilecache``'s concern."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.datastructures import QueryParams

from app.core.cache import TTLCache
from app.core.db import DriverStatement, driver_connection, driver_statement
from app.core.errors import NotFound
from app.core.settings import Settings
from app.ogc.filters import layer_conditions
from app.ogc.layers import Layer
from app.security import Principal
from app.sql import tiles as sql


def check_tile(layer: Layer, z: int, x: int, y: int, max_zoom: int) -> None:
    """404 for a zoom outside the layer's range or a tile outside the WebMercatorQuad grid."""
    if not 0 <= z <= min(max_zoom, layer.tiles.maxzoom):
        raise NotFound(
            f"{layer.id} has tiles from zoom {layer.tiles.minzoom} to "
            f"{min(max_zoom, layer.tiles.maxzoom)} (got {z})"
        )
    if not (0 <= x < 2**z and 0 <= y < 2**z):
        raise NotFound(f"tile {z}/{x}/{y} is outside the WebMercatorQuad grid")


def tile_statement(
    layer: Layer,
    who: Principal,
    visible: list[str],
    query: QueryParams,
    settings: Settings,
    *,
    clustered: bool,
) -> Select:
    """The tile query of a layer with the request's filters (as for features, on the
    fields ``who`` may filter on); only z, x and y are left to bind."""
    conditions = layer_conditions(query, layer, settings, who)
    if clustered:
        return sql.tile_mvt(layer, sql.tile_clusters(layer, conditions))
    return sql.tile_mvt(layer, sql.tile_features(layer, visible, conditions))


async def render_tile(
    engine: AsyncEngine,
    statements: TTLCache,
    settings: Settings,
    layer: Layer,
    who: Principal,
    visible: list[str],
    query: QueryParams,
    zxy: tuple[int, int, int],
) -> bytes:
    """Encode one tile in PostGIS (``engine`` reads in autocommit: no BEGIN/ROLLBACK).

    Building and compiling a statement costs more than running an empty tile (~1.7 ms of
    SQLAlchemy), so ``statements`` keeps them compiled per layer and filters; the tile
    goes through psycopg itself, in binary (a bytea as text is hex, twice its size).
    ``visible`` (``app.access.visible_fields`` of ``who``) is in the key: it decides the
    fields a filter may use too, so a statement is only reused for callers allowed its
    filters."""
    z, x, y = zxy
    clustered = layer.tiles.cluster_below is not None and z < layer.tiles.cluster_below
    key = (layer.id, tuple(visible), tuple(sorted(query.multi_items())), clustered)
    if (statement := statements.get(key)) is None:
        select = tile_statement(layer, who, visible, query, settings, clustered=clustered)
        statement = driver_statement(select, engine.dialect, z=z, x=x, y=y)
        statements.set(key, statement)
    return await _run(engine, statement, {"z": z, "x": x, "y": y})


async def _run(engine: AsyncEngine, statement: DriverStatement, zxy: dict[str, Any]) -> bytes:
    async with driver_connection(engine) as conn, conn.cursor(binary=True) as cur:
        await cur.execute(statement.sql, {**statement.params, **zxy})
        row = await cur.fetchone()
    return bytes(row[0]) if row is not None and row[0] is not None else b""
