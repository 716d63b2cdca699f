"""The tile cache of a worker, and its fast path.

Tiles are kept by layer, z/x/y, filters, the fields the caller may see and the version of
the data the layer reads (``Catalog.tile_version``, ``app.core.versions``): a new district
boundary makes the district tiles fresh, and leaves a hot spot run's tiles alone. Incident
tiles do not key on incident writes: a write names the positions it wrote (old and new),
and the cache drops the incident tiles that hold one, at every zoom, with their buffer
(:meth:`TileCache.follow`); the other incident tiles stay. Every response says
``X-Cache: hit`` or ``miss``.

:class:`TileHits`, the outermost middleware, answers the tiles this worker holds before
anything else runs (the middlewares between cost twice what the answer does).
:class:`CachedTiles` answers the rest before FastAPI's routing and dependencies run (they
cost ~1 ms of CPU a request, more than a cached tile and as much as a sparse uncached
one): a cached tile straight away, a missing one encoded in PostGIS and cached, whenever
everything about it is already known (the caller's key, the layer catalog of the
current data version, a valid tile). Anything else (an unknown key, a stale catalog, a
tile out of range, a malformed filter or one on a field the caller may not filter on)
goes the normal way (``app.routers.tiles``), which says why or fills the cache. Who may
read a layer, see a field or filter on it is ``app.access``'s to say, here as on the
routes.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import re
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

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
from app.core.versions import Box, DataVersion
from app.ogc.filters import RESERVED
from app.ogc.layers import Layer, incidents_layer
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
    # Where a clustered tile's counts come from (X-Tile-Source: app.services.tiles).
    source: str | None = None
    # Its answers' encoded headers, by kind of answer (:func:`tile_answer`).
    heads: dict[Hashable, list[tuple[bytes, bytes]]] = field(
        default_factory=dict, repr=False, compare=False
    )

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


def make_tile(data: bytes, source: str | None = None) -> Tile:
    """A tile from its MVT bytes, its ETag a hash of them."""
    # SHA-1 only names a version of the tile (no secret rides on it), and it hashes a
    # megabyte in 1 ms here, where BLAKE2b took 2.4.
    etag = '"' + hashlib.sha1(data, usedforsecurity=False).hexdigest()[:24] + '"'
    return Tile(data, etag, source=source)


# Layers whose tiles follow located changes (a table's written positions) rather than
# its version: table -> layer id. The margin is the tile's buffer (a point just outside a
# tile still draws in it, and counts in its clusters) plus a pixel against rounding.
_INCIDENTS = incidents_layer().tiles
LOCATED = {"incident": "incidents"}
LOCATED_MARGIN = (_INCIDENTS.buffer + 1) / _INCIDENTS.extent
# Mercator's edge: the latitude of the grid's top and bottom rows.
_MAX_LAT = 85.0511287798066


def _column(lon: float, n: int) -> float:
    return (lon + 180.0) / 360.0 * n


def _row(lat: float, n: int) -> float:
    lat = max(-_MAX_LAT, min(_MAX_LAT, lat))
    return (1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n


def _span(low: float, high: float, n: int, margin: float) -> range:
    """The tiles (columns or rows, of ``n``) whose buffered extent reaches [low, high]:
    tile t spans [t - margin, t + 1 + margin]."""
    first = max(0, math.ceil(low - 1 - margin))
    return range(first, min(n - 1, math.floor(high + margin)) + 1)


def tiles_touched(box: Box, z: int, margin: float) -> tuple[range, range]:
    """The columns and rows of the zoom ``z`` tiles whose extent, widened by ``margin``
    (in tiles), holds some of the lon/lat ``box``."""
    n = 2**z
    west, south, east, north = box
    columns = _span(_column(west, n), _column(east, n), n, margin)
    return columns, _span(_row(north, n), _row(south, n), n, margin)


class TileCache:
    """Least recently used tiles, bounded by their total size in bytes.

    Keys are :func:`tile_key`'s (layer id and z/x/y first); the cache also finds them by
    layer and place, to drop the tiles a located change touches."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = 0
        # Located changes of ``DataVersion`` applied so far (``follow``).
        self.located_seen = 0
        self._tiles: OrderedDict[Hashable, Tile] = OrderedDict()
        # layer id -> zoom -> (x, y) -> the keys of its tiles held (any filters).
        self._places: dict[str, dict[int, dict[tuple[int, int], set[Hashable]]]] = {}

    def __contains__(self, key: Hashable) -> bool:
        """Whether a tile is held, without counting a hit or a miss (for tests)."""
        return key in self._tiles

    def __len__(self) -> int:
        """How many tiles are held."""
        return len(self._tiles)

    def get(self, key: Hashable) -> Tile | None:
        """The tile under ``key``, or None; counts a hit or a miss."""
        tile = self._tiles.get(key)
        if tile is None:
            self.misses += 1
            return None
        self.hits += 1
        self._tiles.move_to_end(key)
        return tile

    def hit(self, key: Hashable, version: DataVersion) -> Tile | None:
        """The tile under ``key`` once the located changes of ``version`` are followed,
        counting a hit; None counts nothing (the caller that goes on to render it counts
        the miss: :func:`lookup`)."""
        self.follow(version)
        tile = self._tiles.get(key)
        if tile is not None:
            self.hits += 1
            self._tiles.move_to_end(key)
        return tile

    def put(self, key: Hashable, tile: Tile) -> None:
        """Hold ``tile`` under ``key``, dropping the least recently used past ``max_bytes``
        (a tile larger than the whole cache is not held)."""
        if tile.size > self.max_bytes:
            return
        self.pop(key)
        self._tiles[key] = tile
        self.bytes += tile.size
        self._place(key).add(key)
        while self.bytes > self.max_bytes:
            self.pop(next(iter(self._tiles)))

    def pop(self, key: Hashable) -> None:
        """Drop the tile under ``key``, if held."""
        if (old := self._tiles.pop(key, None)) is None:
            return
        self.bytes -= old.size
        layer_id, (z, x, y) = key[0], key[1]  # type: ignore[index]
        zooms = self._places[layer_id]
        keys = zooms[z][x, y]
        keys.discard(key)
        if not keys:
            del zooms[z][x, y]

    def _place(self, key: Hashable) -> set[Hashable]:
        layer_id, (z, x, y) = key[0], key[1]  # type: ignore[index]
        return self._places.setdefault(layer_id, {}).setdefault(z, {}).setdefault((x, y), set())

    def drop_layer(self, layer_id: str) -> int:
        """Drop every tile of a layer; how many."""
        keys = [k for tiles in self._places.get(layer_id, {}).values() for ks in tiles.values()
                for k in ks]  # fmt: skip
        for key in keys:
            self.pop(key)
        return len(keys)

    def drop_near(self, layer_id: str, boxes: Iterable[Box], margin: float) -> int:
        """Drop the tiles of a layer, at every zoom, whose extent widened by ``margin``
        (in tiles) holds some of the lon/lat ``boxes``; how many. A point touches one to
        four tiles a zoom: those are looked up; a box wider than the tiles held at a zoom
        is tested against each of them instead."""
        doomed: list[Hashable] = []
        for z, held in self._places.get(layer_id, {}).items():
            if not held:
                continue
            for box in boxes:
                columns, rows = tiles_touched(box, z, margin)
                if len(columns) * len(rows) <= len(held):
                    places = ((x, y) for x in columns for y in rows if (x, y) in held)
                else:
                    places = (p for p in held if p[0] in columns and p[1] in rows)
                for place in places:
                    doomed.extend(held[place])
        for key in doomed:
            self.pop(key)
        return len(doomed)

    def follow(self, version: DataVersion) -> None:
        """Drop the tiles the located changes since the last call touched (all of a
        located layer's tiles if the changes are no longer all known)."""
        if self.located_seen == version.located:
            return
        changes = version.located_since(self.located_seen)
        self.located_seen = version.located
        if changes is None:
            for layer_id in LOCATED.values():
                self.drop_layer(layer_id)
            return
        for change in changes:
            if (layer_id := LOCATED.get(change.table or "")) and change.boxes:
                self.drop_near(layer_id, change.boxes, LOCATED_MARGIN)


