"""The layer catalog of a worker: built from the declarations in ``app.ogc.layers`` against
the database, with the latest composite index values, and rebuilt only when the data
version moves (a new run, new boundaries, new incidents).

Each layer's answers key on the version of what they read (:meth:`Catalog.tile_version`,
:meth:`Catalog.data_version`): the counters of its tables (``app.core.versions``) and its
own revision, moved when a rebuild finds the layer changed (a units layer's index values).
A hot spot run's tiles survive new incidents, a district's survive them until their index
values move."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

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

# The counters (``app.core.versions``) a layer's tiles follow, by kind of layer: a kind not
# listed here (a new one) follows every change. Incident tiles follow only incident
# changes of no known position; located ones drop the tiles they touch
# (``app.ogc.tilecache``). A hot spot run is fixed once stored: its tiles only go when
# runs are deleted. Units follow their boundaries, and their index values through the
# layer's revision.
TILES_READ: dict[str, tuple[str, ...]] = {
    "incidents": ("incident:anywhere", "admin_unit", "category"),
    "units": ("admin_unit",),
    "hotspots": ("analysis_run:removed",),
    "alerts": ("alert",),
}
# The same for pages, counts and extents, which every incident write may change.
DATA_READ = {**TILES_READ, "incidents": ("incident", "admin_unit", "category")}
# Tables whose changes alone leave every layer but the units layers (whose index values
# they may move) as they were: the catalog built before them still answers.
_LAYERS_KEPT_BY = frozenset({"incident", "incident:anywhere", "incident:removed"})


def _fingerprint(layer: Layer, index_columns: dict[int, tuple[IndexColumn, ...]]) -> Any:
    """What makes two builds of a layer the same layer: equal fingerprints, equal tiles
    (given the same table versions). A layer of an unknown kind is never the same."""
    if layer.style not in TILES_READ:
        return object()
    fields = tuple((f.name, f.type, f.role, f.in_tiles, f.queryable) for f in layer.fields)
    indexes = None
    if layer.style == "units":
        level = int(layer.id.removeprefix("units-"))
        indexes = tuple(
            (i.code, i.period, i.version, tuple(sorted(i.values.items())))
            for i in index_columns.get(level, ())
        )
    return (layer.role, layer.title, layer.description, fields, indexes)


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
    # Per layer: its fingerprint in the last build, and its revision (moved when the
    # fingerprint changed).
    _fingerprints: dict[str, Any] = field(default_factory=dict)
    _revisions: dict[str, int] = field(default_factory=dict)
    # The counters when the layers were last built (what changed since).
    _built_tables: tuple[int, dict[str, int]] = (-1, {})
    # The layers still current after changes of incidents only (not the units layers).
    _kept: dict[str, Layer] = field(default_factory=dict)

    async def layers(self) -> dict[str, Layer]:
        """Every layer by id, as of the current data version (rebuilt once per version)."""
        if self._built_at != self.version.value:
            async with self._lock:
                wanted = self.version.value
                if self._built_at != wanted:
                    tables = (self.version.everything, dict(self.version.tables))
                    self._layers = await self._rebuild()
                    self._kept = {k: v for k, v in self._layers.items() if v.style != "units"}
                    self._built_at, self._built_tables = wanted, tables
        return self._layers

    def current(self) -> dict[str, Layer]:
        """The layers if they are up to date, else nothing (no waiting, no database).
        After changes of incidents only, the layers they cannot change (all but the units
        layers, whose index values count incidents) are still up to date."""
        if self._built_at == self.version.value:
            return self._layers
        everything, tables = self._built_tables
        if everything != self.version.everything:
            return {}
        changed = (name for name, n in self.version.tables.items() if tables.get(name, 0) != n)
        return self._kept if all(name in _LAYERS_KEPT_BY for name in changed) else {}

    def tile_version(self, layer: Layer) -> Hashable:
        """The version a tile of ``layer`` keys on: its tables' counters and revision."""
        return self._version(layer, TILES_READ)

    def data_version(self, layer: Layer) -> Hashable:
        """The version pages, counts and extents of ``layer`` key on."""
        return self._version(layer, DATA_READ)

    def _version(self, layer: Layer, reads: dict[str, tuple[str, ...]]) -> Hashable:
        names = reads.get(layer.style)
        if names is None:
            return ("all", self.version.value)
        return (self.version.of(names), self._revisions.get(layer.id, 0))

    async def _rebuild(self) -> dict[str, Layer]:
        """Build the layers; keep the previous build's object of a layer that has not
        changed (its compiled statements stay valid), move the revision of one that has."""
        async with self.engine.connect() as conn:
            index_columns = await self._index_columns(conn)
            built = await build_catalog(conn, index_columns)
        layers: dict[str, Layer] = {}
        changed: set[str] = set()
        for layer_id, layer in built.items():
            fingerprint = _fingerprint(layer, index_columns)
            old = self._layers.get(layer_id)
            if old is not None and self._fingerprints.get(layer_id) == fingerprint:
                layers[layer_id] = old
                continue
            layers[layer_id] = layer
            self._fingerprints[layer_id] = fingerprint
            self._revisions[layer_id] = self._revisions.get(layer_id, 0) + 1
            changed.add(layer_id)
        changed |= self._layers.keys() - layers.keys()
        self.statements.discard(lambda k: k[0] in changed or (k[0] == "items" and k[1] in changed))
        return layers

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
        key = (layer.id, self.data_version(layer))
        if (extent := self.extents.get(key)) is None:
            async with self.engine.connect() as conn:
                row = (await conn.execute(select_extent(layer))).one()
            extent = () if row[0] is None else tuple(row)
            self.extents.set(key, extent)
        return extent or None

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
