"""Kernel density surfaces: read incidents from PostGIS → project them → quartic KDE (the pure
package ``spatial``) → a GeoTIFF in the projected CRS, or hot-area polygons in EPSG:4326.

The API computes none of it: a KDE run (kind ``kde``, :func:`run_kde`) is a job a worker
computes (app.services.jobs); it stores the GeoTIFF and the hot areas at its percentile
as the run's files. The CLI computes a surface in its own process (:func:`kde_surface`).
"""

from __future__ import annotations

import asyncio
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import shapely
from pyproj import Transformer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.errors import InvalidParameter
from app.core.settings import Settings
from app.schemas.analyses import AnalysisFilters
from app.schemas.surfaces import KdeQuery, KdeRequest
from app.services.hotspots import incident_filter
from app.services.jobs import FILES, JobProgress
from app.sql import analyses as sql
from spatial import AnalysisError
from spatial.kde import (
    CELLS_ON_SHORTER_SIDE,
    KdeSurface,
    default_bandwidth,
    hot_areas,
    quartic_kde,
    write_geotiff,
)

#: Largest raster side, in cells, one request may build (4,000 x 4,000 float64 is 128 MB).
MAX_RASTER_SIDE = 4_000
TIFF = "image/tiff"
GEOJSON = "application/geo+json"
#: The files a KDE run stores.
SURFACE_FILE, AREAS_FILE = "kde.tif", "areas.geojson"


@dataclass(frozen=True)
class ProjectedPoints:
    """Incidents in the projected CRS (metres), with their weights (None: one each)."""

    x: np.ndarray
    y: np.ndarray
    weights: np.ndarray | None
    # Whether each incident lies in the study area's unit (read with ``in_unit``).
    in_area: np.ndarray | None = None

    @property
    def total(self) -> float:
        """The number of incidents, or the sum of their weights."""
        return float(self.x.size if self.weights is None else self.weights.sum())


async def load_points(
    conn: AsyncConnection,
    settings: Settings,
    filters: AnalysisFilters,
    *,
    victims: bool,
    in_unit: int | None = None,
) -> ProjectedPoints:
    """The incidents the filters select, projected to ``territory.projected_crs``; with
    ``in_unit``, whether each lies in that unit (``in_area``)."""
    selected = await incident_filter(conn, filters, settings.territory.timezone)
    rows = (await conn.execute(sql.select_points(selected, in_unit=in_unit))).all()
    width = 3 if in_unit is None else 4
    lon, lat, count, *flag = np.array(rows, dtype=float).reshape(-1, width).T
    to_metres = Transformer.from_crs(4326, settings.territory.projected_crs, always_xy=True)
    x, y = to_metres.transform(lon, lat)
    in_area = flag[0].astype(bool) if flag else None
    return ProjectedPoints(np.asarray(x), np.asarray(y), count if victims else None, in_area)


def check_raster_size(
    points: ProjectedPoints, bandwidth: float | None, cell_size: float | None
) -> tuple[float, float]:
    """Resolve the default bandwidth and cell size; refuse rasters over the size limit.

    Returns ``(bandwidth, cell_size)`` in metres. The extent is the one
    :func:`spatial.kde.quartic_kde` uses by default: the points' extent grown by the bandwidth.
    """
    if points.x.size == 0:
        raise InvalidParameter("no incidents match the filters: there is nothing to spread")
    try:
        if bandwidth is None:
            bandwidth = default_bandwidth(points.x, points.y, points.weights)
    except AnalysisError as exc:
        raise InvalidParameter(str(exc)) from None
    width = float(np.ptp(points.x)) + 2 * bandwidth
    height = float(np.ptp(points.y)) + 2 * bandwidth
    if cell_size is None:
        cell_size = min(width, height) / CELLS_ON_SHORTER_SIDE
    cols, rows = math.ceil(width / cell_size), math.ceil(height / cell_size)
    if max(cols, rows) > MAX_RASTER_SIDE:
        smallest = max(width, height) / MAX_RASTER_SIDE
        raise InvalidParameter(
            f"the raster would be {cols:,} x {rows:,} cells ({cell_size:g} m cells over "
            f"{width / 1000:,.1f} x {height / 1000:,.1f} km); the limit is {MAX_RASTER_SIDE:,} "
            f"cells a side: give cell_size_m of at least {math.ceil(smallest)} m, or narrow "
            "the filters (e.g. unit) to a smaller area"
        )
    return float(bandwidth), float(cell_size)


def density(points: ProjectedPoints, bandwidth: float, cell_size: float) -> KdeSurface:
    """The quartic KDE of the points (incidents per km²), AnalysisError as a 422."""
    try:
        return quartic_kde(
            points.x, points.y, weights=points.weights, bandwidth=bandwidth, cell_size=cell_size
        )
    except AnalysisError as exc:
        raise InvalidParameter(str(exc)) from None