def tile_key(
    layer: Layer,
    zxy: tuple[int, int, int],
    query: QueryParams,
    visible: Iterable[str],
    version: Hashable,
) -> Hashable:
    """``visible`` is in the key: a tile is only ever served again to callers who see
    the same fields, and so may use the same filters (``app.access``). ``version`` is
    the layer's (``Catalog.tile_version``)."""
    return (layer.id, zxy, tuple(sorted(query.multi_items())), tuple(visible), version)


def lookup(state, key: Hashable) -> Tile | None:
    """The cached tile under ``key``, once the cache has dropped what the latest located
    changes touched; counts a hit or a miss."""
    state.tile_cache.follow(state.data_version)
    return state.tile_cache.get(key)


async def rendered_tile(
    state, layer: Layer, who: Principal, query: QueryParams, zxy: tuple[int, int, int]
) -> Tile:
    """The tile encoded in PostGIS now, and cached unless a located change arrived while
    it was encoded (it may hold the data from before the change, and no key says so)."""
    catalog, version = state.catalog, state.data_version
    visible = visible_fields(layer, who)
    key = tile_key(layer, zxy, query, visible, catalog.tile_version(layer))
    seen = version.located
    data, source = await render_tile(
        state.reader, catalog.statements, state.settings, layer, who, visible, query, zxy
    )
    tile = make_tile(data, source)
    if version.located == seen or layer.id not in LOCATED.values():
        state.tile_cache.put(key, tile)
    return tile


