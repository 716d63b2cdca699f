"""Hot spot analyses: read incidents from PostGIS → aggregate into units → weights → Gi* or
Local Moran (the pure package ``spatial``) → store every unit's statistics as a layer."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import spatial
from app.core.db import copy_csv, frame_to_csv
from app.core.errors import InvalidParameter
from app.core.settings import Settings
from app.files.exports import csv_text
from app.params import local_time
from app.schemas.analyses import (
    AdminUnits,
    AnalysisFilters,
    EmergingRequest,
    GlobalMoran,
    GridUnits,
    H3Units,
    HotspotRequest,
    WeightsSpec,
)
from app.schemas.surfaces import EvaluationRequest
from app.services.grids import (
    Grid,
    StoredGrid,
    Storing,
    cached_grid,
    start_storing,
    store_grid,
    store_polygons,
    stored_grid_ids,
    with_cells,
)
from app.services.jobs import JobProgress
from app.sql import analyses as sql
from app.sql.incidents import IncidentFilter, select_unit_id

# Local statistics on fewer units than this mean little (DESIGN.md section 5).
MIN_UNITS = 30
# Neighbour pairs allowed per cell of analysis.max_cells (see check_neighbours).
NEIGHBOURS_PER_CELL = 10


@dataclass(frozen=True)
class Cells:
    """Analysis units: ids, polygons (EPSG:4326) and the count in each.

    Cells of an H3 or square grid name their ``grid`` and leave ``geometry`` None: the
    grid gives the polygons when they are needed (see :meth:`polygons`).
    """

    ids: np.ndarray
    geometry: np.ndarray | None
    counts: np.ndarray
    # The incidents' coordinates, where they were read (not for admin units).
    lon: np.ndarray | None = None
    lat: np.ndarray | None = None
    grid: Grid | None = None
    # How many of the incidents read fall in the cells (grids only).
    counted: int | None = None

    def polygons(self) -> np.ndarray:
        """The units' polygons, in order."""
        if self.geometry is not None:
            return self.geometry
        if self.grid is None:
            raise ValueError("cells without geometry or grid")
        return self.grid.polygons()


async def incident_filter(
    conn: AsyncConnection, filters: AnalysisFilters, timezone: str
) -> IncidentFilter:
    """The analysis filters as an ``IncidentFilter``: dates without a zone are local time
    of the territory (``app.params.local_time``), as everywhere else."""
    unit_id = None
    if filters.unit is not None:
        unit_id = (await conn.execute(select_unit_id(filters.unit))).scalar()
        if unit_id is None:
            raise InvalidParameter(f"unknown unit code {filters.unit!r}")
    return IncidentFilter(
        occurred_from=local_time(filters.occurred_from, timezone),
        occurred_to=local_time(filters.occurred_to, timezone),
        categories=tuple(c.lower() for c in filters.categories),
        victim_sex=tuple(filters.victim_sex),
        age_min=filters.age_min,
        age_max=filters.age_max,
        unit_id=unit_id,
        sources=tuple(filters.sources),
    )


