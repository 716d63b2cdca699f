"""Vector tiles: checked, then encoded in PostGIS (``app.sql.tiles``) with the request's
filters. Caching is ``app.ogc.tilecache``'s concern.

Clustered incident tiles (below the layer's ``cluster_below``) are read from the
precomputed cells of migration 0019 when the request filters on nothing but categories
and a period of whole months in the territory's time zone (``datetime=start/..``,
``occurred_from``, ``occurred_to`` at local midnights of first days); any other filter is
counted live from the points. The same clusters either way; the tile says which
(:data:`AGGREGATE` or :data:`LIVE`, the ``X-Tile-Source`` header)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.datastructures import QueryParams

from app.core.cache import TTLCache
from app.core.db import DriverStatement, driver_connection, driver_statement
from app.core.errors import NotFound
from app.core.settings import Settings
from app.ogc.filters import layer_conditions, parse_datetime
from app.ogc.layers import Layer
from app.params import parse_time
from app.security import Principal
from app.sql import tiles as sql

log = logging.getLogger(__name__)

# Where a clustered tile's counts come from (``X-Tile-Source``).
AGGREGATE, LIVE = "aggregate", "live"
# The layer whose clusters are precomputed (migration 0019 counts incident's rows that
# are not deleted: the layer's own where), and the parameters the cells answer.
AGGREGATED_LAYER = "incidents"
CELL_PARAMETERS = frozenset({"category", "datetime", "occurred_from", "occurred_to"})


@dataclass(frozen=True)
class CellFilters:
    """A request's filters as the precomputed cells take them: categories (None: all)
    and the first months of a period, the end exclusive (None: all time)."""

    categories: tuple[str, ...] | None
    months: tuple[date | None, date | None] | None


@dataclass(frozen=True)
class TileStatement:
    """A compiled tile query and where its clusters come from (None: points)."""

    statement: DriverStatement
    source: str | None
    # Its second column says whether the months of the cells are the territory's.
    checks_zone: bool = False


def check_tile(layer: Layer, z: int, x: int, y: int, max_zoom: int) -> None:
    """404 for a zoom outside the layer's range or a tile outside the WebMercatorQuad grid."""
    if not 0 <= z <= min(max_zoom, layer.tiles.maxzoom):
        raise NotFound(
            f"{layer.id} has tiles from zoom {layer.tiles.minzoom} to "
            f"{min(max_zoom, layer.tiles.maxzoom)} (got {z})"
        )
    if not (0 <= x < 2**z and 0 <= y < 2**z):
        raise NotFound(f"tile {z}/{x}/{y} is outside the WebMercatorQuad grid")


def _month_start(moment: datetime, timezone: str) -> date | None:
    """The month ``moment`` starts, if it is a local midnight of a first day."""
    local = moment.astimezone(ZoneInfo(timezone))
    return local.date() if local.day == 1 and local.time() == time(0) else None