async def cached_tile(
    state, layer: Layer, who: Principal, query: QueryParams, zxy: tuple[int, int, int]
) -> tuple[Tile, bool]:
    """The tile from the worker's cache, or encoded in PostGIS and cached, and whether it
    was cached. ``state`` is the app's; the caller has checked access and z/x/y."""
    visible = visible_fields(layer, who)
    key = tile_key(layer, zxy, query, visible, state.catalog.tile_version(layer))
    if (tile := lookup(state, key)) is not None:
        return tile, True
    return await rendered_tile(state, layer, who, query, zxy), False


def shared_tile(layer: Layer, who: Principal) -> bool:
    """Whether ``who``'s tiles of ``layer`` may sit in shared caches: tiles the public
    would get may; a tile with fields the public may not see (an analyst's tile of a
    public layer) only in the client's, whatever a shared cache makes of Vary."""
    return may_read(layer, PUBLIC) and visible_fields(layer, who) == visible_fields(layer, PUBLIC)


# What the tile answers vary on; CORSMiddleware adds Origin to whatever passes it.
VARY = "Accept-Encoding, Authorization"


def tile_answer(
    tile: Tile,
    shared: bool,
    if_none_match: str | None,
    accept_encoding: str | None,
    max_age_s: int,
    hit: bool,
    vary: str = VARY,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, ASGI headers (with ``Content-Length``) and body for a tile: 304 for a
    matching ETag, gzip only for a client that accepts it (and then with
    ``Content-Encoding``); ``X-Cache`` says whether the worker had it cached.

    The headers of each kind of answer are encoded once per tile and kept with it: a
    cached tile's answer is then a lookup (building and encoding them cost about as much
    as the rest of a cached tile)."""
    if if_none_match is not None and tile.etag in if_none_match:
        status, body, packed = 304, b"", False
    elif accept_encoding is not None and "gzip" in accept_encoding:
        gzipped = tile.gzipped()
        status, body, packed = 200, gzipped or tile.data, gzipped is not None
    else:
        status, body, packed = 200, tile.data, False
    kind = (status, packed, shared, max_age_s, hit, vary)
    if (head := tile.heads.get(kind)) is None:
        reply = {
            "etag": tile.etag,
            "cache-control": f"{'public' if shared else 'private'}, max-age={max_age_s}",
            "vary": vary,
            "x-cache": "hit" if hit else "miss",
        }
        if tile.source is not None:
            reply["x-tile-source"] = tile.source
        if status == 200:
            reply["content-type"] = MVT
        if packed:
            reply["content-encoding"] = "gzip"
        reply["content-length"] = str(len(body))
        head = tile.heads[kind] = [(k.encode(), v.encode()) for k, v in reply.items()]
    return status, head, body


def tile_reply(
    tile: Tile, layer: Layer, who: Principal, headers: Headers, max_age_s: int, hit: bool
) -> tuple[int, dict[str, str], bytes]:
    """:func:`tile_answer` for a route's ``Response`` (which counts the length itself)."""
    status, head, body = tile_answer(
        tile,
        shared_tile(layer, who),
        headers.get("if-none-match"),
        headers.get("accept-encoding"),
        max_age_s,
        hit,
    )
    reply = {k.decode(): v.decode() for k, v in head if k != b"content-length"}
    return status, reply, body


