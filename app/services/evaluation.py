"""Evaluation of hot spot methods: read incidents of two periods from PostGIS → count them
in the same units → select hot cells on the first period with each method → score the
selections on the second with PAI and RRI (the pure package ``spatial``) → store the table
as the run's summary and the selected cells as its layer."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer
from sqlalchemy.ext.asyncio import AsyncEngine

import spatial
from app.core.errors import InvalidParameter
from app.core.settings import Settings
from app.schemas.analyses import AnalysisFilters, H3Units, HotspotRequest
from app.schemas.surfaces import EvaluationRequest, Period
from app.services.hotspots import Cells, area_unit_id, build_weights, load_area, store_cells
from app.services.jobs import JobProgress
from app.services.surfaces import ProjectedPoints, load_points
from spatial import AnalysisError

# Fewer units than this make the comparison meaningless (as for local statistics).
MIN_UNITS = 30
# KDE cells per analysis unit side when sampling the surface at unit centroids.
KDE_CELLS_PER_UNIT = 2

ROW_COLUMNS = (
    "method",
    "units",
    "selected_area_km2",
    "total_area_km2",
    "hits_train",
    "total_train",
    "hits_test",
    "total_test",
    "hit_rate",
    "area_share",
    "pai",
    "pai_train",
    "rri",
    "rank_pai",
)


@dataclass(frozen=True)
class StudyUnits:
    """The units of an evaluation, their projected centroids and areas, and both counts."""

    cells: Cells  # counts of the training period
    counts_test: np.ndarray
    x: np.ndarray
    y: np.ndarray
    area_km2: np.ndarray
    added: int = 0  # cells added to a "center" grid because they hold incidents


def _period_filters(request: EvaluationRequest, period: Period) -> AnalysisFilters:
    return AnalysisFilters(
        **request.filters.model_dump(), occurred_from=period.start, occurred_to=period.end
    )


def _build_units(
    request: EvaluationRequest,
    area: shapely.Geometry,
    train: ProjectedPoints,
    test: ProjectedPoints,
    settings: Settings,
) -> StudyUnits:
    crs = settings.territory.projected_crs
    to_lonlat = Transformer.from_crs(crs, 4326, always_xy=True)
    max_cells = settings.analysis.max_cells
    units, cover = request.units, request.cover
    if isinstance(units, H3Units):
        grid = spatial.h3_cells(area, units.resolution, cover=cover, max_cells=max_cells)

        def assign(p: ProjectedPoints) -> np.ndarray:
            return spatial.points_to_h3(*to_lonlat.transform(p.x, p.y), units.resolution)
    else:
        grid = spatial.square_grid(area, units.cell_size_m, crs, cover=cover, max_cells=max_cells)

        def assign(p: ProjectedPoints) -> np.ndarray:
            lon, lat = to_lonlat.transform(p.x, p.y)
            return spatial.points_to_grid(lon, lat, grid, lattice=True)

    cells_train, cells_test = assign(train), assign(test)
    if cover == "center":  # the cells holding the area's incidents of either period join
        held = [c if p.in_area is None else c[p.in_area] for c, p in ((cells_train, train),
                (cells_test, test))]  # fmt: skip
        grid = spatial.with_cells(grid, np.concatenate(held))
    ids = grid["cell_id"].to_numpy()
    counts_train = spatial.count_by_cell(cells_train, ids).astype(float)
    counts_test = spatial.count_by_cell(cells_test, ids).astype(float)
    projected = gpd.GeoSeries(grid.geometry.to_numpy(), crs=4326).to_crs(crs)
    centroids = projected.centroid
    return StudyUnits(
        cells=Cells(ids, grid.geometry.to_numpy(), counts_train),
        counts_test=counts_test,
        x=centroids.x.to_numpy(),
        y=centroids.y.to_numpy(),
        area_km2=projected.area.to_numpy() / 1e6,
        added=int(grid.attrs.get("added_cells", 0)),
    )


def _gi_scores(study: StudyUnits, request: EvaluationRequest, crs: str) -> np.ndarray:
    """Gi* z of the hot cells at 95 % confidence or more (bin >= 2); NaN elsewhere."""
    spatial.enable_numba_cache()
    weights = build_weights(study.cells, HotspotRequest(units=request.units), crs)
    gi = spatial.gi_star(study.cells.counts, weights.w)
    return np.where(gi.bin >= 2, gi.z, np.nan)


def _kde_scores(
    study: StudyUnits, train: ProjectedPoints, bandwidth: float | None
) -> tuple[np.ndarray, float]:
    """Training-period KDE density (per km²) at each unit's centroid, and the bandwidth."""
    cell = float(np.sqrt(np.median(study.area_km2)) * 1000 / KDE_CELLS_PER_UNIT)
    surface = spatial.quartic_kde(train.x, train.y, bandwidth=bandwidth, cell_size=cell)
    rows, cols = surface.density.shape
    xmin, _, _, ymax = surface.bounds
    col = np.floor((study.x - xmin) / surface.cell_size).astype(np.int64)
    row = np.floor((ymax - study.y) / surface.cell_size).astype(np.int64)
    inside = (row >= 0) & (row < rows) & (col >= 0) & (col < cols)
    scores = np.zeros(study.x.size)
    scores[inside] = surface.density[row[inside], col[inside]]
    return scores, surface.bandwidth