async def load_cells(
    conn: AsyncConnection,
    settings: Settings,
    request: HotspotRequest,
    on_grid: Callable[[Grid], None] | None = None,
) -> tuple[Cells, int]:
    """The analysis units with their counts, and how many incidents the study area has
    (those of the filters; in a unit's area, those the unit holds).

    ``on_grid`` (H3 and square grids) is called in the event loop with the grid over
    the area alone as soon as it is known, before the points are binned: a run starts
    storing its polygons then."""
    filters = await incident_filter(conn, request.filters, settings.territory.timezone)
    units = request.units
    if isinstance(units, AdminUnits):
        rows = (await conn.execute(sql.select_units(units.level, request.area))).all()
        if not rows:
            raise InvalidParameter(f"no units of level {units.level} are loaded")
        unit_ids = [r[0] for r in rows]
        counted = dict(
            (
                await conn.execute(
                    sql.count_by_unit(filters, unit_ids, by_victims=request.weight_by_victims)
                )
            ).all()
        )
        counts = np.array([float(counted.get(uid, 0)) for uid in unit_ids])
        geometry = shapely.from_wkb([bytes(r[2]) for r in rows])
        return Cells(np.array([r[1] for r in rows]), geometry, counts), int(counts.sum())

    area = await load_area(conn, request.area)
    area_unit = await area_unit_id(conn, request.area)
    points = (await conn.execute(sql.select_points(filters, in_unit=area_unit))).all()
    # Column-wise: np.array over Row objects is ten times slower than zip.
    columns = list(zip(*points, strict=True)) if points else [()] * (3 + (area_unit is not None))
    lon, lat, victims = (np.asarray(c, dtype=float) for c in columns[:3])
    in_area = np.asarray(columns[3], dtype=bool) if area_unit is not None else None
    weights = victims if request.weight_by_victims else None
    if on_grid is not None:
        loop = asyncio.get_running_loop()
        callback = on_grid
        on_grid = lambda grid: loop.call_soon_threadsafe(callback, grid)  # noqa: E731
    cells = await asyncio.to_thread(
        _grid_cells, units, request.cover, area, lon, lat, in_area, weights,
        settings.territory.projected_crs, settings.analysis.max_cells, on_grid,
    )  # fmt: skip
    # The study area's incidents: all those read, or those its unit holds.
    incidents = len(lon) if in_area is None else int(in_area.sum())
    return replace(cells, lon=lon, lat=lat), incidents


async def area_unit_id(conn: AsyncConnection, area_code: str | None) -> int | None:
    """The id of the unit that is the study area; None for the territory (every
    incident is in the territory)."""
    if area_code is None:
        return None
    return (await conn.execute(select_unit_id(area_code))).scalar()


def _grid_cells(
    units: H3Units | GridUnits,
    cover: str,
    area: shapely.Geometry,
    lon: np.ndarray,
    lat: np.ndarray,
    in_area: np.ndarray | None,
    weights: np.ndarray | None,
    crs: str,
    max_cells: int,
    on_grid: Callable[[Grid], None] | None = None,
) -> Cells:
    grid, point_cells = grid_and_point_cells(
        units, area, lon, lat, crs, max_cells, cover, in_area, on_grid
    )
    inside = grid.index.get_indexer(point_cells) >= 0
    counts = spatial.count_by_cell(point_cells, grid.index, weights=weights)
    return Cells(grid.ids, None, counts, grid=grid, counted=int(inside.sum()))


def grid_and_point_cells(
    units: H3Units | GridUnits,
    area: shapely.Geometry,
    lon: np.ndarray,
    lat: np.ndarray,
    crs: str,
    max_cells: int,
    cover: str = "center",
    in_area: np.ndarray | None = None,
    on_grid: Callable[[Grid], None] | None = None,
) -> tuple[Grid, np.ndarray]:
    """The grid of the study area by the ``cover`` rule (from this worker's cache when it
    has it), and the cell id of each point (an id the grid lacks: the point is not counted).

    With ``center`` the grid is the cells whose centre lies in the area plus the cells
    that hold the points of the area (``in_area``; None: every point is the area's), so
    every such point is counted. With ``intersects`` it is the cells touching the area.
    ``on_grid`` is called with the grid over the area alone as soon as it is known.
    """
    # Checked before the run too (check_grid_size); again here because the boundaries
    # may have changed in between.
    check_cells(units, area, crs, max_cells)
    grid = cached_grid(units, area, crs, cover)
    if on_grid is not None:
        on_grid(grid)
    point_cells = grid.point_cells(lon, lat)
    if cover == "center":
        grid = with_cells(grid, point_cells if in_area is None else point_cells[in_area])
    return grid, point_cells


def cover_summary(grid: Grid, incidents: int, counted: int) -> dict:
    """What a run's summary says about its cells: the cover rule, the cells, and the
    incidents read and counted in them."""
    return {
        "cover": grid.cover,
        "units": len(grid.ids),
        "cells_added_for_incidents": int(grid.added.size),
        "incidents": incidents,
        "counted": counted,
    }