_XYZ = re.compile(r"/tiles/([A-Za-z0-9_-]+)/(\d+)/(\d+)/(\d+)\.mvt")
_OGC = re.compile(r"/collections/([A-Za-z0-9_-]+)/tiles/WebMercatorQuad/(\d+)/(\d+)/(\d+)")
# The route templates the metrics label tiles with (app.core.metrics), by form.
XYZ_ROUTE = "/tiles/{layer_id}/{z}/{x}/{y}.mvt"
OGC_ROUTE = "/collections/{collection_id}/tiles/WebMercatorQuad/{z}/{y}/{x}"

# The routes' bound on z (app.routers.tiles): beyond it they answer 422, not a tile.
MAX_Z = 30


@dataclass(frozen=True, slots=True)
class View:
    """What one caller may have of one layer, as ``app.access`` says: the fields it sees
    (the tile key holds them), whether its tiles may sit in shared caches, and the query
    parameters it may filter with (fields it may filter on, named parameters it may use,
    the reserved ones)."""

    layer: Layer
    visible: tuple[str, ...]
    shared: bool
    parameters: frozenset[str]


class Views:
    """The :class:`View` of each layer and caller met, kept while the layer object is the
    catalog's (a rebuilt layer is a new object, and gets a new view): the access rules
    of a cached tile cost a dictionary lookup, not a walk over the layer's fields."""

    MAX = 4096  # layers x callers; past it the views are simply made again

    def __init__(self) -> None:
        self._views: dict[tuple[str, Principal], View] = {}

    def of(self, layer: Layer, who: Principal) -> View:
        """``who``'s view of ``layer``; the caller has checked that it may read it."""
        view = self._views.get((layer.id, who))
        if view is None or view.layer is not layer:
            if len(self._views) >= self.MAX:
                self._views.clear()
            usable = {f.name for f in queryable_fields(layer, who)}
            usable |= {p.name for p in filter_parameters(layer, who)}
            view = self._views[(layer.id, who)] = View(
                layer,
                tuple(visible_fields(layer, who)),
                shared_tile(layer, who),
                frozenset(usable | RESERVED),
            )
        return view


def _filters_allowed(view: View, query: QueryParams) -> bool:
    """Whether every parameter is reserved, names a field the caller may filter on or is
    a named parameter of the layer it may use (``unit``, ``occurred_from``): a cheap
    first look (a set of names) so that no tile, cached or not, answers a filter on a
    withheld field. A CQL2 ``filter``'s properties are checked where it is parsed
    (``app.ogc.filters``), before any tile is encoded; a cached tile was encoded for the
    same filter text and the same visible fields (its key), so it passed that check."""
    return query.keys() <= view.parameters


# Request headers that send a tile request the normal way from the door (TileHits): a
# browser's Origin (CORS answers it) and a body (BodyLimit judges it).
_ASIDE = frozenset({b"origin", b"content-length", b"transfer-encoding"})
_EMPTY = QueryParams()


@dataclass(slots=True)
class TileRequest:
    """A tile request as the fast paths read it from the ASGI scope, before FastAPI."""

    layer: Layer
    who: Principal
    view: View
    zxy: tuple[int, int, int]
    query: QueryParams
    key: Hashable
    route: str
    if_none_match: str | None
    accept_encoding: str | None


def _read_headers(scope: Scope, door: bool) -> tuple[str | None, str | None, str | None] | None:
    """``Authorization``, ``If-None-Match`` and ``Accept-Encoding`` in one pass over the
    headers (the first of a repeated header wins, as Starlette reads them); None when
    ``door`` and a header sends the request on (:data:`_ASIDE`)."""
    authorization = if_none_match = accept_encoding = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            if authorization is None:
                authorization = value.decode("latin-1")
        elif name == b"if-none-match":
            if if_none_match is None:
                if_none_match = value.decode("latin-1")
        elif name == b"accept-encoding":
            if accept_encoding is None:
                accept_encoding = value.decode("latin-1")
        elif door and name in _ASIDE:
            return None
    return authorization, if_none_match, accept_encoding