def _selections(
    study: StudyUnits, train: ProjectedPoints, request: EvaluationRequest, crs: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """Each method's selection mask and ranking score, and what the methods chose."""
    share = request.area_share
    masks, scores, notes = {}, {}, {}
    for method in request.methods:
        if method == "gi_star":
            score = _gi_scores(study, request, crs)
            notes["gi_star_hot_units"] = int(np.isfinite(score).sum())
        elif method == "kde":
            score, bandwidth = _kde_scores(study, train, request.kde_bandwidth_m)
            notes["kde_bandwidth_m"] = round(bandwidth, 1)
        else:
            score = study.cells.counts
        scores[method] = score
        if np.isfinite(score).any():
            masks[method] = spatial.select_top_area(score, study.area_km2, area_share=share)
        else:  # e.g. no significant Gi* hot cell: an empty selection, scored as such
            masks[method] = np.zeros(score.size, dtype=bool)
    return masks, scores, notes


def _table(masks: dict[str, np.ndarray], study: StudyUnits) -> list[dict]:
    frame = spatial.compare_selections(
        masks, study.cells.counts, study.counts_test, study.area_km2
    ).rename(
        columns={
            "selection": "method",
            "selected_area": "selected_area_km2",
            "total_area": "total_area_km2",
        }
    )
    rows = []
    for record in frame[list(ROW_COLUMNS)].to_dict(orient="records"):
        rows.append({k: _plain(v) for k, v in record.items()})
    return rows


def _plain(value: object) -> object:
    """JSON-safe scalars: NaN and pandas NA become None."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    return value


async def run_evaluation(
    engine: AsyncEngine,
    settings: Settings,
    request: EvaluationRequest,
    run_id: int,
    progress: JobProgress,
) -> dict:
    """The job behind ``POST /analyses/evaluate``: returns the run's summary (the table)."""
    started = time.perf_counter()
    crs = settings.territory.projected_crs
    await progress(0.05, "reading the incidents of both periods")
    async with engine.connect() as conn:
        area = await load_area(conn, request.area)
        in_unit = await area_unit_id(conn, request.area)
        train = await load_points(
            conn, settings, _period_filters(request, request.train), victims=False,
            in_unit=in_unit,
        )  # fmt: skip
        test = await load_points(
            conn, settings, _period_filters(request, request.test), victims=False,
            in_unit=in_unit,
        )  # fmt: skip
    if train.x.size == 0 or test.x.size == 0:
        empty = "training" if train.x.size == 0 else "test"
        raise InvalidParameter(f"no incidents match the filters in the {empty} period")
    await progress(0.2, "counting incidents per unit")
    try:
        study = await asyncio.to_thread(_build_units, request, area, train, test, settings)
        if len(study.cells.ids) < MIN_UNITS:
            raise InvalidParameter(
                f"an evaluation needs at least {MIN_UNITS} units; this area has "
                f"{len(study.cells.ids)}: use finer units or a larger area"
            )
        await progress(0.4, f"selecting hot units: {', '.join(request.methods)}")
        masks, scores, notes = await asyncio.to_thread(_selections, study, train, request, crs)
        table = _table(masks, study)
    except AnalysisError as exc:
        raise InvalidParameter(str(exc)) from None
    await progress(0.9, "storing the selected units")
    await _store_selected(engine, run_id, study, masks, scores)
    return {
        "table": table,
        "cover": request.cover,
        "units": len(study.cells.ids),
        "cells_added_for_incidents": study.added,
        "total_area_km2": float(study.area_km2.sum()),
        "incidents_train": _incidents(train),
        "incidents_test": _incidents(test),
        "counted_train": float(study.cells.counts.sum()),
        "counted_test": float(study.counts_test.sum()),
        **notes,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _incidents(points: ProjectedPoints) -> int:
    """The study area's incidents: all those read, or those its unit holds."""
    return int(points.x.size if points.in_area is None else points.in_area.sum())


async def _store_selected(
    engine: AsyncEngine,
    run_id: int,
    study: StudyUnits,
    masks: dict[str, np.ndarray],
    scores: dict[str, np.ndarray],
) -> None:
    """The units any method selected, as the run's layer: ``count`` is the training count,
    ``category`` the methods that selected the unit (e.g. ``gi_star+kde``), ``z`` the Gi* z."""
    chosen = np.logical_or.reduce(list(masks.values()))
    if not chosen.any():
        return
    table = pd.DataFrame(
        {
            "cell_id": study.cells.ids[chosen],
            "count": study.cells.counts[chosen],
            "category": ["+".join(m for m in masks if masks[m][i]) for i in np.flatnonzero(chosen)],
        }
    )
    if "gi_star" in scores:
        table["z"] = scores["gi_star"][chosen]
    await store_cells(engine, run_id, table, study.cells.geometry[chosen])
