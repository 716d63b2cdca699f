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
import gc
import importlib
import logging
import sys
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.cache import TTLCache
from app.core.errors import NotFound, ProblemError
from app.core.settings import Settings
from app.core.versions import Change, DataVersion
from app.ogc.layers import IndexColumn, Layer, build_catalog
from app.security import Principal
from app.services import indexes as index_service
from app.services.periods import one_period, period_containing, previous_period
from app.sql import stats as stats_sql
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
# Changes of incidents whose positions and times are known: they may leave the units
# layers as they were too (``Catalog._units_unchanged``).
_LOCATED_INCIDENTS = frozenset({"incident", "incident:removed"})
# What index values read: a rebuild after changes of other tables only (a run completed,
# an alert raised) keeps the values of the last build instead of computing them again
# (seconds of the event loop with a few indexes: it stalled every request of the worker).
_INDEXES_READ = frozenset(
    {"incident", "incident:anywhere", "incident:removed", "indicator_value", "population",
     "index_definition", "admin_unit", "category"}
)  # fmt: skip


@dataclass(frozen=True)
class _IndexPeriod:
    """The incidents an index's latest values read: those from ``reads_from`` (the
    previous period's start: a ``change`` indicator reads it) to ``latest_end``."""

    granularity: str
    label: str
    reads_from: float
    latest_end: float


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
    # What the index values of the last build read (None: some index may start to have
    # values with any incident), the last incident then, the located changes seen.
    _index_periods: list[_IndexPeriod] | None = None
    _last_incident: float | None = None
    _built_located: int = 0
    _index_columns_built: dict[int, tuple[IndexColumn, ...]] | None = None
    # The build started for the tiles' fast path (current()) while it serves the last one.
    _refreshing: asyncio.Task | None = None

    async def layers(self) -> dict[str, Layer]:
        """Every layer by id, as of the current data version (rebuilt once per version,
        unless the changes since the last build cannot have changed a layer)."""
        if self._built_at != self.version.value:
            async with self._lock:
                wanted = self.version.value
                if self._built_at != wanted:
                    tables = (self.version.everything, dict(self.version.tables))
                    located = self.version.located
                    changed = self._changed_tables()
                    same_everything = self._built_tables[0] == self.version.everything
                    unchanged = same_everything and self._units_unchanged()
                    if same_everything and not unchanged and changed <= _LOCATED_INCIDENTS:
                        # An update or a deletion after the periods read (a new incident's
                        # units are set by an UPDATE: every POST /incidents is one) may
                        # move the latest period back: read where it is, don't guess.
                        async with self.engine.connect() as conn:
                            last = (await conn.execute(stats_sql.select_last_incident())).scalar()
                        if last is not None:
                            unchanged = self._units_unchanged(last.timestamp())
                            if unchanged:
                                self._last_incident = last.timestamp()
                    if changed <= _LOCATED_INCIDENTS and unchanged:
                        self._built_at, self._built_tables = wanted, tables
                        self._built_located = located
                        return self._layers
                    same_indexes = same_everything and (
                        not changed & _INDEXES_READ
                        or (changed & _INDEXES_READ <= _LOCATED_INCIDENTS and unchanged)
                    )
                    first = self._built_at < 0
                    started = time.perf_counter()
                    self._layers = await self._rebuild(same_indexes)
                    # Said, so a benchmark's log shows how often a worker builds and why.
                    log.info(
                        "layer catalog built in %.2f s (%s; changed since the last build: %s)",
                        time.perf_counter() - started,
                        "index values kept" if same_indexes else "index values computed",
                        ", ".join(sorted(changed)) or "nothing known",
                    )
                    if first:
                        # What the first build imported and built lives as long as the
                        # worker: out of the collector's way, a full collection no longer
                        # walks it (0.2-0.8 s of every request held, per the watchdog).
                        gc.freeze()
                    self._built_at, self._built_tables = wanted, tables
                    self._built_located = located
        return self._layers

    def current(self) -> dict[str, Layer]:
        """The layers for a tile, answered at once (no waiting, no database): the layers
        if they are up to date, else nothing. After changes of incidents only, the layers
        they cannot change (all but the units layers, whose index values count incidents)
        are still up to date, and the units layers too when the incidents changed lie
        outside the periods the index values read (:meth:`_units_unchanged`). When they
        lie inside, the units layers' tiles come from the last build while the next one
        computes their index values in the background (a second or two, once per worker
        and change): the map shows the new values a build late instead of holding every
        district tile of the worker for the build (issue 22: p99 316 ms under one write a
        second). Pages, counts and extents (:meth:`layers`) wait for the build."""
        if self._built_at == self.version.value:
            return self._layers
        if self._built_tables[0] != self.version.everything:
            return {}
        changed = self._changed_tables()
        if not changed <= _LAYERS_KEPT_BY:
            return {}
        if changed <= _LOCATED_INCIDENTS and self._units_unchanged():
            # Still the layers of now: say so once, not on every tile.
            self._built_at = self.version.value
            self._built_tables = (self.version.everything, dict(self.version.tables))
            self._built_located = self.version.located
            return self._layers
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
        return self._layers

    async def _refresh(self) -> None:
        """Build the layers for :meth:`current` (a failure is the next request's to see)."""
        try:
            await self.layers()
        except Exception:
            log.exception("background build of the layer catalog failed")

    def _changed_tables(self) -> set[str]:
        """The counters that moved since the last build."""
        built = self._built_tables[1]
        return {name for name, n in self.version.tables.items() if built.get(name, 0) != n}

    def _units_unchanged(self, last_incident: float | None = None) -> bool:
        """Whether the incident changes since the last build (all located, with their
        times) leave every index value as it was: none reads an incident of the periods
        the latest values read, and none moves the latest complete period (an incident
        entered after it, in a period not yet complete, does not). Anything unknown (an
        index without values, changes no longer all known) says no. ``last_incident``:
        the latest incident's time, read now; without it, an update or a deletion after
        the periods read says no (it may have moved the latest incident back)."""
        periods = self._index_periods
        if periods is None:
            return False
        if not periods:
            return True
        changes = self.version.located_since(self._built_located)
        if changes is None:
            return False
        return all(self._leaves_periods(change, periods, last_incident) for change in changes)

    def _leaves_periods(
        self, change: Change, periods: list[_IndexPeriod], last_incident: float | None
    ) -> bool:
        if change.times is None:
            return False
        first, last = change.times
        for period in periods:
            if last < period.reads_from:
                continue  # before what is read, and not the latest incident
            if first < period.latest_end:
                return False
            if last_incident is not None:
                moment = last_incident
            elif change.op == "insert":  # the latest incident can only have moved on
                moment = max(last, self._last_incident or last)
            else:
                return False
            if self._latest_label(moment, period.granularity) != period.label:
                return False
        return True

    def _latest_label(self, moment: float, granularity: str) -> str:
        """The latest complete period when the latest incident is of ``moment`` (as
        ``app.services.indexes.latest_period`` finds it)."""
        tz = self.settings.territory.timezone
        period = period_containing(datetime.fromtimestamp(moment, UTC), granularity, tz)
        if period.end > pd.Timestamp.now(tz=tz):
            period = previous_period(period, tz)
        return period.label

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

    async def _rebuild(self, same_indexes: bool = False) -> dict[str, Layer]:
        """Build the layers (with the last build's index values if ``same_indexes``);
        keep the previous build's object of a layer that has not changed (its compiled
        statements stay valid), move the revision of one that has."""
        if "mapclassify" not in sys.modules:
            # The map classes of index values import it, and it compiles numba kernels at
            # import: 1.5-3 s that held the event loop at a worker's first build.
            await asyncio.to_thread(importlib.import_module, "mapclassify")
        async with self.engine.connect() as conn:
            if same_indexes and self._index_columns_built is not None:
                index_columns = self._index_columns_built
            else:
                index_columns = self._index_columns_built = await self._index_columns(conn)
            built = await build_catalog(conn, index_columns)
            last = (await conn.execute(stats_sql.select_last_incident())).scalar()
        self._last_incident = None if last is None else last.timestamp()
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
        periods: list[_IndexPeriod] | None = []
        tz = self.settings.territory.timezone
        for record in await index_service.list_definitions(conn):
            try:
                latest = await index_service.latest_scores(conn, self.settings, _SERVICE, record)
            except (ProblemError, ValueError) as exc:
                log.warning("index %s left out of the unit layers: %s", record.code, exc)
                periods = None
                continue
            if latest is None:
                periods = None
                continue
            period, definition, values = latest
            if periods is not None:
                bounds = one_period(period, definition.period, tz)
                periods.append(
                    _IndexPeriod(
                        definition.period,
                        period,
                        previous_period(bounds, tz).start.timestamp(),
                        bounds.end.timestamp(),
                    )
                )
            out.setdefault(definition.unit_level, []).append(
                IndexColumn(
                    code=record.code,
                    title=definition.title,
                    period=period,
                    version=record.version,
                    values=values,
                )
            )
        self._index_periods = periods
        return {level: tuple(columns) for level, columns in out.items()}
