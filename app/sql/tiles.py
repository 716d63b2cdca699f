"""SQL for vector tiles (MVT), built in PostGIS from a layer declaration.

The query filters on the tile envelope transformed to the storage SRID (4326), so the
spatial index on ``geom`` is used, clips and encodes ``ST_AsMVTGeom`` on the 3857
geometry, and caps the features per tile. Points below a layer's ``cluster_below`` zoom
are aggregated into one point per cell of a 64 x 64 grid over the tile, with their count,
so no tile carries hundreds of thousands of points; the incidents' clusters are also
kept per cell by the database (migration 0019, :func:`tile_cells`), so a tile filtered on
nothing but categories and whole months reads those instead of the points. Tiles are
planned with their real bounds (``plan_cache_mode = force_custom_plan`` on every
connection, ``app/core/db.py``): a generic plan made a capped z6 tile ten times slower
(DESIGN.md section 7).

Points are placed on the tile's pixel grid from their longitude and latitude with the Web
Mercator formulas, not with ``ST_Transform`` and ``ST_AsMVTGeom``: PostGIS has no cheaper
call for it, and its clipping machinery cost about 3.5 µs a point, half of a dense tile of
20,000 points (``bench/serving.py``). A point needs no clipping, only the test that it lies
within the tile's buffer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    Text,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
)

from app.models import incident_tile_cell, incident_tile_month, incident_tile_zone
from app.ogc.layers import Layer

# Web Mercator: the world is a square of this many metres a side.
WORLD_M = 40_075_016.685578488
# Cells of the clustering grid per tile side.
CLUSTER_CELLS = 64
# The zooms whose clusters are precomputed per category (migration 0019), and those also
# per month: the migration's ZOOMS and MONTH_ZOOMS.
AGGREGATE_ZOOMS = range(12)
MONTH_ZOOMS = (2, 5, 8, 11)

_Z = bindparam("z", type_=Integer)
_X = bindparam("x", type_=Integer)
_Y = bindparam("y", type_=Integer)


def _envelope() -> ColumnElement[Any]:
    return func.ST_TileEnvelope(_Z, _X, _Y)


def _search_area(layer: Layer) -> ColumnElement[Any]:
    """The tile plus its buffer, in the storage SRID, for the index scan: features just
    outside the tile still draw their edge (or symbol) inside it."""
    margin = layer.tiles.buffer / layer.tiles.extent
    bounds = func.ST_MakeEnvelope(-WORLD_M / 2, -WORLD_M / 2, WORLD_M / 2, WORLD_M / 2, 3857)
    return func.ST_Transform(func.ST_TileEnvelope(_Z, _X, _Y, bounds, literal(margin)), 4326)


def _mvt_geom(geom_3857: ColumnElement[Any], layer: Layer) -> ColumnElement[Any]:
    t = layer.tiles
    return func.ST_AsMVTGeom(geom_3857, _envelope(), t.extent, t.buffer, True)


def _world_position(layer: Layer) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """Where a point lies on the Web Mercator square, as fractions of its side from the
    north-west corner: a few float operations on its longitude and latitude (Mercator is
    separable), where projecting each point with PROJ cost most of a dense tile."""
    lon, lat = func.ST_X(layer.geom), func.ST_Y(layer.geom)
    across = (lon + 180) / 360
    down = (1 - func.ln(func.tan(math.pi / 4 + func.radians(lat) / 2)) / math.pi) / 2
    return across, down


def _tile_pixels(layer: Layer) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """A point's position in the tile, in pixels from its top-left corner (MVT's integer
    grid, rounded as ``ST_AsMVTGeom`` rounds)."""
    across, down = _world_position(layer)
    tiles = func.power(2, _Z)
    extent = layer.tiles.extent
    return (
        func.round((across * tiles - _X) * extent),
        func.round((down * tiles - _Y) * extent),
    )


def _tile_value(expr: ColumnElement[Any], json_type: str) -> ColumnElement[Any]:
    """MVT values are strings, numbers and booleans: a timestamp travels as Unix time
    (whole seconds since 1970-01-01 UTC). A number filters in a map's expressions (a
    time slider: ``[">=", ["get", "occurred_at"], t]``), and it is the cheap form: as
    ISO text, every point's own string was half of a dense z14 tile's bytes (195 KiB
    against 134) and a quarter of its encoding time (``bench/serving.py``)."""
    if json_type == "date-time":
        return cast(func.floor(func.date_part("epoch", expr)), BigInteger)
    return expr


def tile_features(
    layer: Layer, visible: Iterable[str], conditions: list[ColumnElement[bool]]
) -> Select:
    """The layer's features in the tile, with the properties the caller may see."""
    shown = set(visible)
    columns = [
        _tile_value(f.expr, f.type).label(f.name)
        for f in layer.fields
        if f.in_tiles and f.name in shown
    ]
    if layer.style == "incidents":
        columns.append(literal(1, Integer).label("count"))
    if layer.id_type == "integer":
        columns.append(cast(layer.feature_id, BigInteger).label("fid"))
    area = _search_area(layer)
    where = [layer.geom.op("&&")(area), *layer.where, *conditions]
    if layer.geometry_type == "Point":
        # The index's float boxes take a few points a hair outside the area (a pixel or
        # two beyond the buffer): the exact test, on coordinates against the area's
        # bounds (constants, computed once: Mercator maps the tile to a lon/lat box).
        lon, lat = func.ST_X(layer.geom), func.ST_Y(layer.geom)
        where += [
            lon.between(func.ST_XMin(area), func.ST_XMax(area)),
            lat.between(func.ST_YMin(area), func.ST_YMax(area)),
        ]
        geom = func.ST_MakePoint(*_tile_pixels(layer))
    else:
        geom = _mvt_geom(func.ST_Transform(layer.geom, 3857), layer)
    return (
        select(geom.label("geom"), *columns)
        .select_from(layer.source)
        .where(*where)
        .limit(layer.tiles.max_features)
    )