def estimate_cells(units: H3Units | GridUnits, area: shapely.Geometry, crs: str) -> float:
    """About how many cells ``units`` make over ``area``: its area over a cell's.

    The mean H3 cell area is 4,357,449 km² / 7^resolution; a square cell's is its side
    squared. Cells cut by the area's edge add a few per cent (more for thin areas).
    """
    if isinstance(units, H3Units):
        return _area_km2(area, crs) / (4_357_449.4 / 7**units.resolution)
    return _area_km2(area, crs) * 1e6 / units.cell_size_m**2


def check_cells(
    units: H3Units | GridUnits, area: shapely.Geometry, crs: str, max_cells: int
) -> float:
    """The estimate of :func:`estimate_cells`; a 422 beyond ``max_cells``."""
    expected = estimate_cells(units, area, crs)
    if isinstance(units, H3Units):
        _check_size(expected, max_cells, f"H3 resolution {units.resolution}")
    else:
        _check_size(expected, max_cells, f"{units.cell_size_m:g} m cells")
    return expected


def check_neighbours(
    weights: WeightsSpec, cells: float, cell_area_m2: float, max_cells: int
) -> None:
    """Refuse k-nearest or distance-band weights with more neighbour pairs than
    ``NEIGHBOURS_PER_CELL * max_cells`` (422 with the estimate and the limit).

    Building weights costs memory and time in the number of pairs: a distance band with
    about a million pairs took ~400 MB and two minutes here (libpysal's DistanceBand and
    one Python set per unit). Queen, rook or H3 neighbours give 4 to 8 pairs a cell and
    are bounded by the grid limit already. A band's pairs are estimated as each cell's
    disc (pi d²) over the mean cell area, at most all the other cells.
    """
    if weights.type == "knn":
        per_cell = min(float(weights.k), max(cells - 1, 0))
        what = f"{weights.k} nearest neighbours"
    elif weights.type == "distance_band" and weights.distance_m is not None:
        per_cell = min(math.pi * weights.distance_m**2 / cell_area_m2, max(cells - 1, 0))
        what = f"a {weights.distance_m:g} m distance band"
    else:
        return
    pairs, limit = cells * per_cell, NEIGHBOURS_PER_CELL * max_cells
    if pairs > limit:
        raise InvalidParameter(
            f"{what} would give about {pairs:,.0f} neighbour pairs ({per_cell:,.0f} per cell "
            f"over about {cells:,.0f} cells); the limit is {limit:,} ({NEIGHBOURS_PER_CELL} "
            "per cell of OBSERVATORY_ANALYSIS__MAX_CELLS): use a shorter distance, fewer "
            "neighbours or coarser cells",
            estimated_pairs=round(pairs),
            max_pairs=limit,
        )


async def check_grid_size(
    engine: AsyncEngine,
    settings: Settings,
    request: HotspotRequest | EmergingRequest | EvaluationRequest,
) -> float | None:
    """Refuse, before a run is stored, a grid beyond ``analysis.max_cells``, weights with
    too many neighbour pairs (:func:`check_neighbours`; 422s with the estimate and the
    limit) or an unknown study area: a request that cannot succeed must not first
    answer 202 and fail later. Admin units need no check (as many as loaded). Returns
    the estimated number of cells (None for admin units)."""
    if isinstance(request.units, AdminUnits):
        return None
    async with engine.connect() as conn:
        area = await load_area(conn, request.area)
    crs, max_cells = settings.territory.projected_crs, settings.analysis.max_cells
    cells = await asyncio.to_thread(check_cells, request.units, area, crs, max_cells)
    if isinstance(request.units, H3Units):
        cell_area_m2 = 4_357_449.4e6 / 7**request.units.resolution
    else:
        cell_area_m2 = request.units.cell_size_m**2
    if (weights := getattr(request, "weights", None)) is not None:  # evaluation: none
        check_neighbours(weights, cells, cell_area_m2, max_cells)
    return cells


