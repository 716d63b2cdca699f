"""Kernel density surfaces: read incidents from PostGIS → project them → quartic KDE (the pure
package ``spatial``) → a GeoTIFF in the projected CRS, or hot-area polygons in EPSG:4326."""

from __future__ import annotations

import asyncio
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.errors import InvalidParameter
from app.core.settings import Settings
from app.schemas.analyses import AnalysisFilters
from app.schemas.surfaces import KdeQuery
from app.services.hotspots import incident_filter
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
