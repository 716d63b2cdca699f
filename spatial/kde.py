"""Kernel density surfaces of incidents: ArcGIS's quartic kernel and default search radius.

Coordinates are projected metres (EPSG:32616 for Belize). A surface is a frozen
:class:`KdeSurface` (a density array north-up plus its affine transform); it can be written
as a GeoTIFF (:func:`write_geotiff`, the only I/O of this module, on a path the caller gives)
or turned into hot-area polygons (:func:`hot_areas`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.features import shapes
from rasterio.transform import Affine
from scipy import ndimage, signal

from spatial import AnalysisError

__all__ = [
    "NODATA",
    "KdeSurface",
    "default_bandwidth",
    "hot_areas",
    "quartic_kde",
    "write_geotiff",
]

#: Nodata value of written GeoTIFFs (density is never negative).
NODATA = -9999.0
#: Cells of the output grid per side of the shorter extent when no cell size is given (ArcGIS).
CELLS_ON_SHORTER_SIDE = 250
#: Above this many point * window-cell evaluations, points are binned to cell centres and the
#: kernel is applied by FFT convolution (error at most half a cell in each point's position).
EXACT_BUDGET = 60_000_000
_M2_PER_KM2 = 1_000_000.0


@dataclass(frozen=True)
class KdeSurface:
    """A kernel density raster.

    Attributes
    ----------
    density : numpy.ndarray, shape (rows, cols)
        Incidents (or weighted incidents) per square kilometre at each cell centre; row 0 is
        the northernmost row.
    transform : affine.Affine
        Pixel-to-map transform (rasterio convention, top-left origin).
    bandwidth : float
        Search radius in metres.
    cell_size : float
        Cell side in metres.
    bounds : tuple of float
        ``(xmin, ymin, xmax, ymax)`` of the raster in metres.
    total : float
        Number of incidents (sum of weights) that made the surface.
    method : str
        "exact" (kernel evaluated at every cell centre from the exact point positions) or
        "binned" (points snapped to cell centres, FFT convolution) for very large workloads.
    """

    density: np.ndarray
    transform: Affine
    bandwidth: float
    cell_size: float
    bounds: tuple[float, float, float, float]
    total: float
    method: str

    @property
    def cell_area_km2(self) -> float:
        """Area of one cell in square kilometres."""
        return self.cell_size**2 / _M2_PER_KM2

    def integral(self) -> float:
        """Sum of density * cell area: the incidents the surface holds."""
        return float(self.density.sum() * self.cell_area_km2)


def _points(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise AnalysisError(f"x and y differ in length ({x.size} and {y.size})")
    if x.size == 0:
        raise AnalysisError("no incidents: a density surface needs at least one point")
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float).ravel()
    if w.shape != x.shape:
        raise AnalysisError(f"weights has {w.size} values for {x.size} points")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(np.isfinite(w))):
        raise AnalysisError("coordinates and weights must be finite")
    if np.any(w < 0):
        raise AnalysisError("weights must not be negative")
    if w.sum() <= 0:
        raise AnalysisError("the weights sum to zero: nothing to spread")
    return x, y, w


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cum = np.cumsum(w)
    half = cum[-1] / 2.0
    i = int(np.searchsorted(cum, half))
    if np.isclose(cum[i], half) and i + 1 < v.size:
        return float((v[i] + v[i + 1]) / 2.0)  # equals numpy's median for unit weights
    return float(v[i])


def default_bandwidth(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    """ArcGIS's default search radius for Kernel Density (a spatial Silverman rule).

    Parameters
    ----------
    x, y : array_like
        Point coordinates in projected metres.
    weights : array_like, optional
        ArcGIS's *Population field*: each point counts ``weights[i]`` times.

    Returns
    -------
    float
        Search radius (bandwidth) in metres.

    Notes
    -----
    ArcGIS Pro (Spatial Analyst, "How Kernel Density works"), all quantities weighted by the
    population field when one is given:

    .. math::

        \\text{SearchRadius} = 0.9 \\times \\min\\left(SD,\\ \\sqrt{\\tfrac{1}{\\ln 2}}
        \\times D_m\\right) \\times n^{-0.2}

    where :math:`SD = \\sqrt{\\sum w_i d_i^2 / \\sum w_i}` is the standard distance,
    :math:`d_i` the distance of point ``i`` to the (weighted) mean centre, :math:`D_m` the
    (weighted) median of those distances and ``n`` the number of points, or the sum of the
    population field. Using :math:`D_m` guards against spatial outliers inflating the radius.
    The weighted median is the smallest distance whose cumulative weight reaches half the
    total (the mean of the two middle values on an exact tie, which is numpy's median for
    unit weights).

    References
    ----------
    Esri. How Kernel Density works. ArcGIS Pro documentation, Spatial Analyst.
    https://pro.arcgis.com/en/pro-app/latest/tool-reference/spatial-analyst/how-kernel-density-works.htm

    Silverman, B. W. (1986). Density Estimation for Statistics and Data Analysis. London:
    Chapman and Hall. doi:10.1007/978-1-4899-3324-9
    """
    x, y, w = _points(x, y, weights)
    total = w.sum()
    cx, cy = (w * x).sum() / total, (w * y).sum() / total
    d = np.hypot(x - cx, y - cy)
    sd = math.sqrt((w * d**2).sum() / total)
    dm = float(np.median(d)) if weights is None else _weighted_median(d, w)
    radius = 0.9 * min(sd, math.sqrt(1.0 / math.log(2.0)) * dm) * total**-0.2
    if not radius > 0:
        raise AnalysisError(
            "all incidents are at the same place: give a bandwidth, the default rule needs spread"
        )
    return float(radius)


def _grid(
    x: np.ndarray,
    y: np.ndarray,
    bandwidth: float,
    cell_size: float | None,
    bounds: tuple[float, float, float, float] | None,
) -> tuple[float, float, float, int, int]:
    if bounds is None:
        xmin, ymin = x.min() - bandwidth, y.min() - bandwidth
        xmax, ymax = x.max() + bandwidth, y.max() + bandwidth
    else:
        xmin, ymin, xmax, ymax = (float(v) for v in bounds)
    if not (xmax > xmin and ymax > ymin):
        raise AnalysisError(f"bounds must have xmax > xmin and ymax > ymin, got {bounds}")
    if cell_size is None:
        cell_size = min(xmax - xmin, ymax - ymin) / CELLS_ON_SHORTER_SIDE
    if not cell_size > 0:
        raise AnalysisError(f"cell_size must be positive, got {cell_size}")
    cols = max(1, math.ceil((xmax - xmin) / cell_size - 1e-9))
    rows = max(1, math.ceil((ymax - ymin) / cell_size - 1e-9))
    return xmin, ymax, float(cell_size), rows, cols


def _quartic(d2: np.ndarray, r2: float) -> np.ndarray:
    """ArcGIS/Silverman quartic kernel per square metre: 3/(π r²) (1 - d²/r²)², 0 beyond r."""
    return np.where(d2 < r2, 3.0 / (math.pi * r2) * (1.0 - d2 / r2) ** 2, 0.0)


def _exact(x, y, w, xmin, ymax, cell, rows, cols, r) -> np.ndarray:
    half = math.ceil(r / cell) + 1
    offsets = np.arange(-half, half + 1)
    dj, di = np.meshgrid(offsets, offsets)
    dj, di = dj.ravel(), di.ravel()
    window = dj.size
    chunk = max(1, 4_000_000 // window)
    r2 = r * r
    flat = np.zeros(rows * cols)
    for start in range(0, x.size, chunk):
        xs, ys, ws = x[start : start + chunk], y[start : start + chunk], w[start : start + chunk]
        j0 = np.floor((xs - xmin) / cell).astype(np.int64)
        i0 = np.floor((ymax - ys) / cell).astype(np.int64)
        j = j0[:, None] + dj[None, :]
        i = i0[:, None] + di[None, :]
        cx = xmin + (j + 0.5) * cell
        cy = ymax - (i + 0.5) * cell
        d2 = (cx - xs[:, None]) ** 2 + (cy - ys[:, None]) ** 2
        inside = (d2 < r2) & (i >= 0) & (i < rows) & (j >= 0) & (j < cols)
        values = _quartic(d2[inside], r2) * np.broadcast_to(ws[:, None], d2.shape)[inside]
        flat += np.bincount(i[inside] * cols + j[inside], weights=values, minlength=rows * cols)
    return flat.reshape(rows, cols)


def _binned(x, y, w, xmin, ymax, cell, rows, cols, r) -> np.ndarray:
    half = math.ceil(r / cell)
    j = np.floor((x - xmin) / cell).astype(np.int64)
    i = np.floor((ymax - y) / cell).astype(np.int64)
    # points outside the grid still spread into it: pad by the kernel radius
    pad = half
    counts = np.zeros((rows + 2 * pad, cols + 2 * pad))
    keep = (i >= -pad) & (i < rows + pad) & (j >= -pad) & (j < cols + pad)
    np.add.at(counts, (i[keep] + pad, j[keep] + pad), w[keep])
    offsets = np.arange(-half, half + 1) * cell
    ox, oy = np.meshgrid(offsets, offsets)
    kernel = _quartic(ox**2 + oy**2, r * r)
    surface = signal.fftconvolve(counts, kernel, mode="same")
    surface = surface[pad : pad + rows, pad : pad + cols]
    return np.clip(surface, 0.0, None)  # FFT round-off leaves tiny negatives


def quartic_kde(
    x: np.ndarray,
    y: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    bandwidth: float | None = None,
    cell_size: float | None = None,
    bounds: tuple[float, float, float, float] | None = None,
) -> KdeSurface:
    """Kernel density surface with ArcGIS's quartic kernel, in incidents per km².

    Parameters
    ----------
    x, y : array_like
        Incident coordinates in projected metres.
    weights : array_like, optional
        ArcGIS's *Population field* (e.g. victims per incident); default 1 per point.
    bandwidth : float, optional
        Search radius in metres; default :func:`default_bandwidth`.
    cell_size : float, optional
        Cell side in metres; default the shorter side of the output extent divided by 250
        (ArcGIS's default when neither the parameter nor the environment sets it).
    bounds : tuple of float, optional
        Output extent ``(xmin, ymin, xmax, ymax)`` in metres. Default: the points' extent
        grown by the bandwidth on every side, so the kernels of the outermost points are not
        cut (ArcGIS clips at the points' extent and loses those tails). The raster is anchored
        at ``(xmin, ymax)`` and may extend up to one cell east and south of ``bounds``.

    Returns
    -------
    KdeSurface
        Density per km² at each cell centre, north-up, with its transform.

    Notes
    -----
    ArcGIS Pro's Kernel Density for points, after Silverman (1986, p. 76, eq. 4.5): the
    density at a cell centre is

    .. math::

        \\hat f = \\frac{1}{r^2} \\sum_{d_i < r} \\frac{3}{\\pi}\\, w_i
        \\left(1 - \\frac{d_i^2}{r^2}\\right)^2

    per square metre (multiplied by 10⁶ here to give per km², ArcGIS's default area unit for
    metre coordinate systems), where :math:`d_i` is the distance from point ``i`` to the cell
    centre and ``r`` the search radius. Each kernel's volume equals its weight, so ``sum
    (density) * cell area`` equals the number (or weighted sum) of incidents up to
    discretisation, when no kernel crosses the raster edge. Cells with no point within ``r``
    are 0 (ArcGIS writes NoData there).

    The kernel is evaluated exactly at the cell centres inside each point's window, in numpy
    blocks. When ``n * window cells`` exceeds ``EXACT_BUDGET`` (a radius of many dozens of
    cells over 10⁵ points), the points are binned to their cell and the kernel applied by FFT
    convolution instead (``method="binned"``; positions move by at most half a cell, small
    against such a radius).

    References
    ----------
    Esri. How Kernel Density works. ArcGIS Pro documentation, Spatial Analyst.
    https://pro.arcgis.com/en/pro-app/latest/tool-reference/spatial-analyst/how-kernel-density-works.htm

    Esri. Kernel Density (Spatial Analyst), parameter *Output cell size*.
    https://pro.arcgis.com/en/pro-app/latest/tool-reference/spatial-analyst/kernel-density.htm

    Silverman, B. W. (1986). Density Estimation for Statistics and Data Analysis. London:
    Chapman and Hall. doi:10.1007/978-1-4899-3324-9
    """
    x, y, w = _points(x, y, weights)
    if bandwidth is None:
        bandwidth = default_bandwidth(x, y, None if weights is None else w)
    bandwidth = float(bandwidth)
    if not bandwidth > 0:
        raise AnalysisError(f"bandwidth must be positive, got {bandwidth}")
    xmin, ymax, cell, rows, cols = _grid(x, y, bandwidth, cell_size, bounds)
    window = (2 * (math.ceil(bandwidth / cell) + 1) + 1) ** 2
    method = "exact" if x.size * window <= EXACT_BUDGET else "binned"
    compute = _exact if method == "exact" else _binned
    per_m2 = compute(x, y, w, xmin, ymax, cell, rows, cols, bandwidth)
    transform = Affine(cell, 0.0, xmin, 0.0, -cell, ymax)
    return KdeSurface(
        density=per_m2 * _M2_PER_KM2,
        transform=transform,
        bandwidth=bandwidth,
        cell_size=cell,
        bounds=(xmin, ymax - rows * cell, xmin + cols * cell, ymax),
        total=float(w.sum()),
        method=method,
    )


def write_geotiff(surface: KdeSurface, path: str | Path, crs: str) -> Path:
    """Write a surface as a single-band float32 GeoTIFF.

    Parameters
    ----------
    surface : KdeSurface
        The surface to write.
    path : str or pathlib.Path
        Destination file (overwritten). The caller chooses it; nothing else is written.
    crs : str
        Coordinate reference system of the coordinates, e.g. ``"EPSG:32616"``.

    Returns
    -------
    pathlib.Path
        ``path``.

    Notes
    -----
    Deflate-compressed, tiled when large enough, nodata :data:`NODATA` (non-finite values,
    if any, are written as nodata), band description and tags giving the unit
    (incidents per km²), bandwidth and cell size so QGIS and GDAL show them.
    """
    path = Path(path)
    data = np.where(np.isfinite(surface.density), surface.density, NODATA).astype(np.float32)
    rows, cols = data.shape
    profile = {
        "driver": "GTiff",
        "height": rows,
        "width": cols,
        "count": 1,
        "dtype": "float32",
        "crs": crs,
        "transform": surface.transform,
        "nodata": NODATA,
        "compress": "deflate",
    }
    if rows >= 256 and cols >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        dst.set_band_description(1, "density (incidents per km2)")
        dst.update_tags(
            units="incidents per km2",
            kernel="quartic",
            bandwidth_m=f"{surface.bandwidth:.6g}",
            cell_size_m=f"{surface.cell_size:.6g}",
            incidents=f"{surface.total:.6g}",
            method=surface.method,
        )
    return path


def hot_areas(
    surface: KdeSurface, *, percentile: float = 95, crs: str | None = None
) -> gpd.GeoDataFrame:
    """Polygons of the cells above a percentile of the non-zero density.

    Parameters
    ----------
    surface : KdeSurface
        The density surface.
    percentile : float, default 95
        Cells whose density is at or above this percentile of the non-zero densities form
        the hot areas.
    crs : str, optional
        CRS of the result (that of the coordinates, e.g. ``"EPSG:32616"``).

    Returns
    -------
    geopandas.GeoDataFrame
        One row per connected hot area (cells joined through edges, dissolved into one
        polygon, holes kept), largest share first, with columns ``area_id``, ``threshold``
        (density per km² at the percentile), ``area_km2``, ``incidents`` (the surface's
        integral over the area: estimated incidents) and ``share`` (of the surface's
        integral: the share of incidents the area captures), and ``geometry``.

    Notes
    -----
    The percentile is taken over the cells with positive density only, so the size of the
    empty margin does not change the threshold. Polygons come from
    :func:`rasterio.features.shapes` on the labelled connected components
    (:func:`scipy.ndimage.label`, 4-connectivity), so each area is one valid polygon.
    """
    if not 0 <= percentile <= 100:
        raise AnalysisError(f"percentile must be between 0 and 100, got {percentile}")
    density = surface.density
    columns = ["area_id", "threshold", "area_km2", "incidents", "share"]
    positive = density > 0
    if not positive.any():
        return gpd.GeoDataFrame(columns=[*columns, "geometry"], geometry="geometry", crs=crs)
    threshold = float(np.percentile(density[positive], percentile))
    mask = positive & (density >= threshold)
    labels, n_areas = ndimage.label(mask)
    mass = surface.density * surface.cell_area_km2
    incidents = ndimage.sum_labels(mass, labels, index=np.arange(1, n_areas + 1))
    total = float(mass.sum())
    polygons: dict[int, list] = {}
    for geom, value in shapes(labels.astype(np.int32), mask=mask, transform=surface.transform):
        polygons.setdefault(int(value), []).append(shapely.geometry.shape(geom))
    rows = []
    for label in range(1, n_areas + 1):
        geometry = shapely.union_all(polygons[label])
        rows.append(
            {
                "threshold": threshold,
                "area_km2": geometry.area / _M2_PER_KM2,
                "incidents": float(incidents[label - 1]),
                "share": float(incidents[label - 1]) / total,
                "geometry": geometry,
            }
        )
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=crs)
    frame = frame.sort_values("incidents", ascending=False, ignore_index=True)
    frame.insert(0, "area_id", np.arange(1, len(frame) + 1))
    return frame