def tile_request(scope: Scope, views: Views, *, door: bool) -> TileRequest | None:
    """The tile a GET asks for, when everything about it is already known: a tile path,
    a layer of the current catalog, a caller this worker has already checked (the public,
    or a key in its cache) who may read the layer, and filters on parameters it may
    use. None sends the request the normal way (``app.routers.tiles``), which says why
    or fills the cache. ``door``: also None for requests :class:`TileHits` leaves to the
    middlewares behind it (:data:`_ASIDE`)."""
    path = scope["path"]
    if match := _XYZ.fullmatch(path):
        layer_id, z, x, y = match.groups()
        route = XYZ_ROUTE
    elif match := _OGC.fullmatch(path):
        layer_id, z, y, x = match.groups()
        route = OGC_ROUTE
    else:
        return None
    state = scope["app"].state
    layer = state.catalog.current().get(layer_id)
    if layer is None:
        return None
    if (read := _read_headers(scope, door)) is None:
        return None
    authorization, if_none_match, accept_encoding = read
    who = known_principal(state.key_cache, authorization)
    if who is None or not may_read(layer, who):
        return None  # unknown key or no access: the normal path says why
    view = views.of(layer, who)
    query = QueryParams(scope["query_string"]) if scope["query_string"] else _EMPTY
    if not _filters_allowed(view, query):
        return None  # the normal path answers the 400, never a tile
    zxy = (int(z), int(x), int(y))
    key = tile_key(layer, zxy, query, view.visible, state.catalog.tile_version(layer))
    return TileRequest(layer, who, view, zxy, query, key, route, if_none_match, accept_encoding)


async def _send(send: Send, answer: tuple[int, list[tuple[bytes, bytes]], bytes]) -> None:
    status, head, body = answer
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class TileHits:
    """ASGI middleware, the outermost: answer a tile GET from the worker's cache before
    any other middleware runs; everything else (a tile not cached, a browser's
    cross-origin request, a request with a body, any other path) goes on, untouched.

    A cached tile cost ~24 µs of CPU in process through the whole stack, three times
    what finding and sending it costs; the middlewares it skips do nothing to such an
    answer but for two things, done here: the request is counted and timed
    (:class:`app.core.metrics.RequestMetrics`' series, under the tile route's template),
    and ``Vary`` names ``Origin`` as CORSMiddleware's would (a shared cache must not give
    this answer to a cross-origin request, which CORS answers with more headers).
    Installed only while rate limiting is off: a limit counts cached tiles too
    (``app.core.ratelimit``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.views = Views()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A cached tile now; anything else to the next middleware."""
        if scope["type"] == "http" and scope["method"] == "GET" and "/tiles/" in scope["path"]:
            started = time.perf_counter()
            request = tile_request(scope, self.views, door=True)
            if request is not None:
                state = scope["app"].state
                if (tile := state.tile_cache.hit(request.key, state.data_version)) is not None:
                    answer = tile_answer(
                        tile,
                        request.view.shared,
                        request.if_none_match,
                        request.accept_encoding,
                        state.settings.tiles.max_age_s,
                        True,
                        VARY + ", Origin",
                    )
                    try:
                        await _send(send, answer)
                    finally:
                        state.metrics.observe(
                            "GET", request.route, answer[0], time.perf_counter() - started
                        )
                    return
        await self.app(scope, receive, send)


class CachedTiles:
    """ASGI middleware: serve a tile, from the cache or encoded and cached, when
    everything about it is already known (the caller's key, the layer catalog of the
    current data version, a tile in range, filters that parse)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.views = Views()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a tile GET here when it can be; anything else, and any tile this cannot
        answer, goes on to the routes."""
        if scope["type"] == "http" and scope["method"] == "GET":
            try:
                answer = await self._tile(scope)
            except Exception as exc:  # a database error: answered as the routes would
                await self._error(scope, receive, send, exc)
                return
            if answer is not None:
                await _send(send, answer)
                return
        await self.app(scope, receive, send)

    async def _tile(self, scope: Scope) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        request = tile_request(scope, self.views, door=False)
        if request is None:
            return None
        state = scope["app"].state
        tile = lookup(state, request.key)
        hit = tile is not None
        if tile is None:
            if request.zxy[0] > MAX_Z:
                return None
            try:
                check_tile(request.layer, *request.zxy, state.settings.tiles.max_zoom)
                tile = await rendered_tile(
                    state, request.layer, request.who, request.query, request.zxy
                )
            except ProblemError:
                return None  # out of range, a malformed filter: the normal path says so
        return tile_answer(
            tile,
            request.view.shared,
            request.if_none_match,
            request.accept_encoding,
            state.settings.tiles.max_age_s,
            hit,
        )

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