async def load_area(conn: AsyncConnection, area_code: str | None) -> shapely.Geometry:
    """The study area: the unit ``area_code``, else the top level (the country); 422 when
    the unit is unknown or no boundaries are loaded."""
    area_wkb = (await conn.execute(sql.select_area(area_code))).scalar()
    if area_wkb is None:
        raise InvalidParameter(
            f"unknown area {area_code!r}" if area_code else "no boundaries are loaded"
        )
    return shapely.from_wkb(bytes(area_wkb))


def _area_km2(area: shapely.Geometry, crs: str) -> float:
    projected = gpd.GeoSeries([area], crs=4326).to_crs(crs)
    return float(projected.area.iloc[0]) / 1e6


def _check_size(expected: float, max_cells: int, what: str) -> None:
    if expected > max_cells:
        raise InvalidParameter(
            f"{what} would make about {expected:,.0f} cells over this area; the limit is "
            f"{max_cells:,} (OBSERVATORY_ANALYSIS__MAX_CELLS): use coarser cells or a smaller "
            "area",
            estimated_cells=round(expected),
            max_cells=max_cells,
        )


def build_weights(
    cells: Cells, request: HotspotRequest | EmergingRequest, crs: str
) -> spatial.SpatialWeights:
    """The weights the request asks for; built once per grid in this worker (a grid's
    cells never change), every time for admin units."""
    kind = request.weights.type or ("h3" if isinstance(request.units, H3Units) else "queen")
    if kind == "h3" and not isinstance(request.units, H3Units):
        raise InvalidParameter("h3 neighbours need H3 units")
    if kind == "knn":
        key: tuple = (kind, min(request.weights.k, len(cells.ids) - 1))
    elif kind == "distance_band":
        key = (kind, request.weights.distance_m)
    else:
        key = (kind,)
    if cells.grid is None:
        return _weights(cells, key, crs)
    return cells.grid.weights(key, lambda: _weights(cells, key, crs))


def _weights(cells: Cells, key: tuple, crs: str) -> spatial.SpatialWeights:
    kind, ids = key[0], list(cells.ids)
    if kind == "h3":
        return spatial.h3_neighbours(ids)
    if kind in ("queen", "rook"):
        frame = gpd.GeoDataFrame({"cell_id": ids}, geometry=cells.polygons(), crs=4326)
        return spatial.contiguity(frame, rook=kind == "rook", ids=ids)
    x, y = _projected_centroids(cells, crs)
    if kind == "knn":
        return spatial.knn(x, y, k=key[1], ids=ids)
    return spatial.distance_band(x, y, threshold=key[1], ids=ids)


def optimized_weights(
    cells: Cells, n_incidents: int, crs: str
) -> tuple[spatial.SpatialWeights, dict]:
    """ArcGIS Pro's Optimized Hot Spot Analysis scale: a distance band chosen by incremental
    spatial autocorrelation of the cell counts (first significant peak of Moran's I z, else
    the maximum), with the incidents' locational outliers reported."""
    spatial.check_enough(n_incidents, len(cells.ids))
    x, y = _projected_centroids(cells, crs)
    table = spatial.incremental_spatial_autocorrelation(x, y, cells.counts)
    choice = spatial.choose_scale(table)
    weights = spatial.distance_band(x, y, threshold=choice.distance, ids=list(cells.ids))
    outliers = 0
    if cells.lon is not None and len(cells.lon) > 1:
        px, py = Transformer.from_crs(4326, crs, always_xy=True).transform(cells.lon, cells.lat)
        outliers = int(spatial.locational_outliers(np.asarray(px), np.asarray(py)).sum())
    scale = {
        "distance_m": round(float(choice.distance), 1),
        "reason": choice.reason,
        "z": float(choice.z),
        "p": float(choice.p),
    }
    isa = table[["distance", "i", "z", "p"]].round(6).to_dict("records")
    return weights, {"scale": scale, "incremental_autocorrelation": isa,
                     "locational_outliers": outliers}  # fmt: skip


def _projected_centroids(cells: Cells, crs: str) -> tuple[np.ndarray, np.ndarray]:
    centroids = shapely.centroid(cells.polygons())
    to_metres = Transformer.from_crs(4326, crs, always_xy=True)
    x, y = to_metres.transform(shapely.get_x(centroids), shapely.get_y(centroids))
    return np.asarray(x), np.asarray(y)