async def kde_surface(engine: AsyncEngine, settings: Settings, query: KdeQuery) -> KdeSurface:
    """The density surface of the incidents ``query`` selects (the connection is released
    before the surface is computed, in a thread)."""
    async with engine.connect() as conn:
        points = await load_points(conn, settings, query.filters, victims=query.victims)
    bandwidth, cell_size = check_raster_size(points, query.bandwidth_m, query.cell_size_m)
    return await asyncio.to_thread(density, points, bandwidth, cell_size)


async def check_kde_request(engine: AsyncEngine, settings: Settings, query: KdeQuery) -> None:
    """Refuse, before a run is stored, filters naming an unknown unit or selecting no
    incident (a 422 at once; a raster too large is found by the run, which needs the
    default bandwidth)."""
    async with engine.connect() as conn:
        selected = await incident_filter(conn, query.filters, settings.territory.timezone)
        found = (await conn.execute(select(sql.select_points(selected).exists()))).scalar()
    if not found:
        raise InvalidParameter("no incidents match the filters: there is nothing to spread")


async def run_kde(
    engine: AsyncEngine,
    settings: Settings,
    body: KdeRequest,
    run_id: int,
    progress: JobProgress,
) -> dict[str, Any]:
    """Compute KDE run ``run_id`` (a worker's job): the surface as a GeoTIFF, and its hot
    areas above ``body.percentile`` as GeoJSON, both returned as the run's files. Hot
    areas that cannot be drawn (e.g. a flat surface) leave the GeoTIFF standing: the
    reason is kept as ``areas_error``."""
    await progress(0.05, "reading the incidents")
    async with engine.connect() as conn:
        points = await load_points(conn, settings, body.filters, victims=body.victims)
    bandwidth, cell_size = check_raster_size(points, body.bandwidth_m, body.cell_size_m)
    await progress(0.2, f"spreading {points.x.size:,} incidents")
    surface = await asyncio.to_thread(density, points, bandwidth, cell_size)
    await progress(0.7, "writing the GeoTIFF and the hot areas")
    crs = settings.territory.projected_crs
    tiff = await asyncio.to_thread(geotiff_bytes, surface, crs)
    rows, cols = surface.density.shape
    summary: dict[str, Any] = {
        "incidents": surface.total,
        "bandwidth_m": surface.bandwidth,
        "cell_size_m": surface.cell_size,
        "rows": rows,
        "cols": cols,
        "method": surface.method,
        "percentile": body.percentile,
    }
    files = {SURFACE_FILE: (TIFF, tiff)}
    try:
        areas = await asyncio.to_thread(hot_area_collection, surface, body.percentile, crs)
    except InvalidParameter as exc:
        summary["areas_error"] = exc.detail
    else:
        summary |= {"threshold": areas["threshold"], "areas": areas["numberReturned"]}
        files[AREAS_FILE] = (GEOJSON, orjson.dumps(areas))
    return {**summary, FILES: files}


def geotiff_bytes(surface: KdeSurface, crs: str) -> bytes:
    """The surface as GeoTIFF bytes (written to a temporary file, then deleted)."""
    path = geotiff_file(surface, crs)
    try:
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def geotiff_file(surface: KdeSurface, crs: str) -> Path:
    """Write the surface to a new temporary GeoTIFF; the caller deletes it."""
    fd, name = tempfile.mkstemp(prefix="kde-", suffix=".tif")
    os.close(fd)
    try:
        return write_geotiff(surface, name, crs)
    except BaseException:
        os.unlink(name)
        raise


def hot_area_collection(surface: KdeSurface, percentile: float, crs: str) -> dict[str, Any]:
    """Hot areas above a percentile as an RFC 7946 FeatureCollection (EPSG:4326).

    Each feature carries ``area_id``, ``area_km2`` (measured in ``crs``), ``incidents`` (the
    surface's integral over the area) and ``share`` (of the surface's integral); the
    collection carries the density ``threshold`` and the surface's parameters.
    """
    try:
        areas = hot_areas(surface, percentile=percentile, crs=crs)
    except AnalysisError as exc:
        raise InvalidParameter(str(exc)) from None
    threshold = float(areas["threshold"].iloc[0]) if len(areas) else None
    geometry = shapely.orient_polygons(areas.to_crs(4326).geometry.to_numpy())  # RFC 7946 §3.1.6
    features = [
        {
            "type": "Feature",
            "id": int(row.area_id),
            "geometry": shapely.geometry.mapping(geom),
            "properties": {
                "area_id": int(row.area_id),
                "area_km2": float(row.area_km2),
                "incidents": float(row.incidents),
                "share": float(row.share),
            },
        }
        for row, geom in zip(areas.itertuples(), geometry, strict=True)
    ]
    return {
        "type": "FeatureCollection",
        "percentile": percentile,
        "threshold": threshold,
        "units": "incidents per km2",
        "bandwidth_m": surface.bandwidth,
        "cell_size_m": surface.cell_size,
        "incidents": surface.total,
        "numberReturned": len(features),
        "features": features,
    }
