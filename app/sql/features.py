"""SQL for OGC API Features: GeoJSON features built in PostGIS from a layer declaration,
with the filters of Parts 1 to 3 as bound conditions."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pyproj import Transformer
from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    Text,
    and_,
    bindparam,
    cast,
    func,
    literal,
    null,
    or_,
    select,
    true,
    tuple_,
)

from app.ogc.crs import OutputCrs
from app.ogc.layers import Layer


def output_geometry(layer: Layer, out: OutputCrs) -> ColumnElement[Any]:
    """The geometry in the requested CRS and axis order (storage is EPSG:4326, lon/lat)."""
    geom = layer.geom if out.srid == 4326 else func.ST_Transform(layer.geom, out.srid)
    return func.ST_FlipCoordinates(geom) if out.lat_first else geom


def feature_json(layer: Layer, out: OutputCrs, visible: Iterable[str]) -> ColumnElement[Any]:
    """One GeoJSON Feature as text. Every feature carries every property key; a field the
    caller's role may not see is null."""
    shown = set(visible)
    properties: list[Any] = []
    for f in layer.fields:
        properties += [literal(f.name, Text), f.expr if f.name in shown else null()]
    # Option 0: no "crs" member; the CRS is in the Content-Crs header (Part 2).
    geometry = func.ST_AsGeoJSON(output_geometry(layer, out), out.decimals, 0)
    # Joined as text: PostGIS writes valid GeoJSON, and casting it to json to nest it in
    # json_build_object parsed every geometry again (a fifth of a 1,000-feature page).
    return (
        literal('{"type":"Feature","id":', Text)
        + cast(func.to_json(layer.feature_id), Text)
        + literal(',"geometry":', Text)
        + geometry
        + literal(',"properties":', Text)
        + cast(func.json_build_object(*properties), Text)
        + literal("}", Text)
    )


def select_items(
    layer: Layer,
    conditions: list[ColumnElement[bool]],
    out: OutputCrs,
    visible: Iterable[str],
    *,
    after: Any,
    limit: int,
    filter_first: bool = False,
) -> Select:
    """``limit + 1`` features in id order after the cursor (keyset paging: a walk visits
    each feature once even while rows are added); the extra row says a next page exists.

    The cursor is the bound parameter ``after``. ``filter_first`` (integer ids only) orders
    by ``id + 0``: the same order, but one the primary key cannot give, so PostgreSQL
    reads the rows the filters select (the spatial index for a bbox) and keeps the first
    ``limit + 1``, instead of walking the primary key until enough rows pass the filters.
    That walk reads ``limit / selectivity`` rows, in random heap order: a bbox holding 1%
    of 1,000,000 incidents took 100-390 ms against 9-17 ms (``bench/serving.py``); the
    planner, which sees no link between ids and places, picked it for such boxes. The
    caller chooses (``app.routers.features``), knowing how many rows match."""
    where = [*layer.where, *conditions]
    if after is not None:
        where.append(layer.feature_id > bindparam("after", after, type_=layer.feature_id.type))
    order = layer.feature_id
    if filter_first and layer.id_type == "integer":
        order = layer.feature_id + 0
    return (
        select(layer.feature_id.label("fid"), feature_json(layer, out, visible).label("feature"))
        .select_from(layer.source)
        .where(*where)
        .order_by(order)
        .limit(limit + 1)
    )


@functools.lru_cache(maxsize=16)
def _to_lon_lat(srid: int) -> Transformer:
    return Transformer.from_crs(srid, 4326, always_xy=True)


def bbox_centre(bbox: tuple[float, float, float, float], srid: int) -> tuple[float, float]:
    """The middle of the box (given in ``srid``, x/y order) as longitude and latitude."""
    west, south, east, north = bbox
    x, y = (west + east) / 2, (south + north) / 2
    return (x, y) if srid == 4326 else _to_lon_lat(srid).transform(x, y)


def squared_distance(layer: Layer, centre: tuple[float, float]) -> ColumnElement[float]:
    """A point's squared distance from ``centre`` (degrees², planar), from its
    coordinates: the same float whichever way the row is read, so that the first page's
    order and the later pages' exclusion of it agree to the last bit."""
    dx = func.ST_X(layer.geom) - literal(centre[0], Float)
    dy = func.ST_Y(layer.geom) - literal(centre[1], Float)
    return dx * dx + dy * dy


def select_nearest_items(
    layer: Layer,
    conditions: list[ColumnElement[bool]],
    out: OutputCrs,
    visible: Iterable[str],
    centre: tuple[float, float],
    *,
    limit: int,
) -> Select:
    """The first page of a bbox of points: the ``limit + 1`` features nearest ``centre``
    (by squared distance, then id; the extra row says a next page exists). A map's first
    page fills the middle of its view, and reads about ``limit`` rows, where the first
    ids of a box are found only by reading every row of it (a dense z12 box: 77,000
    rows, 40 ms against 20; ``bench/serving.py``). The next pages hold the rest of the box
    in id order (``beyond_nearest``), as cheap as pages of a box always were.

    Two steps, because the spatial index gives rows by distance (KNN) but not by
    (distance, id), and points often share a place (incidents geocoded to one address):
    the largest squared distance among the ``limit + 1`` nearest rows, read along the
    index; then every row within it, ordered. ``conditions`` should hold the box's
    ``nearest_first`` condition."""
    point = func.ST_SetSRID(func.ST_MakePoint(*centre), 4326)
    distance = squared_distance(layer, centre)
    where = [*layer.where, *conditions]
    nearest = (
        select(distance.label("distance"))
        .select_from(layer.source)
        .where(*where)
        .order_by(layer.geom.op("<->", return_type=Float)(point))
        .limit(limit + 1)
        .subquery("nearest")
    )
    edge = select(func.max(nearest.c.distance).label("distance")).cte("edge")
    # The index's box, a hair wider than the edge: the exact test is the next condition.
    reach = func.sqrt(edge.c.distance) * (1 + 1e-9)
    return (
        select(
            distance.label("distance"),
            layer.feature_id.label("fid"),
            feature_json(layer, out, visible).label("feature"),
        )
        .select_from(layer.source)
        .join(edge, true())
        .where(
            *where, layer.geom.op("&&")(func.ST_Expand(point, reach)), distance <= edge.c.distance
        )
        .order_by(distance, layer.feature_id)
        .limit(limit + 1)
    )


