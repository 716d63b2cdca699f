"""The tile cache of a worker, and its fast path.

Tiles are kept by layer, z/x/y, filters, the fields the caller may see and the data
version (``app.core.versions``): a write anywhere makes every worker build fresh tiles, while
repeated tiles never reach the database. :class:`CachedTiles` answers tiles before
FastAPI's routing and dependencies run (they cost ~1 ms of CPU a request, more than a
cached tile and as much as a sparse uncached one): a cached tile straight away, a
missing one encoded in PostGIS and cached, whenever everything about it is already
known (the caller's key, the layer catalog of the current data version, a valid tile).
Anything else (an unknown key, a stale catalog, a tile out of range, a malformed filter
or one on a field the caller may not filter on) goes the normal way
(``app.routers.tiles``), which says why or fills the cache. Who may read a layer, see a
field or filter on it is ``app.access``'s to say, here as on the routes.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.access import (
    filter_parameters,
    known_principal,
    may_read,
    queryable_fields,
    visible_fields,
)
from app.core.errors import ProblemError
from app.ogc.filters import RESERVED
from app.ogc.layers import Layer
from app.security import PUBLIC, Principal
from app.services.tiles import check_tile, render_tile

MVT = "application/vnd.mapbox-vector-tile"
# Tiles smaller than this are sent as they are: gzip would save a few bytes at best.
GZIP_MIN_BYTES = 512


@dataclass
class Tile:
    """An encoded vector tile and its ETag."""

    data: bytes
    etag: str
    # The same tile gzipped, made the first time a client asks for gzip (most tile
    # clients do, a few never: compressing every tile up front cost ~2 ms a tile).
    _gzipped: bytes | None = None

    @property
    def size(self) -> int:
        """What the tile may come to hold: its bytes, and at most as many gzipped."""
        return 2 * len(self.data)

    def gzipped(self) -> bytes | None:
        """The gzipped tile, or None for tiles too small to gain from it."""
        if len(self.data) < GZIP_MIN_BYTES:
            return None
        if self._gzipped is None:
            self._gzipped = gzip.compress(self.data, compresslevel=5)
        return self._gzipped


def make_tile(data: bytes) -> Tile:
    """A tile from its MVT bytes, its ETag a hash of them."""
    # SHA-1 only names a version of the tile (no secret rides on it), and it hashes a
    # megabyte in 1 ms here, where BLAKE2b took 2.4.
    return Tile(data, '"' + hashlib.sha1(data, usedforsecurity=False).hexdigest()[:24] + '"')


class TileCache:
    """Least recently used tiles, bounded by their total size in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = 0
        self._tiles: OrderedDict[Hashable, Tile] = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        """Whether a tile is held, without counting a hit or a miss (for tests)."""
        return key in self._tiles

    def get(self, key: Hashable) -> Tile | None:
        """The tile under ``key``, or None; counts a hit or a miss."""
        tile = self._tiles.get(key)
        if tile is None:
            self.misses += 1
            return None
        self.hits += 1
        self._tiles.move_to_end(key)
        return tile

    def put(self, key: Hashable, tile: Tile) -> None:
        """Hold ``tile`` under ``key``, dropping the least recently used past ``max_bytes``
        (a tile larger than the whole cache is not held)."""
        if tile.size > self.max_bytes:
            return
        if (old := self._tiles.pop(key, None)) is not None:
            self.bytes -= old.size
        self._tiles[key] = tile
        self.bytes += tile.size
        while self.bytes > self.max_bytes:
            _, evicted = self._tiles.popitem(last=False)
            self.bytes -= evicted.size


def tile_key(
    layer: Layer,
    zxy: tuple[int, int, int],
    query: QueryParams,
    visible: Iterable[str],
    version: int,
) -> Hashable:
    """``visible`` is in the key: a tile is only ever served again to callers who see
    the same fields, and so may use the same filters (``app.access``)."""
    return (layer.id, zxy, tuple(sorted(query.multi_items())), tuple(visible), version)


async def cached_tile(
    state, layer: Layer, who: Principal, query: QueryParams, zxy: tuple[int, int, int]
) -> Tile:
    """The tile from the worker's cache, or encoded in PostGIS and cached. ``state`` is
    the app's; the caller has checked access and z/x/y."""
    catalog = state.catalog
    visible = visible_fields(layer, who)
    key = tile_key(layer, zxy, query, visible, catalog.version.value)
    if (tile := state.tile_cache.get(key)) is None:
        data = await render_tile(
            state.reader, catalog.statements, state.settings, layer, who, visible, query, zxy
        )
        tile = make_tile(data)
        state.tile_cache.put(key, tile)
    return tile


