"""The one read path of a layer's features: its filters (``app.ogc.filters``), one count
cache, one page statement (``app.sql.features``), one encoder (GeoJSON built in PostGIS
and streamed). ``GET /collections/{id}/items`` and ``GET /incidents`` are both views of
it, so for the same filters and role they answer the same features with the same
properties and the same ``numberMatched``.

The two views differ only in their order: the OGC route's first page of a bbox of points
holds the features nearest the box's centre (a web map fills the middle of its view
first; ``after`` is then ``distance:id``), while ``/incidents`` always pages by id, its
``after`` the last id of the previous page."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import StreamingResponse
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from sqlalchemy.ext.asyncio import AsyncEngine

from app.access import visible_fields
from app.core.db import driver_connection, driver_statement
from app.ogc.crs import OutputCrs, parse_crs
from app.ogc.filters import (
    check_lookups,
    feature_id,
    layer_conditions,
    nearest_cursor,
    request_bbox,
)
from app.ogc.layers import Layer
from app.ogc.links import absolute, same_query
from app.security import Principal
from app.services.catalog import Catalog
from app.sql import features as sql

GEOJSON = "application/geo+json"


def filters_key(request: Request) -> tuple:
    """The request's filters, as the count and statement caches key them."""
    return tuple(sorted((k, v) for k, v in request.query_params.multi_items() if k != "after"))


async def items_page(
    request: Request,
    catalog: Catalog,
    layer: Layer,
    who: Principal,
    *,
    limit: int | None,
    crs: str | None,
    after: str | None,
    nearest_first: bool = True,
    fresh_count: bool = False,
) -> StreamingResponse:
    """A page of ``layer``'s features for ``who`` (the fields it sees), filtered by the
    request's query parameters, with ``numberMatched`` and a next link.

    ``nearest_first``: the first page of a bbox of points holds the features nearest the
    box's centre (``sql.select_nearest_items``), the next ones the rest by id; else every
    page is in id order and ``after`` is an id. ``fresh_count``: count again rather than
    take the cached ``numberMatched`` (the first page of ``/incidents``), and keep that
    count for the pages after it, in the one cache."""
    state = request.app.state
    settings, reader = state.settings, state.reader
    query = request.query_params
    out = parse_crs(crs, settings.territory.projected_crs)
    page_size = min(limit or settings.api.default_limit, settings.api.max_limit)
    box = request_bbox(query, settings)
    centre = None
    if nearest_first and box is not None and layer.geometry_type == "Point":
        centre = sql.bbox_centre(*box)
    edge = cursor = None
    if after is not None and centre is not None:
        edge, cursor = nearest_cursor(layer, after)
    elif after is not None:
        cursor = feature_id(layer, after, cursor=True)
    nearest = centre is not None and edge is None
    conditions = layer_conditions(query, layer, settings, who, nearest_first=nearest)
    if any(p.lookup is not None and p.name in query for p in layer.parameters):
        async with reader.connect() as conn:
            await check_lookups(conn, query, layer, who)
    filters = filters_key(request)
    first = False
    if nearest:
        # Counted beside the page, on a connection of its own (it reads the whole box).
        matched: int | asyncio.Task[int] = asyncio.create_task(
            count(catalog, reader, layer, filters, conditions, fresh=fresh_count)
        )
    else:
        matched = await count(catalog, reader, layer, filters, conditions, fresh=fresh_count)
        first = bool(conditions) and sql.filters_first(
            matched, await count(catalog, reader, layer, (), []), page_size
        )
    visible = visible_fields(layer, who)
    key = ("items", layer.id, catalog.data_version(layer), filters, tuple(visible), out.uri)
    key += (page_size,)
    key += (nearest, edge is not None, cursor is not None, first)
    late = _late(edge, cursor)
    if (statement := catalog.statements.get(key)) is None:
        if nearest:
            select = sql.select_nearest_items(
                layer, conditions, out, visible, centre, limit=page_size
            )
        else:
            if edge is not None:
                conditions = [*conditions, sql.beyond_nearest(layer, centre)]
            select = sql.select_items(
                layer,
                conditions,
                out,
                visible,
                after=cursor,
                limit=page_size,
                filter_first=first,
            )
        statement = driver_statement(select, reader.dialect, **late)
        catalog.statements.set(key, statement)
    # The next link: after the first page of a box its last row, then also the last id.
    prefix = "" if edge is None else cursor_text(list(edge)) + ":"
    body = _feature_collection(
        request, reader, statement.sql, {**statement.params, **late}, page_size, matched, prefix
    )
    return StreamingResponse(body, media_type=GEOJSON, headers=crs_header(out))


