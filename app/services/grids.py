"""Analysis grids, built once: H3 and square grids over a study area, cached in this
process (ids, neighbours) and in PostGIS (polygons, ``analysis_grid_cell``).

A grid is named by a key made of its specification and a digest of the study area's
geometry, so the key changes when the boundaries do. Both caches are only caches: any
worker rebuilds a grid from its key's ingredients, and the database copy is looked up by
key on every run (never trusted from memory), so a worker never assumes another's state.
"""

from __future__ import annotations

import hashlib
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
from app.core.db import copy_csv, frame_to_csv
from app.schemas.analyses import GridUnits, H3Units
from app.sql import analyses as sql
from spatial.grids import h3_cell_ids, h3_polygons

# Grids kept per worker. An H3 resolution 9 grid of Belize (213,000 cells) holds about
# 40 MB here (ids, index, neighbour matrix): a few grids fit any worker.
MAX_GRIDS = 4


@dataclass(eq=False)
class Grid:
    """The cells of one grid over one study area, with what is derived from them.

    Attributes
    ----------
    key : str
        ``analysis_grid.key``: ``h3:<resolution>:<area digest>`` or
        ``square:<crs>:<cell size>:<area digest>``.
    kind : str
        ``"h3"`` or ``"square"``.
    parameters : dict
        The grid's specification (stored with it).
    ids : numpy.ndarray of object
        The cell ids, sorted (H3) or by row then column (square).
    frame : geopandas.GeoDataFrame or None
        Square grids only: the frame of ``spatial.square_grid`` (polygons, rows, columns
        and the attrs that ``points_to_grid`` needs).
    """

    key: str
    kind: str
    parameters: dict
    ids: np.ndarray
    frame: gpd.GeoDataFrame | None = None
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

    def point_cells(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """The cell id of each point (None outside the grid's cells)."""
        if self.kind == "h3":
            return spatial.points_to_h3(lon, lat, self.parameters["resolution"])
        return spatial.points_to_grid(lon, lat, self.frame)

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


def grid_key(units: H3Units | GridUnits, area: shapely.Geometry, crs: str) -> str:
    digest = area_digest(area)
    if isinstance(units, H3Units):
        return f"h3:{units.resolution}:{digest}"
    return f"square:{crs}:{units.cell_size_m:g}:{digest}"


def cached_grid(units: H3Units | GridUnits, area: shapely.Geometry, crs: str) -> Grid:
    """The grid of ``units`` over ``area``: from this worker's cache, else built."""
    key = grid_key(units, area, crs)
    with _grids_lock:
        grid = _grids.get(key)
        if grid is not None:
            _grids.move_to_end(key)
            return grid
    grid = _build_grid(key, units, area, crs)
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


def _build_grid(key: str, units: H3Units | GridUnits, area: shapely.Geometry, crs: str) -> Grid:
    if isinstance(units, H3Units):
        ids = np.array(h3_cell_ids(area, units.resolution), dtype=object)
        return Grid(key, "h3", {"resolution": units.resolution}, ids)
    frame = spatial.square_grid(area, units.cell_size_m, crs)
    parameters = {
        "crs": frame.attrs["grid_crs"],
        "cell_size_m": frame.attrs["cell_size_m"],
        "origin": list(frame.attrs["grid_origin"]),
    }
    return Grid(key, "square", parameters, frame["cell_id"].to_numpy(dtype=object), frame)


async def stored_grid_id(engine: AsyncEngine, grid: Grid) -> int:
    """The id of the grid in ``analysis_grid``, its polygons stored first if it is new."""
    async with engine.connect() as conn:
        grid_id = (await conn.execute(sql.select_grid_id(grid.key))).scalar()
    if grid_id is not None:
        return int(grid_id)
    return await store_grid(engine, grid.key, grid.kind, grid.parameters, grid.ids, grid.polygons())


async def store_grid(
    engine: AsyncEngine,
    key: str,
    kind: str,
    parameters: dict,
    ids: np.ndarray,
    polygons: np.ndarray,
    run_id: int | None = None,
) -> int:
    """Store a grid's row and its cells' polygons in one transaction; return its id.

    If a grid with the key exists (another worker stored it meanwhile), nothing is
    written and its id is returned.
    """
    statement = sql.insert_grid(key, kind, parameters, len(ids), run_id)
    async with engine.begin() as conn:
        grid_id = (await conn.execute(statement)).scalar()
        if grid_id is None:
            return int((await conn.execute(sql.select_grid_id(key))).scalar_one())
        rows = pd.DataFrame(
            {
                "grid_id": grid_id,
                "cell_id": ids,
                "geom": shapely.to_wkb(
                    shapely.set_srid(polygons, 4326), hex=True, include_srid=True
                ),
            }
        )
        await copy_csv(conn, sql.COPY_GRID_CELLS, frame_to_csv(rows))
    return int(grid_id)