def tile_reply(
    tile: Tile, layer: Layer, who: Principal, headers: Headers, max_age_s: int
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body for a tile: 304 for a matching ETag, gzip only for a
    client that accepts it (and then with ``Content-Encoding``)."""
    # Tiles the public would get may sit in shared caches; a tile with fields the public
    # may not see (an analyst's tile of a public layer) only in the client's, whatever a
    # shared cache makes of Vary.
    shared = may_read(layer, PUBLIC) and visible_fields(layer, who) == visible_fields(layer, PUBLIC)
    scope = "public" if shared else "private"
    reply = {
        "ETag": tile.etag,
        "Cache-Control": f"{scope}, max-age={max_age_s}",
        "Vary": "Accept-Encoding, Authorization",
    }
    if tile.etag in headers.get("if-none-match", ""):
        return 304, reply, b""
    reply["Content-Type"] = MVT
    if "gzip" in headers.get("accept-encoding", "") and (packed := tile.gzipped()) is not None:
        reply["Content-Encoding"] = "gzip"
        return 200, reply, packed
    return 200, reply, tile.data


_XYZ = re.compile(r"/tiles/([A-Za-z0-9_-]+)/(\d+)/(\d+)/(\d+)\.mvt")
_OGC = re.compile(r"/collections/([A-Za-z0-9_-]+)/tiles/WebMercatorQuad/(\d+)/(\d+)/(\d+)")


# The routes' bound on z (app.routers.tiles): beyond it they answer 422, not a tile.
MAX_Z = 30


def _filters_allowed(layer: Layer, who: Principal, query: QueryParams) -> bool:
    """Whether every parameter is reserved, names a field ``who`` may filter on or is a
    named parameter of the layer it may use (``unit``, ``occurred_from``): a cheap first
    look (a set of names) so that no tile, cached or not, answers a filter on a withheld
    field. A CQL2 ``filter``'s properties are checked where it is parsed
    (``app.ogc.filters``), before any tile is encoded; a cached tile was encoded for the
    same filter text and the same visible fields (its key), so it passed that check."""
    names = query.keys() - RESERVED
    if not names:
        return True
    usable = {f.name for f in queryable_fields(layer, who)}
    return names <= usable | {p.name for p in filter_parameters(layer, who)}


class CachedTiles:
    """ASGI middleware: serve a tile, from the cache or encoded and cached, when
    everything about it is already known (the caller's key, the layer catalog of the
    current data version, a tile in range, filters that parse)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a tile GET here when it can be; anything else, and any tile this cannot
        answer, goes on to the routes."""
        if scope["type"] == "http" and scope["method"] == "GET":
            try:
                reply = await self._tile(scope)
            except Exception as exc:  # a database error: answered as the routes would
                await self._error(scope, receive, send, exc)
                return
            if reply is not None:
                status, headers, body = reply
                headers["Content-Length"] = str(len(body))
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    async def _tile(self, scope: Scope) -> tuple[int, dict[str, str], bytes] | None:
        path = scope["path"]
        if match := _XYZ.fullmatch(path):
            layer_id, z, x, y = match.groups()
        elif match := _OGC.fullmatch(path):
            layer_id, z, y, x = match.groups()
        else:
            return None
        state = scope["app"].state
        layer = state.catalog.current().get(layer_id)
        if layer is None:
            return None
        headers = Headers(scope=scope)
        who = known_principal(state.key_cache, headers.get("authorization"))
        if who is None or not may_read(layer, who):
            return None  # unknown key or no access: the normal path says why
        query = QueryParams(scope["query_string"])
        if not _filters_allowed(layer, who, query):
            return None  # the normal path answers the 400, never a tile
        visible = visible_fields(layer, who)
        zxy = (int(z), int(x), int(y))
        key = tile_key(layer, zxy, query, visible, state.catalog.version.value)
        tile = state.tile_cache.get(key)
        if tile is None:
            if zxy[0] > MAX_Z:
                return None
            try:
                check_tile(layer, *zxy, state.settings.tiles.max_zoom)
                tile = await cached_tile(state, layer, who, query, zxy)
            except ProblemError:
                return None  # out of range, a malformed filter: the normal path says so
        return tile_reply(tile, layer, who, headers, state.settings.tiles.max_age_s)

    @staticmethod
    async def _error(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
        """Answer with the app's handler for the error (``app.core.errors``: a database that
        is down is a 503), as the tile routes' errors are answered."""
        handlers = scope["app"].exception_handlers
        handler = next((handlers[c] for c in type(exc).__mro__ if c in handlers), None)
        if handler is None:
            raise exc
        response = await handler(Request(scope, receive), exc)
        await response(scope, receive, send)
