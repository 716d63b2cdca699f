"""Analysis units: H3 hexagons and square grids over a study area, and binning points.

Grids cover the study area, so cells without incidents take part in the statistics (their
count is 0). Which cells make the study area is the ``cover`` rule: ``"intersects"``, every
cell that touches the area (every point of the area is in a cell), or ``"center"``, the
cells whose centre lies in the area (H3's own rule, ``h3.polygon_to_cells``), to which a
caller adds the cells that hold its incidents (:func:`with_cells`) so that points just
outside a coarse outline are still counted. Geometries are returned in EPSG:4326; square
grids are laid out in a projected CRS so that their cells are squares of the requested
size in metres.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from itertools import chain

import geopandas as gpd
import h3
import h3.api.basic_int as h3_int
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Geod, Transformer
from shapely.geometry.base import BaseGeometry

from spatial import AnalysisError

__all__ = [
    "COVERS",
    "MAX_CELLS",
    "count_by_cell",
    "h3_cell_ids",
    "h3_cells",
    "h3_polygons",
    "h3_polygons_wkb",
    "points_to_grid",
    "points_to_h3",
    "square_grid",
    "with_cells",
]

#: The rules that choose a grid's cells over an area (see the module docstring).
COVERS = ("center", "intersects")

#: Refuse grids with more cells than this (the estimate is checked before any is built).
MAX_CELLS = 2_000_000

_WGS84 = "EPSG:4326"
# The id of a square grid cell: its row and column in the grid's lattice.
_LATTICE_ID = re.compile(r"r(-?\d+)c(-?\d+)")


def h3_cells(
    area: BaseGeometry,
    resolution: int,
    *,
    cover: str = "intersects",
    max_cells: int = MAX_CELLS,
) -> gpd.GeoDataFrame:
    """The H3 cells of ``resolution`` over ``area``: those that intersect it, or those
    whose centre lies in it.

    Parameters
    ----------
    area : shapely Polygon or MultiPolygon
        The study area in EPSG:4326 (longitude, latitude).
    resolution : int
        H3 resolution, 0-15 (resolution 8: cells of about 0.74 km²; 9: about 0.11 km²).
    cover : {"intersects", "center"}, default "intersects"
        ``"intersects"``: every cell that overlaps the area, so every point of the area
        falls in a returned cell. ``"center"``: the cells whose centre lies in the area,
        exactly ``h3.polygon_to_cells`` (``h3shape_to_cells``); cells cut by the outline
        with their centre outside are left out (add those holding points with
        :func:`with_cells`).
    max_cells : int, optional
        Refuse (AnalysisError) when the area would need more cells than this.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``cell_id`` (str, H3 index) and ``geometry`` (Polygon, EPSG:4326), one row
        per cell, sorted by ``cell_id``, with a RangeIndex. ``attrs["h3_resolution"]`` is
        the resolution, ``attrs["cover"]`` the rule.

    Notes
    -----
    ``"intersects"`` is ``h3.h3shape_to_cells_experimental(..., contain="overlap")`` (h3 ≥
    4.1). Without that function, the cells whose centre lies in the area plus every cell
    touched by its boundary (sampled finer than the cell edge) and their ring-1 neighbours
    that intersect it.

    References
    ----------
    Uber Technologies (2024). H3: a hexagonal hierarchical geospatial indexing system,
    version 4. https://h3geo.org/docs/api/regions
    """
    ids = h3_cell_ids(area, resolution, cover=cover, max_cells=max_cells)
    gdf = gpd.GeoDataFrame({"cell_id": ids}, geometry=h3_polygons(ids), crs=_WGS84)
    gdf.attrs.update(h3_resolution=int(resolution), cover=cover)
    return gdf


def h3_cell_ids(
    area: BaseGeometry,
    resolution: int,
    *,
    cover: str = "intersects",
    max_cells: int = MAX_CELLS,
) -> list[str]:
    """The ids of :func:`h3_cells`, sorted, without building their polygons.

    Parameters and refusals are those of :func:`h3_cells`; the polygons, when needed, come
    from :func:`h3_polygons` (they cost as much again as finding the cells).
    """
    _check_cover(cover)
    area = _valid_area(area)
    if not isinstance(resolution, int | np.integer) or not 0 <= resolution <= 15:
        raise AnalysisError(f"H3 resolution must be an integer from 0 to 15; got {resolution!r}")
    minx, miny, maxx, maxy = area.bounds
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise AnalysisError("the area must be in EPSG:4326 (longitude, latitude)")
    area_km2 = abs(Geod(ellps="WGS84").geometry_area_perimeter(area)[0]) / 1e6
    estimate = area_km2 / h3.average_hexagon_area(int(resolution), unit="km^2")
    if estimate > max_cells:
        raise AnalysisError(
            f"H3 resolution {resolution} needs about {estimate:,.0f} cells over this area; "
            f"the limit is {max_cells:,}: choose a coarser resolution"
        )
    shape = h3.geo_to_h3shape(area)
    if cover == "center":
        return sorted(h3.h3shape_to_cells(shape, int(resolution)))
    if hasattr(h3, "h3shape_to_cells_experimental"):
        cells = set(h3.h3shape_to_cells_experimental(shape, int(resolution), contain="overlap"))
    else:  # pragma: no cover - h3 < 4.1
        cells = _overlap_cells_fallback(area, shape, int(resolution))
    return sorted(cells)


def h3_polygons(ids: Sequence[str]) -> np.ndarray:
    """The polygon (EPSG:4326) of each H3 cell, in order.

    Built in one vectorised shapely call when every cell has the same number of vertices
    (the usual case: hexagons), else one by one.
    """
    boundaries = [h3.cell_to_boundary(c) for c in ids]
    if boundaries and len({len(b) for b in boundaries}) == 1:
        rings = np.asarray(boundaries)[:, :, ::-1]  # (lat, lng) -> (lng, lat)
        return shapely.polygons(np.concatenate([rings, rings[:, :1]], axis=1))
    return np.array(
        [shapely.Polygon([(lng, lat) for lat, lng in b]) for b in boundaries], dtype=object
    )


def h3_polygons_wkb(ids: Sequence[str], srid: int = 4326) -> np.ndarray:
    """The polygon of each H3 cell as EWKB with ``srid``, in order, without shapely.

    The bytes are those of ``shapely.to_wkb(shapely.set_srid(h3_polygons(ids), srid),
    include_srid=True)`` (little-endian; each ring closed by its first vertex), written
    straight from the boundaries' coordinates: building 200,000 shapely polygons and
    encoding them took ~4 s, this takes under one (mostly ``h3.cell_to_boundary``).

    Returns
    -------
    numpy.ndarray of object, shape (len(ids),)
        One ``bytes`` per cell.
    """
    n = len(ids)
    out = np.empty(n, dtype=object)
    if n == 0:
        return out
    # The integer API: twice as fast as the string one, which parses each id first.
    boundaries = list(map(h3_int.cell_to_boundary, map(h3.str_to_int, ids)))
    counts = np.fromiter(map(len, boundaries), dtype=np.int64, count=n)
    coords = np.fromiter(
        chain.from_iterable(chain.from_iterable(boundaries)),
        dtype="<f8",
        count=2 * int(counts.sum()),
    ).reshape(-1, 2)[:, ::-1]  # (lat, lng) -> (lng, lat)
    starts = np.cumsum(counts) - counts
    # Cells with the same number of vertices (hexagons, pentagons, cells cut by an
    # icosahedron edge) have records of the same length: one array per vertex count.
    for k in np.unique(counts).tolist():
        rows = np.flatnonzero(counts == k)
        ring = coords[starts[rows, None] + np.arange(k)]
        ring = np.ascontiguousarray(np.concatenate([ring, ring[:, :1]], axis=1), dtype="<f8")
        # byte order 1 (little), type Polygon with the SRID flag, SRID, 1 ring, k+1 points
        head = np.frombuffer(struct.pack("<BIIII", 1, 0x20000003, srid, 1, k + 1), np.uint8)
        body = ring.view(np.uint8).reshape(len(rows), -1)
        records = np.hstack([np.broadcast_to(head, (len(rows), head.size)), body])
        out[rows] = [r.tobytes() for r in records]
    return out


def square_grid(
    area: BaseGeometry,
    cell_size_m: float,
    crs: str,
    *,
    cover: str = "intersects",
    max_cells: int = MAX_CELLS,
) -> gpd.GeoDataFrame:
    """Square cells of ``cell_size_m`` metres, laid out in ``crs``, over ``area``.

    Parameters
    ----------
    area : shapely Polygon or MultiPolygon
        The study area in EPSG:4326.
    cell_size_m : float
        Side of a cell in metres (the projected CRS's unit).
    crs : str
        A projected CRS in metres, e.g. ``"EPSG:32616"`` (UTM 16N, Belize).
    cover : {"intersects", "center"}, default "intersects"
        Keep the cells that intersect the projected area, or those whose centre lies in
        it (on its boundary included): the rules of :func:`h3_cells`.
    max_cells : int, optional
        Refuse (AnalysisError) when the area's bounding box holds more cells than this.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``cell_id`` (``"r{row}c{col}"``), ``row``, ``col`` and ``geometry``
        (Polygon, EPSG:4326), sorted by row then column, with a RangeIndex. ``attrs``
        holds ``grid_crs``, ``grid_origin`` (x, y of the lower-left corner of cell r0c0 in
        ``grid_crs``), ``cell_size_m``, ``n_rows`` and ``n_cols`` (of the bounding box):
        what :func:`points_to_grid` needs; and ``cover``.

    Notes
    -----
    The origin is the lower-left corner of the area's projected bounding box, snapped
    down to a multiple of the cell size, so that grids of the same size and CRS share
    their lines whatever the area. Row 0 is the southernmost row and column 0 the
    westernmost; ``row = floor((y - y0) / size)``, ``col = floor((x - x0) / size)``.
    With ``"intersects"`` a cell is kept when it intersects the projected area (boundary
    contact included), the same rule as ArcGIS Pro's Generate Tessellation clipped to a
    study area. The returned squares are the projected squares' four corners transformed
    to EPSG:4326. Cells added by :func:`with_cells` may lie outside the bounding box (rows
    and columns below 0 or beyond ``n_rows`` / ``n_cols``).
    """
    _check_cover(cover)
    area = _valid_area(area)
    if not (np.isfinite(cell_size_m) and cell_size_m > 0):
        raise AnalysisError(f"cell size must be a positive number of metres; got {cell_size_m!r}")
    target = _projected_crs(crs)
    to_grid = Transformer.from_crs(_WGS84, target, always_xy=True)
    projected = shapely.transform(area, lambda xy: np.column_stack(to_grid.transform(*xy.T)))
    minx, miny, maxx, maxy = projected.bounds
    size = float(cell_size_m)
    x0 = math.floor(minx / size) * size
    y0 = math.floor(miny / size) * size
    n_cols = max(1, math.ceil((maxx - x0) / size))
    n_rows = max(1, math.ceil((maxy - y0) / size))
    if n_rows * n_cols > max_cells:
        raise AnalysisError(
            f"a {size:g} m grid over this area has {n_rows * n_cols:,} cells in its bounding "
            f"box; the limit is {max_cells:,}: choose a larger cell size"
        )
    rows, cols = np.divmod(np.arange(n_rows * n_cols), n_cols)
    boxes = shapely.box(
        x0 + cols * size, y0 + rows * size, x0 + (cols + 1) * size, y0 + (rows + 1) * size
    )
    shapely.prepare(projected)
    if cover == "center":
        keep = shapely.intersects_xy(projected, x0 + (cols + 0.5) * size, y0 + (rows + 0.5) * size)
    else:
        keep = shapely.intersects(projected, boxes)
    attrs = dict(
        grid_crs=target.to_string(),
        grid_origin=(x0, y0),
        cell_size_m=size,
        n_rows=int(n_rows),
        n_cols=int(n_cols),
        cover=cover,
    )
    return _square_frame(rows[keep], cols[keep], attrs)


def _square_frame(rows: np.ndarray, cols: np.ndarray, attrs: dict) -> gpd.GeoDataFrame:
    """The squares at ``rows`` and ``cols`` of the lattice ``attrs`` describe, as a frame
    sorted by row then column."""
    order = np.lexsort((cols, rows))
    rows, cols = np.asarray(rows, dtype=np.int64)[order], np.asarray(cols, dtype=np.int64)[order]
    (x0, y0), size = attrs["grid_origin"], attrs["cell_size_m"]
    boxes = shapely.box(
        x0 + cols * size, y0 + rows * size, x0 + (cols + 1) * size, y0 + (rows + 1) * size
    )
    to_wgs84 = Transformer.from_crs(attrs["grid_crs"], _WGS84, always_xy=True)
    geoms = shapely.transform(boxes, lambda xy: np.column_stack(to_wgs84.transform(*xy.T)))
    gdf = gpd.GeoDataFrame(
        {
            "cell_id": [f"r{r}c{c}" for r, c in zip(rows.tolist(), cols.tolist(), strict=True)],
            "row": rows,
            "col": cols,
        },
        geometry=geoms,
        crs=_WGS84,
    )
    gdf.attrs.update(attrs)
    return gdf


def with_cells(grid: gpd.GeoDataFrame, cell_ids: Sequence[str | None]) -> gpd.GeoDataFrame:
    """The grid with the named cells added (those it has already, and None, are ignored).

    Parameters
    ----------
    grid : geopandas.GeoDataFrame
        A grid made by :func:`h3_cells` or :func:`square_grid`.
    cell_ids : sequence of str or None
        H3 ids of the grid's resolution (an H3 grid), or ``"r{row}c{col}"`` ids of the
        grid's lattice (a square grid; e.g. from ``points_to_grid(..., lattice=True)``).

    Returns
    -------
    geopandas.GeoDataFrame
        A new frame in the grid's order (H3: by id; square: by row then column), with the
        grid's ``attrs`` and ``attrs["added_cells"]``, the number of cells added.

    Notes
    -----
    This completes a ``"center"`` grid: the cells that hold the study area's incidents
    but have their centre outside its (often coarse) outline join it, so that no incident
    of the area is left out of the counts.
    """
    known = set(grid["cell_id"])
    new = sorted({c for c in cell_ids if c is not None and c not in known})
    attrs = {**grid.attrs, "added_cells": grid.attrs.get("added_cells", 0) + len(new)}
    if "h3_resolution" in grid.attrs:
        res = int(grid.attrs["h3_resolution"])
        bad = [c for c in new if not h3.is_valid_cell(c) or h3.get_resolution(c) != res]
        if bad:
            raise AnalysisError(f"not H3 cells of resolution {res}: {bad[:3]}")
        extra = gpd.GeoDataFrame({"cell_id": new}, geometry=h3_polygons(new), crs=_WGS84)
        order = ["cell_id"]
    elif "grid_origin" in grid.attrs:
        parsed = [_LATTICE_ID.fullmatch(c) for c in new]
        if not all(parsed):
            bad = [c for c, m in zip(new, parsed, strict=True) if m is None]
            raise AnalysisError(f"not square grid cell ids: {bad[:3]}")
        added = np.array([(int(m[1]), int(m[2])) for m in parsed], dtype=np.int64).reshape(-1, 2)
        extra = _square_frame(added[:, 0], added[:, 1], grid.attrs)
        order = ["row", "col"]
    else:
        raise AnalysisError("not a grid made by h3_cells or square_grid")
    # Only the new cells' polygons are built; the grid's are kept as they are.
    out = pd.concat([grid, extra[grid.columns]], ignore_index=True)
    out = out.sort_values(order, kind="stable", ignore_index=True)
    out.attrs = attrs
    return out


def points_to_h3(lon: np.ndarray, lat: np.ndarray, resolution: int) -> np.ndarray:
    """The H3 cell of each point.

    Parameters
    ----------
    lon, lat : array_like of float, shape (n,)
        Point coordinates in EPSG:4326.
    resolution : int
        H3 resolution, 0-15.

    Returns
    -------
    numpy.ndarray of object, shape (n,)
        H3 cell ids (str); None where a coordinate is missing or out of range.
    """
    lon, lat = _lon_lat(lon, lat)
    if not isinstance(resolution, int | np.integer) or not 0 <= resolution <= 15:
        raise AnalysisError(f"H3 resolution must be an integer from 0 to 15; got {resolution!r}")
    res = int(resolution)
    ok = np.isfinite(lon) & np.isfinite(lat) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    out = np.full(lon.shape, None, dtype=object)
    cell = h3.latlng_to_cell
    out[ok] = [cell(a, o, res) for a, o in zip(lat[ok].tolist(), lon[ok].tolist(), strict=True)]
    return out


def points_to_grid(
    lon: np.ndarray, lat: np.ndarray, grid: gpd.GeoDataFrame, *, lattice: bool = False
) -> np.ndarray:
    """The square-grid cell of each point.

    Parameters
    ----------
    lon, lat : array_like of float, shape (n,)
        Point coordinates in EPSG:4326.
    grid : geopandas.GeoDataFrame
        A grid made by :func:`square_grid` (its ``attrs``, ``row``, ``col`` and
        ``cell_id`` are used), or by :func:`with_cells` from one.
    lattice : bool, default False
        Name the lattice cell (``"r{row}c{col}"``) of points outside the grid's cells
        too, instead of None: the cells :func:`with_cells` would add.

    Returns
    -------
    numpy.ndarray of object, shape (n,)
        The ``cell_id`` of the cell holding each point; None for points with missing
        coordinates, and (unless ``lattice``) for points outside every cell of the grid.

    Notes
    -----
    Points are projected to the grid's CRS (pyproj, ``always_xy``) and binned by integer
    division from the grid origin, so a point on a shared edge belongs to the cell above /
    to the right of it (half-open cells ``[x0, x0 + size)``).
    """
    lon, lat = _lon_lat(lon, lat)
    try:
        crs = grid.attrs["grid_crs"]
        x0, y0 = grid.attrs["grid_origin"]
        size = float(grid.attrs["cell_size_m"])
    except KeyError as exc:
        raise AnalysisError(f"not a grid made by square_grid (attrs lack {exc})") from None
    x, y = Transformer.from_crs(_WGS84, crs, always_xy=True).transform(lon, lat)
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    out = np.full(lon.shape, None, dtype=object)
    ok = np.isfinite(x) & np.isfinite(y)
    col = np.floor((x[ok] - x0) / size).astype(np.int64)
    row = np.floor((y[ok] - y0) / size).astype(np.int64)
    # One integer per lattice cell, rows and columns of either sign (cells added by
    # with_cells may lie outside the bounding box the grid was laid over).
    keys = pd.Index(_lattice_key(grid["row"].to_numpy(np.int64), grid["col"].to_numpy(np.int64)))
    position = keys.get_indexer(_lattice_key(row, col))
    found = position >= 0
    ids = np.full(row.shape, None, dtype=object)
    ids[found] = grid["cell_id"].to_numpy(dtype=object)[position[found]]
    if lattice:
        ids[~found] = [
            f"r{r}c{c}" for r, c in zip(row[~found].tolist(), col[~found].tolist(), strict=True)
        ]
    out[ok] = ids
    return out


def _lattice_key(row: np.ndarray, col: np.ndarray) -> np.ndarray:
    # Rows and columns stay far below 2**31 (a grid is refused beyond MAX_CELLS).
    return row * (1 << 32) + col


def count_by_cell(
    cell_ids_of_points: Sequence[str | None] | np.ndarray,
    cells_index: Sequence[str] | pd.Index,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Count (or sum ``weights`` of) the points in each cell.

    Parameters
    ----------
    cell_ids_of_points : array_like, shape (m,)
        The cell id of each point (from :func:`points_to_h3` / :func:`points_to_grid`);
        None or an id not in ``cells_index`` means the point is in no cell and is ignored.
    cells_index : sequence of str
        The cells, in the order wanted for the result (e.g. ``grid["cell_id"]``); unique.
    weights : array_like of float, shape (m,), optional
        A weight per point (e.g. the number of victims); finite and non-negative.

    Returns
    -------
    numpy.ndarray, shape (len(cells_index),)
        int64 counts, or float64 sums when ``weights`` is given; 0 for empty cells.
    """
    index = pd.Index(cells_index)
    if not index.is_unique:
        raise AnalysisError("cell ids must be unique")
    points = np.asarray(cell_ids_of_points, dtype=object).ravel()
    position = index.get_indexer(points)
    inside = position >= 0
    if weights is None:
        return np.bincount(position[inside], minlength=len(index)).astype(np.int64)
    weights = np.asarray(weights, dtype=float).ravel()
    if weights.shape != points.shape:
        raise AnalysisError(f"{weights.size} weights for {points.size} points")
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise AnalysisError("point weights must be finite and non-negative")
    return np.bincount(position[inside], weights=weights[inside], minlength=len(index)).astype(
        np.float64
    )


def _check_cover(cover: str) -> None:
    if cover not in COVERS:
        raise AnalysisError(f"cover must be one of {', '.join(COVERS)}; got {cover!r}")


def _valid_area(area: BaseGeometry) -> BaseGeometry:
    if not isinstance(area, shapely.Polygon | shapely.MultiPolygon):
        raise AnalysisError(
            f"the area must be a Polygon or MultiPolygon; got {type(area).__name__}"
        )
    if area.is_empty or area.area == 0:
        raise AnalysisError("the area is empty")
    if not area.is_valid:
        area = shapely.make_valid(area)
    return area


def _projected_crs(crs: str) -> CRS:
    try:
        target = CRS.from_user_input(crs)
    except Exception as exc:  # pyproj raises CRSError, a plain Exception subclass
        raise AnalysisError(f"unknown CRS {crs!r}") from exc
    if not target.is_projected:
        raise AnalysisError(f"{crs} is not a projected CRS; a grid in metres needs one")
    unit = target.axis_info[0].unit_name if target.axis_info else ""
    if unit not in ("metre", "meter"):
        raise AnalysisError(f"{crs} is in {unit or 'unknown units'}, not metres")
    return target


def _lon_lat(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lon = np.asarray(lon, dtype=float).ravel()
    lat = np.asarray(lat, dtype=float).ravel()
    if lon.shape != lat.shape:
        raise AnalysisError(f"lon and lat differ in length: {lon.size} and {lat.size}")
    return lon, lat


def _overlap_cells_fallback(
    area: BaseGeometry, shape: object, res: int
) -> set[str]:  # pragma: no cover
    cells = set(h3.h3shape_to_cells(shape, res))
    step = h3.average_hexagon_edge_length(res, unit="m") / 111_320 / 4  # degrees, coarse
    boundary = shapely.segmentize(area.boundary, max(step, 1e-9))
    for lng, lat in shapely.get_coordinates(boundary):
        cells.add(h3.latlng_to_cell(lat, lng, res))
    shapely.prepare(area)
    for cell in list(cells):
        for ring_cell in h3.grid_ring(cell, 1):
            if ring_cell in cells:
                continue
            poly = shapely.Polygon([(o, a) for a, o in h3.cell_to_boundary(ring_cell)])
            if shapely.intersects(area, poly):
                cells.add(ring_cell)
    return cells
