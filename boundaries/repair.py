"""Validate and repair unit geometries so that PostGIS accepts them (``ST_IsValid``)."""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely

from boundaries import BoundaryError

__all__ = ["RepairNote", "repair_geometries"]


@dataclass(frozen=True)
class RepairNote:
    """One repaired (or dropped) unit.

    Attributes
    ----------
    code : str
        The unit's code.
    reason : str
        Why the geometry was invalid, as GEOS states it (``shapely.is_valid_reason``
        before repair, e.g. ``"Self-intersection[1 1]"``), followed by ``"; dropped: …"``
        when nothing polygonal survived the repair.
    """

    code: str
    reason: str


def repair_geometries(gdf: gpd.GeoDataFrame) -> tuple[gpd.GeoDataFrame, list[RepairNote]]:
    """Make every geometry valid, keeping only its polygonal parts.

    Parameters
    ----------
    gdf : geopandas.GeoDataFrame
        Units with a ``code`` column and (Multi)Polygon geometries, as returned by
        :func:`boundaries.read.read_boundaries`. Not modified.

    Returns
    -------
    repaired : geopandas.GeoDataFrame
        A copy in which invalid geometries are replaced by their repaired MultiPolygon;
        units left with no area are dropped. Valid geometries are kept as they are
        (Polygons are promoted to MultiPolygons). The index is reset.
    notes : list of RepairNote
        One note per repaired or dropped unit, in input order.

    Raises
    ------
    boundaries.BoundaryError
        If the frame has no ``code`` column.

    Notes
    -----
    Repair uses GEOS ``MakeValid`` through ``shapely.make_valid`` (default method,
    ``"linework"``, the same as PostGIS ``ST_MakeValid``): a self-intersecting "bow-tie"
    becomes two triangles. Points and lines produced by collapsed rings are discarded.
    """
    if "code" not in gdf.columns:
        raise BoundaryError("units need a 'code' column to be repaired")
    geoms = np.asarray(gdf.geometry.array, dtype=object)
    out_geoms = shapely.force_2d(geoms)
    valid = shapely.is_valid(out_geoms)
    keep = np.ones(len(geoms), dtype=bool)
    notes: list[RepairNote] = []
    for i in range(len(geoms)):
        code = str(gdf["code"].iloc[i])
        geom = out_geoms[i]
        if geom is None or geom.is_empty:
            keep[i] = False
            notes.append(RepairNote(code, "Empty geometry; dropped: no area"))
            continue
        if valid[i]:
            out_geoms[i] = _as_multipolygon(geom)
            continue
        reason = shapely.is_valid_reason(geom)
        fixed = _polygonal_part(shapely.make_valid(geom))
        if fixed.is_empty:
            keep[i] = False
            notes.append(RepairNote(code, f"{reason}; dropped: no area left after repair"))
            continue
        out_geoms[i] = fixed
        notes.append(RepairNote(code, reason))
    result = gdf.copy()
    result = result.set_geometry(gpd.GeoSeries(out_geoms, index=gdf.index, crs=gdf.crs))
    return result.loc[keep].reset_index(drop=True), notes


def _polygonal_part(geom: shapely.Geometry) -> shapely.MultiPolygon:
    """The Polygons of ``geom`` (any type, collections included) as one MultiPolygon."""
    parts = shapely.get_parts(geom)
    polygons: list[shapely.Polygon] = []
    for part in parts:
        if part.geom_type == "Polygon" and not part.is_empty:
            polygons.append(part)
        elif part.geom_type in ("MultiPolygon", "GeometryCollection"):
            polygons.extend(_polygonal_part(part).geoms)
    return shapely.MultiPolygon(polygons)


def _as_multipolygon(geom: shapely.Geometry) -> shapely.Geometry:
    return shapely.MultiPolygon([geom]) if geom.geom_type == "Polygon" else geom
