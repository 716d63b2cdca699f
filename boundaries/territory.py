"""Units outside the territory: how much of each unit lies outside a reference outline.

A boundary file in a wrong CRS (a ``.prj`` that does not match the coordinates, latitude
and longitude swapped) or for another country still reads as valid polygons in range;
only comparing it with the territory tells. The reference is the outline of the level
above (the country for districts) or, with nothing above, the territory's bounding box.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS, Transformer

from boundaries import BoundaryError

__all__ = ["OUTSIDE_FLAG", "OUTSIDE_SHARE", "OutsideUnit", "outside_territory"]

#: The flag stored on units that lie mostly or wholly outside the territory.
OUTSIDE_FLAG = "outside_territory"
#: A unit is flagged when more than this share of its area lies outside.
OUTSIDE_SHARE = 0.5

# Metres in a degree of latitude (and of longitude at the equator), for the coarse
# prefilter in degrees only: the measure itself is in metres.
_METRES_PER_DEGREE = 111_320.0
# Edges longer than this (about 1 km) are cut before projecting.
_MAX_EDGE_DEGREES = 0.01


@dataclass(frozen=True)
class OutsideUnit:
    """A unit that lies mostly or wholly outside the territory.

    Attributes
    ----------
    code : str
        The unit's code.
    share_outside : float
        Share of the unit's area outside the reference outline grown by the tolerance,
        from just over :data:`OUTSIDE_SHARE` to 1 (wholly outside).
    """

    code: str
    share_outside: float


def outside_territory(
    units: gpd.GeoDataFrame,
    outline: shapely.Geometry,
    *,
    tolerance_m: float = 0.0,
    threshold: float = OUTSIDE_SHARE,
) -> list[OutsideUnit]:
    """The units of which more than ``threshold`` of the area lies outside ``outline``.

    Parameters
    ----------
    units : geopandas.GeoDataFrame
        Units with a ``code`` column and polygonal geometries in EPSG:4326 (as
        :func:`boundaries.repair.repair_geometries` returns them). Not modified.
    outline : shapely Polygon or MultiPolygon
        The territory in EPSG:4326 (longitude, latitude).
    tolerance_m : float, optional
        The outline is grown by this many metres first: coarse or generalised outlines
        cut off coasts and cayes that finer boundaries include.
    threshold : float, optional
        Share of a unit's area outside above which it is reported (default: half).

    Returns
    -------
    list of OutsideUnit
        In the units' order, with the share outside rounded to three decimals.

    Raises
    ------
    boundaries.BoundaryError
        If the frame has no ``code`` column, or the outline is empty.

    Notes
    -----
    Areas are measured in a Lambert azimuthal equal-area projection centred on the
    outline, so shares are true area shares and the tolerance is in metres wherever the
    territory lies. Units whose bounding box is far from the outline's (most of a file
    in a wrong CRS) are wholly outside without being projected; a unit entirely inside
    the grown outline costs one prepared ``covers`` test.
    """
    if "code" not in units.columns:
        raise BoundaryError("units need a 'code' column to be compared with the territory")
    if outline is None or outline.is_empty:
        raise BoundaryError("the territory outline is empty")
    geoms = np.asarray(units.geometry.array, dtype=object)
    share = np.ones(len(geoms))

    # Prefilter in degrees: bounding boxes that cannot touch the grown outline.
    west, south, east, north = outline.bounds
    widest = max(abs(south), abs(north))
    margin = tolerance_m / (_METRES_PER_DEGREE * max(np.cos(np.radians(widest)), 0.01))
    margin = 2 * margin + 0.01  # generous: this only spares work, never decides "inside"
    bounds = shapely.bounds(geoms)
    near = ~(
        (bounds[:, 2] < west - margin)
        | (bounds[:, 0] > east + margin)
        | (bounds[:, 3] < south - margin)
        | (bounds[:, 1] > north + margin)
    )
    if near.any():
        share[near] = _share_outside(geoms[near], outline, tolerance_m)
    codes = units["code"].astype(str).tolist()
    return [
        OutsideUnit(codes[i], round(float(share[i]), 3)) for i in np.flatnonzero(share > threshold)
    ]


def _share_outside(geoms: np.ndarray, outline: shapely.Geometry, tolerance_m: float) -> np.ndarray:
    """Share of each geometry's area outside ``outline`` grown by ``tolerance_m``."""
    centre = outline.envelope.centroid
    equal_area = CRS.from_proj4(
        f"+proj=laea +lat_0={centre.y:.6f} +lon_0={centre.x:.6f} +datum=WGS84 +units=m"
    )
    to_metres = Transformer.from_crs("EPSG:4326", equal_area, always_xy=True)

    def project(g):
        # Long edges are cut first (a bounding box has four vertices): an edge that is
        # straight in degrees is curved in the projection.
        g = shapely.segmentize(g, _MAX_EDGE_DEGREES)
        return shapely.transform(g, lambda xy: np.column_stack(to_metres.transform(*xy.T)))

    reference = project(outline)
    if tolerance_m > 0:
        reference = shapely.buffer(reference, tolerance_m)
    shapely.prepare(reference)
    projected = project(geoms)
    share = np.ones(len(geoms))
    # Near the antipode the projection has no finite answer: that is outside.
    finite = np.isfinite(shapely.bounds(projected)).all(axis=1)
    inside = finite & shapely.covers(reference, np.where(finite, projected, None))
    share[inside] = 0.0
    partial = np.flatnonzero(finite & ~inside)
    if partial.size:
        pieces = projected[partial]
        area = shapely.area(pieces)
        kept = shapely.area(shapely.intersection(pieces, reference))
        share[partial] = np.where(area > 0, 1.0 - kept / np.where(area > 0, area, 1.0), 1.0)
    return np.clip(share, 0.0, 1.0)
