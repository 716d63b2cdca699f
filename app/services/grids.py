"""Analysis grids, built once: H3 and square grids over a study area, cached in this
process (ids, neighbours) and in PostGIS (polygons, ``analysis_grid_cell``).

A grid is named by a key made of its specification, its cover rule (``center`` or
``intersects``) and a digest of the study area's geometry, so the key changes when the
boundaries do. A ``center`` grid is completed for each run by the cells that hold the
study area's incidents but have their centre outside it: that grid's key is the base
key, ``+`` and a digest of the added cells, and only the added cells' polygons are stored
under it (the run's values name, cell by cell, the grid that holds the polygon). Both
caches are only caches: any worker rebuilds a grid from its key's ingredients, and the
database copy is looked up by key on every run (never trusted from memory), so a worker
never assumes another's state.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy.ext.asyncio import AsyncEngine

import spatial
from app.core.db import copy_csv
from app.schemas.analyses import GridUnits, H3Units
from app.sql import analyses as sql
from spatial.grids import h3_cell_ids, h3_polygons, h3_polygons_wkb

# Grids kept per worker. An H3 resolution 9 grid of Belize (213,000 cells) holds about
# 40 MB here (ids, index, neighbour matrix): a few grids fit any worker.
MAX_GRIDS = 4


@dataclass(eq=False)
class Grid:
    """The cells of one grid over one study area, with what is derived from them.

    Attributes
    ----------
    key : str
        ``analysis_grid.key``: ``h3:<resolution>:<cover>:<area digest>`` or
        ``square:<crs>:<cell size>:<cover>:<area digest>``; ``<that key>+<digest>`` for
        a grid completed with the cells holding a run's incidents.
    kind : str
        ``"h3"`` or ``"square"``.
    parameters : dict
        The grid's specification (stored with it).
    ids : numpy.ndarray of object
        The cell ids, sorted (H3) or by row then column (square).
    frame : geopandas.GeoDataFrame or None
        Square grids only: the frame of ``spatial.square_grid`` (polygons, rows, columns
        and the attrs that ``points_to_grid`` needs).
    base : Grid or None
        The grid this one completes (None for a grid over the area alone).
    added : numpy.ndarray of object
        The ids of the cells added to ``base`` (empty without a base).
    """

    key: str
    kind: str
    parameters: dict
    ids: np.ndarray
    frame: gpd.GeoDataFrame | None = None
    base: Grid | None = None
    added: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    _index: pd.Index | None = field(default=None, repr=False)
    _weights: dict[Hashable, spatial.SpatialWeights] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def index(self) -> pd.Index:
        """The ids as a pandas Index (hashing 200,000 ids once, not per run)."""
        if self._index is None:
            self._index = pd.Index(self.ids)
        return self._index

    def polygons(self) -> np.ndarray:
        """The cells' polygons (EPSG:4326), in order. H3 polygons are built on each call
        and not kept: they are needed only to store a new grid or for geometric weights."""
        if self.frame is not None:
            return self.frame.geometry.to_numpy()
        return h3_polygons(self.ids.tolist())

    def polygons_wkb(self) -> np.ndarray:
        """The cells' polygons as EWKB (SRID 4326), in order: what storing the grid
        sends. H3 polygons are written from the cells' boundaries without shapely."""
        if self.frame is not None:
            return _ewkb(self.frame.geometry.to_numpy())
        return h3_polygons_wkb(self.ids.tolist())

    @property
    def cover(self) -> str:
        """The rule that chose the cells over the area: ``center`` or ``intersects``."""
        return self.parameters["cover"]

    def point_cells(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """The cell of each point in the grid's lattice: H3 cells of its resolution, or
        squares of its layout, whether the grid holds them or not (None only for missing
        coordinates). Counting ignores the cells that are not the grid's."""
        if self.kind == "h3":
            return spatial.points_to_h3(lon, lat, self.parameters["resolution"])
        return spatial.points_to_grid(lon, lat, self.frame, lattice=True)

    def added_polygons(self) -> np.ndarray:
        """The polygons of the cells added to the base grid as EWKB (SRID 4326), in the
        order of ``added``."""
        if self.frame is not None:
            index = pd.Index(self.frame["cell_id"])
            return _ewkb(self.frame.geometry.to_numpy()[index.get_indexer(self.added)])
        return h3_polygons_wkb(self.added.tolist())

    def weights(
        self, key: Hashable, build: Callable[[], spatial.SpatialWeights]
    ) -> spatial.SpatialWeights:
        """The weights named ``key`` (e.g. ``("h3",)``, ``("knn", 8)``), built once."""
        with self._lock:
            if key not in self._weights:
                self._weights[key] = build()
            return self._weights[key]


_grids: OrderedDict[str, Grid] = OrderedDict()
_grids_lock = threading.Lock()


def area_digest(area: shapely.Geometry) -> str:
    """A short digest of the study area's geometry (its WKB): part of a grid's key."""
    return hashlib.blake2b(shapely.to_wkb(area), digest_size=8).hexdigest()


def grid_key(
    units: H3Units | GridUnits, area: shapely.Geometry, crs: str, cover: str = "center"
) -> str:
    """The key of the grid of ``units`` over ``area`` by the ``cover`` rule."""
    digest = area_digest(area)
    if isinstance(units, H3Units):
        return f"h3:{units.resolution}:{cover}:{digest}"
    return f"square:{crs}:{units.cell_size_m:g}:{cover}:{digest}"


def cached_grid(
    units: H3Units | GridUnits, area: shapely.Geometry, crs: str, cover: str = "center"
) -> Grid:
    """The grid of ``units`` over ``area`` by the ``cover`` rule: from this worker's
    cache, else built."""
    key = grid_key(units, area, crs, cover)
    return _cached(key, lambda: _build_grid(key, units, area, crs, cover))


def with_cells(grid: Grid, cell_ids: np.ndarray) -> Grid:
    """The grid with the cells of ``cell_ids`` it lacks (None ignored): the same grid
    when it has them all, else a grid keyed by ``grid``'s key and the added cells,
    from this worker's cache or built. Its weights are its own (built on first use)."""
    held = pd.Index(np.asarray(cell_ids, dtype=object)).dropna().unique()
    added = np.array(sorted(held[grid.index.get_indexer(held) < 0]), dtype=object)
    if added.size == 0:
        return grid
    digest = hashlib.blake2b("\n".join(added).encode(), digest_size=8).hexdigest()
    key = f"{grid.key}+{digest}"

    def build() -> Grid:
        parameters = {**grid.parameters, "added_to": grid.key, "added_cells": int(added.size)}
        if grid.frame is None:
            ids = np.array(sorted(np.concatenate([grid.ids, added])), dtype=object)
            return Grid(key, grid.kind, parameters, ids, base=grid, added=added)
        frame = spatial.with_cells(grid.frame, added)
        ids = frame["cell_id"].to_numpy(dtype=object)
        return Grid(key, grid.kind, parameters, ids, frame, base=grid, added=added)

    return _cached(key, build)


def _cached(key: str, build: Callable[[], Grid]) -> Grid:
    with _grids_lock:
        grid = _grids.get(key)
        if grid is not None:
            _grids.move_to_end(key)
            return grid
    grid = build()
    with _grids_lock:
        grid = _grids.setdefault(key, grid)  # a concurrent build of the same key: keep one
        _grids.move_to_end(key)
        while len(_grids) > MAX_GRIDS:
            _grids.popitem(last=False)
    return grid


def clear_cache() -> None:
    """Forget every grid of this worker (tests; memory)."""
    with _grids_lock:
        _grids.clear()


def _build_grid(
    key: str, units: H3Units | GridUnits, area: shapely.Geometry, crs: str, cover: str
) -> Grid:
    if isinstance(units, H3Units):
        ids = np.array(h3_cell_ids(area, units.resolution, cover=cover), dtype=object)
        return Grid(key, "h3", {"resolution": units.resolution, "cover": cover}, ids)
    frame = spatial.square_grid(area, units.cell_size_m, crs, cover=cover)
    parameters = {
        "crs": frame.attrs["grid_crs"],
        "cell_size_m": frame.attrs["cell_size_m"],
        "origin": list(frame.attrs["grid_origin"]),
        "cover": cover,
    }
    return Grid(key, "square", parameters, frame["cell_id"].to_numpy(dtype=object), frame)


@dataclass(frozen=True)
class StoredGrid:
    """Where a grid's polygons are stored: its base grid's ``analysis_grid`` id, and the
    id of the grid of its added cells (None for a grid over the area alone)."""

    base_id: int
    added_id: int | None = None

    def cell_grid_ids(self, grid: Grid, cell_ids: np.ndarray) -> np.ndarray:
        """The ``analysis_grid`` id holding the polygon of each of ``cell_ids``."""
        if self.added_id is None:
            return np.full(len(cell_ids), self.base_id, dtype=np.int64)
        is_added = pd.Index(grid.added).get_indexer(np.asarray(cell_ids, dtype=object)) >= 0
        return np.where(is_added, self.added_id, self.base_id).astype(np.int64)


@dataclass(eq=False)
class Storing:
    """A grid's polygons being stored (:func:`start_storing`): its id once known, and
    the task that stores them."""

    key: str
    id: asyncio.Future[int]
    task: asyncio.Task[int]

    def cancel(self) -> None:
        """Stop storing (its transaction rolls back)."""
        self.task.cancel()


def start_storing(engine: AsyncEngine, grid: Grid, *, added: bool = False) -> Storing:
    """Start storing the polygons of ``grid`` (``added``: only those of the cells it
    adds to its base) in a task of the running loop, unless they are stored already."""
    loop = asyncio.get_running_loop()
    grid_id: asyncio.Future[int] = loop.create_future()
    task = loop.create_task(_stored_id(engine, grid, grid_id.set_result, added=added))
    return Storing(grid.key, grid_id, task)


async def store_polygons(
    engine: AsyncEngine,
    grid: Grid,
    ready: Callable[[StoredGrid], None] | None = None,
    base: Storing | None = None,
) -> StoredGrid:
    """Store the polygons of ``grid`` where they are new, and say where they are: a
    completed grid's base cells are in its base grid (stored once for every run), the
    added ones in a grid of their own. It needs only the grid, not a run's values, so a
    run starts it as soon as it knows its grid and computes meanwhile
    (``app.services.hotspots.run_hotspots``): the first run on a new grid then waits for
    little of it.

    ``ready`` is called with the answer as soon as the grids' ids are known, before
    their polygons are written (each grid's row and cells are committed together, so
    no other worker uses a grid before it is complete): a run stores its values
    meanwhile, and waits for this function before it completes. ``base`` is the storing
    of the grid over the area alone, if the run started it earlier (as soon as it knew
    that grid); it is taken over (awaited, or cancelled on failure).
    """
    area_grid = grid.base or grid
    if base is None or base.key != area_grid.key:
        if base is not None:
            base.cancel()
        base = start_storing(engine, area_grid)
    parts = [base] if grid.base is None else [base, start_storing(engine, grid, added=True)]
    tasks = [part.task for part in parts]
    try:
        # The ids, or the error of the part that failed before knowing its id.
        while not all(part.id.done() for part in parts):
            waiting = {part.id for part in parts if not part.id.done()} | set(tasks)
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done() and task.exception() is not None:
                    raise task.exception()
        stored = StoredGrid(*(part.id.result() for part in parts))
        if ready is not None:
            ready(stored)
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return stored


async def stored_grid_ids(engine: AsyncEngine, grid: Grid, cell_ids: np.ndarray) -> np.ndarray:
    """The ``analysis_grid`` id holding the polygon of each of ``cell_ids`` (cells of
    ``grid``), the polygons stored first where they are new (:func:`store_polygons`)."""
    return (await store_polygons(engine, grid)).cell_grid_ids(grid, cell_ids)


async def _stored_id(
    engine: AsyncEngine, grid: Grid, on_id: Callable[[int], None], *, added: bool = False
) -> int:
    """The id of the grid of ``grid``'s cells (``added``: of the cells it adds to its
    base), its polygons stored first if it is new; ``on_id`` gets the id once known."""
    async with engine.connect() as conn:
        grid_id = (await conn.execute(sql.select_grid_id(grid.key))).scalar()
    if grid_id is not None:
        on_id(int(grid_id))
        return int(grid_id)
    ids, polygons = (grid.added, grid.added_polygons) if added else (grid.ids, grid.polygons_wkb)
    return await store_grid(
        engine, grid.key, grid.kind, grid.parameters, ids, polygons, on_id=on_id
    )


def _ewkb(polygons: np.ndarray) -> np.ndarray:
    """Shapely polygons as EWKB with SRID 4326; EWKB (``bytes``) is returned as it is."""
    if len(polygons) and isinstance(polygons[0], bytes):
        return polygons
    return shapely.to_wkb(shapely.set_srid(polygons, 4326), include_srid=True)


# PostgreSQL's binary COPY: signature, flags, header extension length; the trailer.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)


def _cells_copy(grid_id: int, ids: np.ndarray, polygons: np.ndarray) -> bytes:
    """The binary COPY data of a grid's cells (``sql.COPY_GRID_CELLS``): grid id, cell
    id and polygon, the polygon as EWKB, which PostGIS reads as it is (no hex, no CSV:
    encoding 200,000 polygons as hex CSV took longer than building them)."""
    # Each row: 3 fields; the grid id (int4, 4 bytes); then the id's and the polygon's
    # lengths and bytes.
    prefix = struct.pack(">hii", 3, 4, grid_id)
    length = struct.Struct(">i").pack
    parts = [_COPY_HEADER]
    append = parts.append
    for cell_id, wkb in zip(ids.tolist(), _ewkb(polygons), strict=True):
        encoded = str(cell_id).encode()
        append(prefix)
        append(length(len(encoded)))
        append(encoded)
        append(length(len(wkb)))
        append(wkb)
    append(_COPY_TRAILER)
    return b"".join(parts)


async def store_grid(
    engine: AsyncEngine,
    key: str,
    kind: str,
    parameters: dict,
    ids: np.ndarray,
    polygons: np.ndarray | Callable[[], np.ndarray],
    run_id: int | None = None,
    on_id: Callable[[int], None] | None = None,
) -> int:
    """Store a grid's row and its cells' polygons in one transaction; return its id.

    ``polygons`` are shapely polygons or their EWKB (SRID 4326), or a function that
    makes either: it is called, and the rows encoded, in a thread, and only when the
    grid is new. If a grid with the key exists (another worker stored it meanwhile),
    nothing is written and its id is returned. ``on_id`` is called with the id as soon
    as it is known (before the cells are written, for a new grid).
    """
    statement = sql.insert_grid(key, kind, parameters, len(ids), run_id)
    async with engine.begin() as conn:
        grid_id = (await conn.execute(statement)).scalar()
        if grid_id is None:
            grid_id = int((await conn.execute(sql.select_grid_id(key))).scalar_one())
            if on_id is not None:
                on_id(grid_id)
            return grid_id
        if on_id is not None:
            on_id(int(grid_id))

        def encode() -> bytes:
            return _cells_copy(grid_id, ids, polygons() if callable(polygons) else polygons)

        await copy_csv(conn, sql.COPY_GRID_CELLS, await asyncio.to_thread(encode))
    return int(grid_id)