def tile_clusters(layer: Layer, conditions: list[ColumnElement[bool]]) -> Select:
    """One point per occupied grid cell (at the mean longitude and latitude of its
    features, projected) with the number of features in it.

    The cell of each point is computed from its longitude and latitude with the Web
    Mercator formulas: a few float operations per row, where transforming every point
    (PROJ) cost most of a tile of 400,000 points. Only the cluster centres are projected.
    The cells counted are those of the tile and of its buffer (one cell wide): the
    points within the buffered tile, tested on their coordinates as for single points,
    which is what :func:`tile_cells` reads from the precomputed cells.
    """
    cells = func.power(2, _Z) * CLUSTER_CELLS  # across the world, at the tile's zoom
    across, down = _world_position(layer)
    column, row = func.floor(across * cells), func.floor(down * cells)
    lon, lat = func.ST_X(layer.geom), func.ST_Y(layer.geom)
    centre = func.ST_Transform(
        func.ST_SetSRID(func.ST_MakePoint(func.avg(lon), func.avg(lat)), 4326), 3857
    )
    area = _search_area(layer)
    return (
        select(_mvt_geom(centre, layer).label("geom"), cast(func.count(), Integer).label("count"))
        .select_from(layer.source)
        .where(
            layer.geom.op("&&")(area),
            # The index's float boxes take points a hair outside the area: the cells
            # beyond the buffer would get a few of their points.
            lon.between(func.ST_XMin(area), func.ST_XMax(area)),
            lat.between(func.ST_YMin(area), func.ST_YMax(area)),
            *layer.where,
            *conditions,
        )
        .group_by(column, row)
    )


def aggregate_level(z: int, months: bool) -> int | None:
    """The zoom whose precomputed cells serve a clustered tile at zoom ``z``: ``z``
    itself, or with a period the nearest zoom at or above it stored per month (its
    cells are grouped by 2 ** (level - z) a side); None beyond the stored zooms."""
    if z not in AGGREGATE_ZOOMS:
        return None
    return min(m for m in MONTH_ZOOMS if m >= z) if months else z


