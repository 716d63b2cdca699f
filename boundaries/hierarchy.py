"""Build the unit hierarchy: which parent (level n - 1) each child unit (level n) belongs to."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from boundaries import BoundaryError

__all__ = ["assign_parents"]


def assign_parents(children: gpd.GeoDataFrame, parents: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Set each child's ``parent_code`` from the parent units that contain it.

    Parameters
    ----------
    children : geopandas.GeoDataFrame
        Units with ``code`` and ``geometry`` and optionally ``parent_code`` (an explicit
        parent from the file; null means "find it"). Not modified.
    parents : geopandas.GeoDataFrame
        Candidate parent units with ``code`` and ``geometry``, in the same CRS as
        ``children``. May be empty. Not modified.

    Returns
    -------
    geopandas.GeoDataFrame
        A copy of ``children`` with ``parent_code`` filled: the explicit value when given,
        else the parent containing the child's representative point, else the parent
        sharing the largest area with the child, else None (no parent overlaps the child).

    Raises
    ------
    boundaries.BoundaryError
        If an explicit ``parent_code`` is not among the parents' codes, if a frame lacks
        ``code``, or if the two frames have different CRSs.

    Notes
    -----
    The representative point is ``point_on_surface`` (always inside the child, unlike
    the centroid of a crescent-shaped unit). Boundary sets from different sources and
    generalisations disagree along their edges (Natural Earth's Belize outline and the
    district layer differ by about 36 km²), so a child is never required to lie wholly
    inside its parent. Overlap areas are compared in the frames' CRS; they only rank the
    candidates for one child, whose extent is small, so degrees are good enough.
    """
    for label, frame in (("children", children), ("parents", parents)):
        if "code" not in frame.columns:
            raise BoundaryError(f"{label} need a 'code' column")
    if len(parents) and children.crs != parents.crs:
        raise BoundaryError(
            f"children ({children.crs}) and parents ({parents.crs}) are in different CRSs"
        )
    parent_codes = np.asarray(parents["code"].astype(str).to_numpy(), dtype=object)
    explicit = (
        children["parent_code"]
        if "parent_code" in children.columns
        else pd.Series([None] * len(children), index=children.index, dtype=object)
    )
    given = explicit.notna().to_numpy()
    unknown = sorted(set(explicit[given].astype(str)) - set(parent_codes))
    if unknown:
        shown = ", ".join(unknown[:10]) + (" …" if len(unknown) > 10 else "")
        raise BoundaryError(
            f"parent code(s) not among the loaded parent units: {shown}"
            + ("" if len(parent_codes) else " (no parent units are loaded)")
        )

    found = _parent_positions(
        np.asarray(children.geometry.array, dtype=object)[~given],
        np.asarray(parents.geometry.array, dtype=object),
    )
    result_codes = np.full(len(children), None, dtype=object)
    result_codes[given] = explicit[given].astype(str).to_numpy(dtype=object)
    result_codes[~given] = [None if p < 0 else parent_codes[p] for p in found]
    result = children.copy()
    result["parent_code"] = pd.Series(result_codes, index=children.index, dtype=object)
    return result


def _parent_positions(children: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Position in ``parents`` of each child's parent, or -1 when none overlaps it."""
    out = np.full(len(children), -1, dtype=np.int64)
    if len(children) == 0 or len(parents) == 0:
        return out
    tree = shapely.STRtree(parents)
    points = shapely.point_on_surface(children)
    child_idx, parent_idx = tree.query(points, predicate="within")
    hits = np.bincount(child_idx, minlength=len(children))
    single = hits == 1
    out[child_idx[single[child_idx]]] = parent_idx[single[child_idx]]
    for i in np.flatnonzero(~single):
        # On a shared edge, in an overlap or outside every parent: the largest overlap wins.
        candidates = np.sort(tree.query(children[i], predicate="intersects"))
        if len(candidates) == 0:
            continue
        areas = shapely.area(shapely.intersection(children[i], parents[candidates]))
        if areas.max() > 0:
            # Ties go to the lowest position, so the result does not depend on tree order.
            out[i] = candidates[np.flatnonzero(areas == areas.max()).min()]
    return out