def beyond_nearest(layer: Layer, centre: tuple[float, float]) -> ColumnElement[bool]:
    """The features after the first page of ``select_nearest_items``, whose last row is
    bound as ``edge_distance`` and ``edge_id`` (``driver_statement``'s late parameters)."""
    edge = tuple_(
        bindparam("edge_distance", type_=Float), bindparam("edge_id", type_=layer.feature_id.type)
    )
    return tuple_(squared_distance(layer, centre), layer.feature_id) > edge


# Reading a row the filters select costs about half as much as reading one along the
# primary key (heap pages in index order against random ones; bench/serving.py).
FILTERS_FIRST_GAIN = 2


def filters_first(matched: int, total: int, limit: int) -> bool:
    """Whether a filtered page (``select_items``' ``filter_first``) is cheaper read through
    its filters (all ``matched`` rows, then the first ``limit`` by id) than along the
    primary key (``limit`` rows in ``matched / total``: ``limit * total / matched`` rows
    read, assuming ids and filters independent)."""
    return matched * matched < FILTERS_FIRST_GAIN * limit * total


def select_item(layer: Layer, feature_id: Any, out: OutputCrs, visible: Iterable[str]) -> Select:
    """SELECT one feature of ``layer`` as GeoJSON text, with the ``visible`` fields."""
    return (
        select(feature_json(layer, out, visible))
        .select_from(layer.source)
        .where(*layer.where, layer.feature_id == feature_id)
    )


def count_items(layer: Layer, conditions: list[ColumnElement[bool]]) -> Select:
    """SELECT the number of the layer's features that meet ``conditions``."""
    return select(func.count()).select_from(layer.source).where(*layer.where, *conditions)


def select_extent(layer: Layer) -> Select:
    """Spatial extent (west, south, east, north) and, if the layer has one, time extent."""
    box = func.ST_Extent(layer.geom)
    columns = [func.ST_XMin(box), func.ST_YMin(box), func.ST_XMax(box), func.ST_YMax(box)]
    if layer.datetime_field is not None:
        when = layer.field(layer.datetime_field).expr
        columns += [func.min(when), func.max(when)]
    return select(*columns).select_from(layer.source).where(*layer.where)


def bbox_condition(
    layer: Layer,
    bbox: tuple[float, float, float, float],
    srid: int,
    *,
    nearest_first: bool = False,
) -> ColumnElement[bool]:
    """Features whose geometry intersects the box (given in ``srid``, x/y order).

    ``nearest_first``: the condition of a page read nearest first (``select_nearest_items``),
    always ``ST_Intersects``. PostgreSQL cannot estimate the cheaper coordinate test
    (1/200 per range, so 1/40,000 of the box's rows for both): it then expects a handful
    of rows and sorts the whole box (77,000 rows, 40 ms) instead of reading the nearest
    ~1,000 through the spatial index (5 ms). ``ST_Intersects`` carries PostGIS's estimate."""
    envelope = func.ST_MakeEnvelope(*bbox, srid)
    if srid != 4326:
        # The box's outline, densified and transformed: its edges are straight only in
        # its own CRS.
        envelope = func.ST_Transform(func.ST_Segmentize(envelope, _segment(bbox)), 4326)
    elif layer.geometry_type == "Point" and not nearest_first:
        # A point intersects a box when its coordinates lie within the box's, edges
        # included: the index's && (float boxes, a little larger than the box) then
        # the exact test, at half the cost of ST_Intersects on a dense box.
        west, south, east, north = bbox
        return and_(
            layer.geom.op("&&")(envelope),
            func.ST_X(layer.geom).between(west, east, symmetric=True),
            func.ST_Y(layer.geom).between(south, north, symmetric=True),
        )
    return func.ST_Intersects(layer.geom, envelope)


def _segment(bbox: tuple[float, float, float, float]) -> float:
    return max(bbox[2] - bbox[0], bbox[3] - bbox[1]) / 16 or 1.0


def datetime_condition(
    layer: Layer, start: datetime | None, end: datetime | None
) -> ColumnElement[bool]:
    """An instant (start == end) or a closed interval, open at ``..`` ends."""
    if layer.datetime_field is None:
        return and_(True)
    when = layer.field(layer.datetime_field).expr
    if start is not None and start == end:
        return when == start
    parts = []
    if start is not None:
        parts.append(when >= start)
    if end is not None:
        parts.append(when <= end)
    return and_(*parts) if parts else or_(when.is_not(None), when.is_(None))