def cell_filters(layer: Layer, query: QueryParams, timezone: str) -> CellFilters | None:
    """The request's filters if the precomputed cells can answer them, else None: only
    categories and a period whose ends are local midnights of first days of months
    (``datetime``'s closed end counts its instant: only an open end qualifies). The
    query has passed ``layer_conditions``, so its values parse."""
    if layer.id != AGGREGATED_LAYER or not query.keys() <= CELL_PARAMETERS:
        return None
    if any(len(query.getlist(name)) > 1 for name in query.keys() - {"category"}):
        return None  # a repeated bound: not worth reading as layer_conditions does
    categories = None
    if "category" in query:
        texts = query.getlist("category")
        categories = tuple(sorted({v.strip().lower() for t in texts for v in t.split(",")}))
    starts: list[datetime] = []
    ends: list[datetime] = []
    if (interval := parse_datetime(query.get("datetime"), timezone)) is not None:
        start, end = interval
        if end is not None:
            return None
        starts += [start] if start is not None else []
    if (text := query.get("occurred_from")) is not None:
        starts.append(parse_time(text, timezone))
    if (text := query.get("occurred_to")) is not None:
        ends.append(parse_time(text, timezone))
    if not starts and not ends:
        return CellFilters(categories, None)
    firsts = [_month_start(t, timezone) for t in starts]
    lasts = [_month_start(t, timezone) for t in ends]
    if None in firsts or None in lasts:
        return None
    first = max(firsts) if firsts else None  # type: ignore[type-var]  (no None left)
    last = min(lasts) if lasts else None  # type: ignore[type-var]
    return CellFilters(categories, (first, last))


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
    fields ``who`` may filter on), clusters counted live; only z, x and y are left to
    bind."""
    return tile_query(layer, who, visible, query, settings, clustered=clustered)[0]


def tile_query(
    layer: Layer,
    who: Principal,
    visible: list[str],
    query: QueryParams,
    settings: Settings,
    *,
    clustered: bool,
    cells: bool = False,
) -> tuple[Select, str | None]:
    """The tile query of a layer with the request's filters (as for features, on the
    fields ``who`` may filter on), and where its clusters come from; only z, x and y are
    left to bind. ``cells``: read the precomputed cells when the filters allow (the
    tile's zoom has them); a query on months then also says whether they are months in
    the territory's time zone (:func:`app.sql.tiles.zone_matches`)."""
    conditions = layer_conditions(query, layer, settings, who)
    if not clustered:
        return sql.tile_mvt(layer, sql.tile_features(layer, visible, conditions)), None
    timezone = settings.territory.timezone
    if cells and (found := cell_filters(layer, query, timezone)) is not None:
        tile = sql.tile_mvt(layer, sql.tile_cells(layer, found.categories, found.months))
        if found.months is not None:
            tile = tile.add_columns(sql.zone_matches(timezone))
        return tile, AGGREGATE
    return sql.tile_mvt(layer, sql.tile_clusters(layer, conditions)), LIVE


async def render_tile(
    engine: AsyncEngine,
    statements: TTLCache,
    settings: Settings,
    layer: Layer,
    who: Principal,
    visible: list[str],
    query: QueryParams,
    zxy: tuple[int, int, int],
) -> tuple[bytes, str | None]:
    """Encode one tile in PostGIS (``engine`` reads in autocommit: no BEGIN/ROLLBACK);
    with where its clusters come from (:data:`AGGREGATE`, :data:`LIVE`, None: points).

    Building and compiling a statement costs more than running an empty tile (~1.7 ms of
    SQLAlchemy), so ``statements`` keeps them compiled per layer and filters; the tile
    goes through psycopg itself, in binary (a bytea as text is hex, twice its size).
    ``visible`` (``app.access.visible_fields`` of ``who``) is in the key: it decides the
    fields a filter may use too, so a statement is only reused for callers allowed its
    filters."""
    z, x, y = zxy
    clustered = layer.tiles.cluster_below is not None and z < layer.tiles.cluster_below
    cells = clustered and sql.aggregate_level(z, months=True) is not None
    key = (layer.id, tuple(visible), tuple(sorted(query.multi_items())), clustered, cells)

    def prepare(cells: bool) -> TileStatement:
        select, source = tile_query(
            layer, who, visible, query, settings, clustered=clustered, cells=cells
        )
        statement = driver_statement(select, engine.dialect, z=z, x=x, y=y)
        return TileStatement(statement, source, checks_zone=len(select.selected_columns) > 1)

    if (prepared := statements.get(key)) is None:
        prepared = prepare(cells)
        statements.set(key, prepared)
    data, zone_ok = await _run(engine, prepared.statement, {"z": z, "x": x, "y": y})
    if prepared.checks_zone and not zone_ok:
        # The months were counted in another time zone (the territory's changed since):
        # this query is counted live until ``incident_tiles_refill`` recounts them.
        log.warning(
            "incident tile cells hold months of another time zone than %s: period tiles "
            "are counted live until SELECT incident_tiles_refill('%s') is run",
            settings.territory.timezone,
            settings.territory.timezone,
        )
        prepared = prepare(False)
        statements.set(key, prepared)
        data, _ = await _run(engine, prepared.statement, {"z": z, "x": x, "y": y})
    return data, prepared.source


async def _run(
    engine: AsyncEngine, statement: DriverStatement, zxy: dict[str, Any]
) -> tuple[bytes, bool]:
    """The tile's bytes, and its second column if it has one (else True)."""
    async with driver_connection(engine) as conn, conn.cursor(binary=True) as cur:
        await cur.execute(statement.sql, {**statement.params, **zxy})
        row = await cur.fetchone()
    if row is None:
        return b"", True
    data = bytes(row[0]) if row[0] is not None else b""
    return data, bool(row[1]) if len(row) > 1 else True
