"""Emerging hot spots: incidents → space-time cube (cell by week, month, quarter or year) →
space-time Gi* and Mann-Kendall trends (``spatial.emerging``) → one category per cell."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import orjson
import pandas as pd
from sqlalchemy.ext.asyncio import AsyncEngine

import spatial
from app.core.errors import InvalidParameter
from app.core.settings import Settings
from app.schemas.analyses import EmergingRequest
from app.services.hotspots import (
    MIN_UNITS,
    Cells,
    area_unit_id,
    build_weights,
    cover_summary,
    grid_and_point_cells,
    incident_filter,
    load_area,
    store_cells,
)
from app.services.jobs import JobProgress
from app.sql import analyses as sql

# pandas period frequencies of the time steps (weeks start on Monday, as date_trunc).
FREQUENCIES = {"week": "W-SUN", "month": "M", "quarter": "Q", "year": "Y"}
# ArcGIS needs at least ten time steps for the Mann-Kendall trend.
MIN_STEPS = 10


async def check_cube_size(
    engine: AsyncEngine, settings: Settings, request: EmergingRequest, cells: float
) -> None:
    """Refuse, before the run is stored, a space-time cube of more than
    ``analysis.max_cube_bins`` bins: ``cells`` (the grid's estimate) times the time steps
    from the filters' period, or from the first to the last matching incident."""
    tz = settings.territory.timezone
    async with engine.connect() as conn:
        filters = await incident_filter(conn, request.filters, tz)
        seen = (await conn.execute(sql.select_time_range(filters, tz))).one()
    first = _local(request.filters.occurred_from, tz) or seen[0]
    last = _local(request.filters.occurred_to, tz, end=True) or seen[1]
    if first is None or last is None or first > last:
        return  # no incident matches: the run says so
    freq = FREQUENCIES[request.time_step]
    steps = len(pd.period_range(pd.Period(first, freq=freq), pd.Period(last, freq=freq)))
    limit = settings.analysis.max_cube_bins
    if cells * steps > limit:
        raise InvalidParameter(
            f"about {cells:,.0f} cells x {steps:,} {request.time_step}s would make a "
            f"space-time cube of about {cells * steps:,.0f} bins; the limit is {limit:,} "
            "(OBSERVATORY_ANALYSIS__MAX_CUBE_BINS): use coarser cells, a longer time step "
            "or a shorter period",
            estimated_bins=round(cells * steps),
            max_bins=limit,
        )


def build_cube(
    cell_ids: np.ndarray,
    point_cells: np.ndarray,
    starts: pd.Series,
    weights: np.ndarray,
    step: str,
    first: pd.Timestamp | None,
    last: pd.Timestamp | None,
) -> tuple[np.ndarray, pd.PeriodIndex]:
    """Counts per (cell, time step), every step of the period included, empty or not."""
    freq = FREQUENCIES[step]
    periods = pd.PeriodIndex(pd.to_datetime(starts), freq=freq)
    lo = pd.Period(first, freq=freq) if first is not None else periods.min()
    hi = pd.Period(last, freq=freq) if last is not None else periods.max()
    steps = pd.period_range(lo, hi, freq=freq)
    step_index = periods.asi8 - lo.ordinal
    cell_index = pd.Index(cell_ids).get_indexer(point_cells)
    inside = (cell_index >= 0) & (step_index >= 0) & (step_index < len(steps))
    cube = np.zeros((len(cell_ids), len(steps)))
    np.add.at(cube, (cell_index[inside], step_index[inside]), weights[inside])
    return cube, steps


async def run_emerging(
    engine: AsyncEngine,
    settings: Settings,
    request: EmergingRequest,
    run_id: int,
    progress: JobProgress,
) -> dict:
    """The job behind ``POST /analyses/emerging-hotspots``: returns the run's summary."""
    started = time.perf_counter()
    await progress(0.05, "building the space-time cube")
    tz = settings.territory.timezone
    async with engine.connect() as conn:
        filters = await incident_filter(conn, request.filters, tz)
        area = await load_area(conn, request.area)
        area_unit = await area_unit_id(conn, request.area)
        statement = sql.select_points_by_step(filters, request.time_step, tz, in_unit=area_unit)
        rows = (await conn.execute(statement)).all()
    if not rows:
        raise InvalidParameter("no incidents match the filters")
    columns = ["lon", "lat", "victims", "start"] + (["in_area"] if area_unit is not None else [])
    frame = pd.DataFrame(rows, columns=columns)
    lon, lat = frame["lon"].to_numpy(float), frame["lat"].to_numpy(float)
    in_area = frame["in_area"].to_numpy(bool) if area_unit is not None else None
    weights = frame["victims"].to_numpy(float) if request.weight_by_victims else np.ones(len(frame))
    grid, point_cells = await asyncio.to_thread(
        grid_and_point_cells, request.units, area, lon, lat, settings.territory.projected_crs,
        settings.analysis.max_cells, request.cover, in_area,
    )  # fmt: skip
    ids = grid.ids
    # The study area's incidents, and those in its cells (the cube holds these).
    incidents = len(frame) if in_area is None else int(in_area.sum())
    counted = int((grid.index.get_indexer(point_cells) >= 0).sum())
    first = _local(request.filters.occurred_from, tz)
    last = _local(request.filters.occurred_to, tz, end=True)
    cube, steps = build_cube(
        ids, point_cells, frame["start"], weights, request.time_step, first, last
    )
    if len(steps) < MIN_STEPS:
        raise InvalidParameter(
            f"emerging hot spot analysis needs at least {MIN_STEPS} time steps; "
            f"{len(steps)} {request.time_step}s were found: use a shorter step or a longer period"
        )
    if len(ids) < MIN_UNITS:
        raise InvalidParameter(
            f"the analysis needs at least {MIN_UNITS} cells; there are {len(ids)}"
        )
    cells = Cells(ids, None, cube.sum(axis=1), grid=grid)
    await progress(0.3, "building spatial weights")
    sw = await asyncio.to_thread(build_weights, cells, request, settings.territory.projected_crs)
    await progress(0.5, "space-time Gi* and Mann-Kendall trends")
    result = await asyncio.to_thread(
        spatial.emerging_hot_spots, cube, sw, time_lag=request.time_lag, alpha=request.alpha,
        trend_alpha=request.trend_alpha, fdr=request.fdr,
    )  # fmt: skip
    await progress(0.8, "storing results")
    z_last, p_last = result.gi.z[:, -1], result.gi.p[:, -1]
    hot = (result.significant & (result.gi.z > 0)).sum(axis=1)
    cold = (result.significant & (result.gi.z < 0)).sum(axis=1)
    stats = [
        orjson.dumps(
            {"code": int(c), "trend_z": _num(tz_), "trend_p": _num(tp), "hot_steps": int(h),
             "cold_steps": int(k)}
        ).decode()
        for c, tz_, tp, h, k in zip(
            result.code, result.trend.z, result.trend.p, hot, cold, strict=True
        )
    ]  # fmt: skip
    table = pd.DataFrame(
        {"cell_id": ids, "count": cells.counts, "z": z_last, "p": p_last,
         "category": result.category, "stats": stats}
    )  # fmt: skip
    await store_cells(engine, run_id, table, cells)
    categories = pd.Series(result.category).value_counts()
    summary = cover_summary(grid, incidents, counted)
    if request.weight_by_victims:
        summary["victims_counted"] = float(cube.sum())
    return {
        **summary,
        "time_step": request.time_step,
        "steps": len(steps),
        "first_step": str(steps[0]),
        "last_step": str(steps[-1]),
        "categories": {str(k): int(v) for k, v in categories.items()},
        "weights": {"kind": sw.kind, **sw.parameters, "islands": len(sw.islands)},
        "seconds": round(time.perf_counter() - started, 3),
    }


def _local(moment, tz: str, *, end: bool = False) -> pd.Timestamp | None:
    """A filter bound as a naive local time (the exclusive end moves back one instant)."""
    if moment is None:
        return None
    stamp = pd.Timestamp(moment)
    stamp = stamp.tz_localize(tz) if stamp.tzinfo is None else stamp.tz_convert(tz)
    if end:
        stamp -= pd.Timedelta(microseconds=1)
    return stamp.tz_localize(None)


def _num(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)