def _late(edge: tuple[float, Any] | None, cursor: Any) -> dict[str, Any]:
    """The cursor's bound parameters: the first page's last row, the last id."""
    late = {} if cursor is None else {"after": cursor}
    if edge is not None:
        late |= {"edge_distance": edge[0], "edge_id": edge[1]}
    return late


async def count(
    catalog: Catalog,
    reader: AsyncEngine,
    layer: Layer,
    filters: tuple,
    conditions: list,
    *,
    fresh: bool = False,
) -> int:
    """numberMatched, counted once per layer, filters and data version (a walk through a
    large collection pays for one count, not one per page; a count costs ~10x a page on
    a million rows). ``fresh``: count now, and keep it. The version is read before
    counting: a write committed during the count bumps it after, and the next page
    counts again instead of keeping a stale number."""
    key = (layer.id, catalog.data_version(layer), filters)
    matched = None if fresh else catalog.counts.get(key)
    if matched is None:
        async with reader.connect() as conn:
            matched = (await conn.execute(sql.count_items(layer, conditions))).scalar_one()
        catalog.counts.set(key, matched)
    return matched


# Rows per chunk of a streamed page (libpq's chunked rows mode: one query, no cursor).
STREAM_ROWS = 500


class _Utf8(Loader):
    """Text as the bytes PostgreSQL sent: the features go out as they came in, without
    a decode and an encode in Python."""

    def load(self, data: Buffer) -> bytes:
        return bytes(data)


async def _feature_collection(
    request: Request,
    reader: AsyncEngine,
    statement: str,
    params: dict,
    page_size: int,
    matched: int | asyncio.Task[int],
    cursor_prefix: str = "",
) -> AsyncIterator[bytes]:
    """Stream a page: features as PostGIS wrote them, then the counts and links (only
    known at the end). No page is ever held in memory as Python objects. Each row is its
    cursor (an id, or a distance and an id), then its feature; ``cursor_prefix`` goes
    before the last row's in the next link."""
    try:
        yield b'{"type":"FeatureCollection","features":['
        returned, last, has_more = 0, None, False
        chunk: list[bytes] = []
        async with driver_connection(reader) as conn, conn.cursor() as cur:
            cur.adapters.register_loader("text", _Utf8)
            async for *position, feature in cur.stream(statement, params, size=STREAM_ROWS):
                if returned == page_size:
                    has_more = True  # the extra row: read to the end, no cancel needed
                    continue
                chunk.append(feature)
                returned, last = returned + 1, position
                if len(chunk) == STREAM_ROWS:
                    yield (b"," if returned > len(chunk) else b"") + b",".join(chunk)
                    chunk = []
        if chunk:
            yield (b"," if returned > len(chunk) else b"") + b",".join(chunk)
        if isinstance(matched, asyncio.Task):
            matched = await matched
    finally:
        if isinstance(matched, asyncio.Task) and not matched.done():
            matched.cancel()  # the client left mid-page
    path = request.url.path
    links = [{"href": absolute(request, path, same_query(request)), "rel": "self", "type": GEOJSON}]
    if has_more:
        after = cursor_prefix + cursor_text(last)
        params = same_query(request, after=after, limit=page_size)
        links.append({"href": absolute(request, path, params), "rel": "next", "type": GEOJSON})
    tail = {
        "numberMatched": matched,
        "numberReturned": returned,
        "timeStamp": datetime.now().astimezone().isoformat(timespec="seconds"),
        "links": links,
    }
    yield b"]," + orjson.dumps(tail)[1:]


def cursor_text(position: list[Any]) -> str:
    """The ``after`` of a next link: the last id, or ``distance:id`` (the float's repr
    reads back to the same float, so the next page starts exactly after this one)."""
    *distance, fid = position
    if isinstance(fid, bytes):  # a text id, loaded as bytes like the features
        fid = fid.decode()
    return ":".join([*map(repr, distance), str(fid)])


def crs_header(out: OutputCrs) -> dict[str, str]:
    """The ``Content-Crs`` header of a response in ``out`` (OGC API Features Part 2)."""
    return {"Content-Crs": f"<{out.uri}>"}