def compute(
    cells: Cells, weights: spatial.SpatialWeights, request: HotspotRequest
) -> tuple[pd.DataFrame, dict]:
    """Run the statistic: one row per cell with every result column (None where n/a), and
    what the summary should add (the seed drawn, global Moran's I for Local Moran)."""
    spatial.enable_numba_cache()  # compiled kernels go to disk for the next process
    frame = pd.DataFrame({"cell_id": cells.ids, "count": cells.counts})
    if request.method in ("gi_star", "optimized_gi_star"):
        gi = spatial.gi_star(
            cells.counts, weights, permutations=request.permutations, seed=request.seed,
            fdr=request.fdr,
        )  # fmt: skip
        extra = {"seed": gi.seed} if request.permutations else {}
        return frame.assign(z=gi.z, p=gi.p, p_sim=gi.p_sim, bin=gi.bin), extra
    permutations = max(request.permutations, 99)
    lisa = spatial.local_moran(
        cells.counts, weights.w, permutations=permutations, seed=request.seed,
        alpha=request.alpha, fdr=request.fdr,
    )  # fmt: skip
    moran = spatial.global_moran(cells.counts, weights.w, permutations=permutations, seed=lisa.seed)
    extra = {
        "seed": lisa.seed,
        "global_moran": GlobalMoran(
            **{k: getattr(moran, k) for k in GlobalMoran.model_fields}
        ).model_dump(),
    }
    table = frame.assign(
        i=lisa.i, z=lisa.z_sim, p_sim=lisa.p_sim, quadrant=lisa.quadrant, label=lisa.label
    )
    return table, extra


async def run_hotspots(
    engine: AsyncEngine,
    settings: Settings,
    request: HotspotRequest,
    run_id: int,
    progress: JobProgress,
) -> dict:
    """The job behind ``POST /analyses/hotspots``: returns the run's summary."""
    started = time.perf_counter()
    await progress(0.05, "counting incidents per unit")
    # A new grid's polygons are stored while the run bins its points and computes (the
    # database indexes them on its own core), and while it stores its values: the
    # first run on a grid waited ~5 s for them. The grid's ids are known before its
    # polygons are written.
    early: list[Storing] = []
    polygons: asyncio.Task | None = None
    located: asyncio.Future[StoredGrid] = asyncio.get_running_loop().create_future()
    try:
        async with engine.connect() as conn:
            cells, n_incidents = await load_cells(
                conn, settings, request, lambda grid: early.append(start_storing(engine, grid))
            )
        if len(cells.ids) < MIN_UNITS:
            raise InvalidParameter(
                f"local statistics need at least {MIN_UNITS} units; this area has "
                f"{len(cells.ids)}: use H3 hexagons, a grid or a finer level"
            )
        if n_incidents == 0:
            raise InvalidParameter("no incidents match the filters")
        if cells.grid is not None:
            base = early.pop() if early else None
            polygons = asyncio.create_task(
                store_polygons(engine, cells.grid, located.set_result, base)
            )
        weights, table, extra = await _statistic(cells, n_incidents, request, settings, progress)
        await progress(0.8, "storing results")
        stored = None if polygons is None else await _located(located, polygons)
        await store_cells(engine, run_id, table, cells, stored)
        if polygons is not None:
            await polygons  # the run's layer is complete when the run is
    finally:
        # Storing still under way here is a failed run's: its transaction rolls back.
        pending = [s.task for s in early] + ([polygons] if polygons is not None else [])
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    if cells.grid is not None:
        counted = cover_summary(cells.grid, n_incidents, cells.counted)
    else:  # admin units: every incident is in its unit
        counted = {"units": len(cells.ids), "incidents": n_incidents, "counted": n_incidents}
    if request.weight_by_victims:
        counted["victims_counted"] = float(cells.counts.sum())
    summary = {
        **counted,
        "weights": {
            "kind": weights.kind,
            **weights.parameters,
            "islands": len(weights.islands),
            "components": weights.components,
        },
        "seconds": round(time.perf_counter() - started, 3),
        **extra,
    }
    if "bin" in table:
        summary["bins"] = {
            str(k): int(v) for k, v in table["bin"].value_counts().sort_index().items()
        }
    if "label" in table:
        summary["labels"] = {str(k): int(v) for k, v in table["label"].value_counts().items()}
    return summary


