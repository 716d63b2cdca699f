"""The layer catalog of a worker: built from the declarations in ``app.ogc.layers`` against
the database, with the latest composite index values, and rebuilt only when the data
version moves (a new run, new boundaries, new incidents)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.cache import TTLCache
from app.core.errors import NotFound, ProblemError
from app.core.settings import Settings
from app.core.versions import DataVersion
from app.ogc.layers import IndexColumn, Layer, build_catalog
from app.security import Principal
from app.services import indexes as index_service
from app.sql.features import select_extent

log = logging.getLogger("observatory")

# The catalog computes index values on behalf of the service, not of a caller.
_SERVICE = Principal(role="analyst", name="layer catalog")


@dataclass
class Catalog:
    """The published layers, rebuilt when the data version changes (index values and
    hot spot runs become layers), with the counts, extents and tile statements kept per
    version."""

    engine: AsyncEngine
    settings: Settings
    version: DataVersion
    # numberMatched and extents, keyed with the data version, so a write invalidates them:
    # a walk through a large collection pays for one count, not one per page.
    counts: TTLCache = field(default_factory=lambda: TTLCache(maxsize=1024, ttl_s=300))
    extents: TTLCache = field(default_factory=lambda: TTLCache(maxsize=256, ttl_s=300))
    # Tile statements built for a layer and filters (they refer to this build's layers).
    statements: TTLCache = field(default_factory=lambda: TTLCache(maxsize=512, ttl_s=3600))
    _layers: dict[str, Layer] = field(default_factory=dict)
    _built_at: int = -1
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def layers(self) -> dict[str, Layer]:
        """Every layer by id, as of the current data version (rebuilt once per version)."""
        if self._built_at != self.version.value:
            async with self._lock:
                wanted = self.version.value
                if self._built_at != wanted:
                    self._layers = await self._build()
                    self.statements.clear()
                    self._built_at = wanted
        return self._layers

    def current(self) -> dict[str, Layer]:
        """The layers if they are up to date, else nothing (no waiting, no database)."""
        return self._layers if self._built_at == self.version.value else {}

    async def layer(self, layer_id: str) -> Layer:
        """The layer ``layer_id``, or a 404 that says where the list is."""
        layer = (await self.layers()).get(layer_id)
        if layer is None:
            raise NotFound(
                f"No collection {layer_id!r}; GET /collections lists the available ones."
            )
        return layer

    async def extent(self, layer: Layer) -> tuple | None:
        """(west, south, east, north[, first time, last time]) of a layer; None if empty."""
        key = (layer.id, self.version.value)
        if (extent := self.extents.get(key)) is None:
            async with self.engine.connect() as conn:
                row = (await conn.execute(select_extent(layer))).one()
            extent = () if row[0] is None else tuple(row)
            self.extents.set(key, extent)
        return extent or None

    async def _build(self) -> dict[str, Layer]:
        async with self.engine.connect() as conn:
            return await build_catalog(conn, await self._index_columns(conn))

    async def _index_columns(self, conn) -> dict[int, tuple[IndexColumn, ...]]:
        """The latest complete period of every composite index, by unit level."""
        out: dict[int, list[IndexColumn]] = {}
        for record in await index_service.list_definitions(conn):
            try:
                latest = await index_service.latest_scores(conn, self.settings, _SERVICE, record)
            except (ProblemError, ValueError) as exc:
                log.warning("index %s left out of the unit layers: %s", record.code, exc)
                continue
            if latest is None:
                continue
            period, definition, values = latest
            out.setdefault(definition.unit_level, []).append(
                IndexColumn(
                    code=record.code,
                    title=definition.title,
                    period=period,
                    version=record.version,
                    values=values,
                )
            )
        return {level: tuple(columns) for level, columns in out.items()}