def _level(months: bool) -> ColumnElement[Any]:
    if not months:
        return _Z
    return case(*[(m >= _Z, literal(m, Integer)) for m in MONTH_ZOOMS])


def tile_cells(
    layer: Layer,
    categories: Sequence[str] | None,
    months: tuple[date | None, date | None] | None,
) -> Select:
    """The clusters of :func:`tile_clusters`, from the precomputed cells (migration
    0019) instead of the points: the same features, counts and centres (to the float
    sums' last bits). ``categories``: any of these (None: all); ``months``: the first
    months of a period of whole months, the end exclusive (None: all time; a None end
    is open), in the time zone the cells were counted in (:func:`zone_matches`).

    A cell's row holds its count and the sums of its longitudes and latitudes, so the
    mean of a group of cells is exact; its column and row are integers, so a coarser
    grid is a shift. The rows are signed deltas until compacted (several a key, counts
    possibly negative): the sums per tile cell add them up, and a cell whose count adds
    up to zero (its incidents moved or deleted) is no feature."""
    cells = incident_tile_cell if months is None else incident_tile_month
    level = _level(months is not None)
    shift = level - _Z
    ring = _ring(layer)

    def span(tile: ColumnElement[Any], cell: ColumnElement[Any]) -> ColumnElement[bool]:
        first = (tile * CLUSTER_CELLS - ring).op("<<")(shift)
        last = ((tile * CLUSTER_CELLS + CLUSTER_CELLS + ring).op("<<")(shift)) - 1
        return cell.between(first, last)

    where = [cells.c.z == level, span(_X, cells.c.cx), span(_Y, cells.c.cy)]
    if categories is not None:
        where.append(cells.c.category.in_(list(categories)))
    if months is not None:
        start, end = months
        if start is not None:
            where.append(incident_tile_month.c.month >= start)
        if end is not None:
            where.append(incident_tile_month.c.month < end)
    n = func.sum(cells.c.n)
    centre = func.ST_Transform(
        func.ST_SetSRID(
            func.ST_MakePoint(func.sum(cells.c.sum_lon) / n, func.sum(cells.c.sum_lat) / n),
            4326,
        ),
        3857,
    )
    return (
        select(_mvt_geom(centre, layer).label("geom"), cast(n, Integer).label("count"))
        .where(*where)
        .group_by(cells.c.cx.op(">>")(shift), cells.c.cy.op(">>")(shift))
        .having(n > 0)
    )


def compact_cells() -> Select:
    """Fold the cell tables' deltas into one row a key (``incident_tiles_compact``,
    migration 0019): the rows removed, NULL when another compaction was running."""
    return select(func.incident_tiles_compact())


def _ring(layer: Layer) -> int:
    """The cells of the tile's buffer a side: the buffer is a whole number of cells."""
    ring, rest = divmod(layer.tiles.buffer * CLUSTER_CELLS, layer.tiles.extent)
    if rest:
        raise ValueError(f"{layer.id}: a tile buffer of {layer.tiles.buffer} is no whole cell")
    return ring


def zone_matches(timezone: str) -> ColumnElement[bool]:
    """Whether the months of ``incident_tile_month`` are months in ``timezone``."""
    zone = select(incident_tile_zone.c.timezone).scalar_subquery()
    return func.coalesce(zone == literal(timezone, Text), False)


def tile_mvt(layer: Layer, features: Select) -> Select:
    """The tile: ``ST_AsMVT`` over the features (an empty bytea when there are none)."""
    rows = features.subquery("tile_rows")
    id_column = "fid" if "fid" in rows.c else None
    args = [literal_column("tile_rows"), literal(layer.id, Text), layer.tiles.extent, "geom"]
    if id_column:
        args.append(id_column)
    return select(func.coalesce(func.ST_AsMVT(*args), literal(b""))).select_from(rows)