async def _statistic(
    cells: Cells,
    n_incidents: int,
    request: HotspotRequest,
    settings: Settings,
    progress: JobProgress,
) -> tuple[spatial.SpatialWeights, pd.DataFrame, dict]:
    """The weights, the cells' table and what the summary adds (see :func:`compute`)."""
    crs = settings.territory.projected_crs
    extra: dict = {}
    if request.method == "optimized_gi_star":
        await progress(0.2, "choosing the scale (incremental spatial autocorrelation)")
        weights, extra = await asyncio.to_thread(optimized_weights, cells, n_incidents, crs)
        request = request.model_copy(update={"fdr": True})
    else:
        await progress(0.3, "building spatial weights")
        weights = await asyncio.to_thread(build_weights, cells, request, crs)
    await progress(0.5, f"computing {request.method}")
    table, computed = await asyncio.to_thread(compute, cells, weights, request)
    return weights, table, {**extra, **computed}


async def _located(located: asyncio.Future[StoredGrid], storing: asyncio.Task) -> StoredGrid:
    """Where the run's grid is (``located``), as soon as ``storing`` (its polygons) knows;
    the error of ``storing`` if it fails first."""
    await asyncio.wait({located, storing}, return_when=asyncio.FIRST_COMPLETED)
    if located.done():
        return located.result()
    return storing.result()  # raises: it failed before the ids were known


async def store_cells(
    engine: AsyncEngine,
    run_id: int,
    table: pd.DataFrame,
    cells: Cells | np.ndarray,
    stored: StoredGrid | None = None,
) -> None:
    """Store a run's cells: the values of ``table`` (one row per cell, the columns of
    ``analysis_cell`` it has), and their polygons unless their grid is stored already
    (``stored``: where the run's grid has them, if the run stored them already).

    ``cells`` are the run's units, or just their polygons (units of this run alone, such
    as admin units or a selection of cells): these are stored in a grid owned by the run.
    """
    if isinstance(cells, Cells) and cells.grid is not None:
        cell_ids = table["cell_id"].to_numpy()
        if stored is None:
            grid_id = await stored_grid_ids(engine, cells.grid, cell_ids)
        else:
            grid_id = stored.cell_grid_ids(cells.grid, cell_ids)
    else:
        polygons = cells.polygons() if isinstance(cells, Cells) else cells
        grid_id = await store_grid(
            engine, f"run:{run_id}", "run", {}, table["cell_id"].to_numpy(), polygons, run_id
        )
    rows = pd.DataFrame({c: table.get(c) for c in sql.VALUE_COLUMNS})
    rows["run_id"] = run_id
    rows["grid_id"] = grid_id
    rows["stats"] = table.get("stats", "{}")
    for col in ("bin", "quadrant"):
        rows[col] = pd.array(rows[col], dtype="Int64") if rows[col].notna().any() else None
    async with engine.begin() as conn:
        await copy_csv(conn, sql.COPY_CELL_VALUES, frame_to_csv(rows))


async def write_result(engine: AsyncEngine, run_id: int, path: Path) -> dict:
    """Write a completed run's cells as GeoJSON (RFC 7946) or CSV; return its summary."""
    async with engine.connect() as conn:
        run = (await conn.execute(sql.select_run(run_id))).mappings().one()
        if path.suffix.lower() == ".csv":
            rows = (await conn.execute(sql.select_cells_table(run_id))).mappings().all()
            columns = list(rows[0].keys()) if rows else []
            text = csv_text(columns, ([r[c] for c in columns] for r in rows))
            path.write_text(text, encoding="utf-8", newline="")
        else:
            features = (await conn.execute(sql.select_cells_geojson(run_id))).scalar_one()
            path.write_text(f'{{"type":"FeatureCollection","features":{features}}}')
    return dict(run["summary"])
