"""Vector tiles: encoded in PostGIS (``app.sql.tiles``), cached in process by layer,
z/x/y, filters, what the caller may see and the data version, so a write anywhere makes
every worker build fresh tiles while repeated requests never reach the database."""

from __future__ import annotations

import gzip
import hashlib
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import NotFound
from app.filters import layer_conditions
from app.layers import Layer
from app.settings import Settings
from app.sql import tiles as sql

MVT = "application/vnd.mapbox-vector-tile"
# Tiles smaller than this are sent as they are: gzip would save a few bytes at best.
GZIP_MIN_BYTES = 512


@dataclass(frozen=True)
class Tile:
    data: bytes
    etag: str
    # The same tile gzipped (None when not worth it), made once when it is cached.
    gzipped: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.data) + len(self.gzipped or b"")


def make_tile(data: bytes) -> Tile:
    etag = '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"'
    packed = gzip.compress(data, compresslevel=5) if len(data) >= GZIP_MIN_BYTES else None
    return Tile(data, etag, packed)


class TileCache:
    """Least recently used tiles, bounded by their total size in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = 0
        self._tiles: OrderedDict[Hashable, Tile] = OrderedDict()

    def get(self, key: Hashable) -> Tile | None:
        tile = self._tiles.get(key)
        if tile is None:
            self.misses += 1
            return None
        self.hits += 1
        self._tiles.move_to_end(key)
        return tile

    def put(self, key: Hashable, tile: Tile) -> None:
        if tile.size > self.max_bytes:
            return
        if (old := self._tiles.pop(key, None)) is not None:
            self.bytes -= old.size
        self._tiles[key] = tile
        self.bytes += tile.size
        while self.bytes > self.max_bytes:
            _, evicted = self._tiles.popitem(last=False)
            self.bytes -= evicted.size


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
