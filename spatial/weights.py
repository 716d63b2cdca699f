"""Spatial weights: contiguity, H3 neighbours, k nearest neighbours, distance band.

Every builder returns a :class:`SpatialWeights`: a libpysal ``W`` whose ids are the given
ids in the given order, plus what an analyst must know about the graph (islands, number
of disconnected parts). Islands never raise; libpysal's island warnings are silenced
because the result reports them.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import h3
import numpy as np
from libpysal.weights import KNN, DistanceBand, Queen, Rook, W, min_threshold_distance
from scipy.sparse.csgraph import connected_components

from spatial import AnalysisError

__all__ = [
    "SpatialWeights",
    "contiguity",
    "distance_band",
    "from_neighbours",
    "h3_neighbours",
    "knn",
]


@dataclass(frozen=True)
class SpatialWeights:
    """A spatial weights graph and its diagnostics.

    Attributes
    ----------
    w : libpysal.weights.W
        The weights, ``w.id_order`` equal to the ids given to the builder, in that order,
        untransformed (``transform == "O"``). Treat as read-only: the statistics in this
        package work on copies.
    kind : str
        ``"queen"``, ``"rook"``, ``"h3"``, ``"knn"``, ``"distance_band"`` or ``"custom"``.
    parameters : dict
        The builder's parameters (e.g. ``{"k": 8}``, ``{"threshold": 1250.0}``), enough to
        rebuild the weights.
    islands : list
        Ids of the units with no neighbour.
    components : int
        Number of connected parts of the graph (weakly connected: a link in either
        direction joins two units); each island counts as one.
    """

    w: W
    kind: str
    parameters: dict[str, Any] = field(default_factory=dict)
    islands: list[Hashable] = field(default_factory=list)
    components: int = 1

    @property
    def ids(self) -> list[Hashable]:
        """The unit ids, in order."""
        return list(self.w.id_order)

    @property
    def n(self) -> int:
        """The number of units."""
        return int(self.w.n)


def from_neighbours(
    neighbours: Sequence[Sequence[int]],
    ids: Sequence[Hashable],
    *,
    kind: str = "custom",
    parameters: dict[str, Any] | None = None,
    weights: Sequence[Sequence[float]] | None = None,
) -> SpatialWeights:
    """Build :class:`SpatialWeights` from positional neighbour lists.

    Parameters
    ----------
    neighbours : sequence of sequences of int
        ``neighbours[i]`` lists the positions (0-based) of unit i's neighbours.
    ids : sequence of hashable
        The unit ids, one per position; must be unique.
    kind : str, default "custom"
        Recorded as :attr:`SpatialWeights.kind`.
    parameters : dict, optional
        Recorded as :attr:`SpatialWeights.parameters`.
    weights : sequence of sequences of float, optional
        Weights aligned with ``neighbours``; binary (1.0) when omitted.

    Returns
    -------
    SpatialWeights
    """
    ids = _check_ids(ids, len(neighbours))
    neigh = {ids[i]: [ids[j] for j in nb] for i, nb in enumerate(neighbours)}
    if weights is None:
        wts = {ids[i]: [1.0] * len(nb) for i, nb in enumerate(neighbours)}
    else:
        wts = {ids[i]: [float(v) for v in weights[i]] for i in range(len(neighbours))}
    w = W(neigh, wts, id_order=list(ids), silence_warnings=True)
    return _diagnose(w, kind, parameters or {})


def contiguity(
    gdf: gpd.GeoDataFrame,
    *,
    rook: bool = False,
    ids: Sequence[Hashable] | str | None = None,
) -> SpatialWeights:
    """Queen (shared vertex) or rook (shared edge) contiguity between polygons.

    Parameters
    ----------
    gdf : geopandas.GeoDataFrame
        (Multi)Polygon units; not modified. Any CRS (contiguity is topological).
    rook : bool, default False
        Rook contiguity (a shared edge) instead of queen (a shared vertex).
    ids : sequence, str or None
        The unit ids, one per row; or the name of a column holding them; or None for the
        frame's index.

    Returns
    -------
    SpatialWeights
        Binary weights; ``kind`` is ``"queen"`` or ``"rook"``.

    Notes
    -----
    Uses libpysal's vertex-set algorithm (``Queen``/``Rook.from_iterable``), the same as
    GeoDa and spdep ``poly2nb`` (with ``snap = 0``): polygons are neighbours only when
    they share a vertex (queen) or an edge (rook) exactly, so slivers and gaps in a
    boundary file create islands rather than false neighbours.

    References
    ----------
    Rey, S. J. and Anselin, L. (2007). PySAL: A Python library of spatial analytical methods.
    *The Review of Regional Studies*, 37(1), 5-27. https://doi.org/10.52324/001c.8285
    """
    if len(gdf) == 0:
        raise AnalysisError("no units to build contiguity weights on")
    if isinstance(ids, str):
        if ids not in gdf.columns:
            raise AnalysisError(f"no column {ids!r} to take the ids from")
        ids = gdf[ids].tolist()
    elif ids is None:
        ids = gdf.index.tolist()
    ids = _check_ids(ids, len(gdf))
    geoms = list(gdf.geometry.array)
    if any(g is None or g.is_empty for g in geoms):
        raise AnalysisError("contiguity needs a non-empty geometry for every unit")
    builder = Rook if rook else Queen
    positional = builder.from_iterable(geoms, silence_warnings=True)
    neighbours = [sorted(positional.neighbors[i]) for i in range(len(geoms))]
    return from_neighbours(neighbours, ids, kind="rook" if rook else "queen")


def h3_neighbours(cell_ids: Sequence[str]) -> SpatialWeights:
    """Neighbours of H3 cells: the ring-1 cells that are also in the set.

    Parameters
    ----------
    cell_ids : sequence of str
        H3 cell ids (hexadecimal strings), all at the same resolution; unique.

    Returns
    -------
    SpatialWeights
        Binary weights with the cell ids as ids; ``kind`` is ``"h3"`` and ``parameters``
        holds the ``resolution``.

    Notes
    -----
    Computed from the ids alone with ``h3.grid_ring(cell, 1)``: no polygon work. A hexagon
    has 6 ring-1 cells and a pentagon 5; on an H3 grid this equals queen (and rook)
    contiguity of the cell polygons, since H3 cells meet only along whole edges.

    References
    ----------
    Uber Technologies (2024). H3: a hexagonal hierarchical geospatial indexing system,
    version 4. https://h3geo.org/docs/api/traversal
    """
    cells = [str(c) for c in cell_ids]
    if not cells:
        raise AnalysisError("no H3 cells to build weights on")
    for c in cells:
        if not h3.is_valid_cell(c):
            raise AnalysisError(f"not an H3 cell id: {c!r}")
    resolutions = {h3.get_resolution(c) for c in cells}
    if len(resolutions) > 1:
        raise AnalysisError(f"H3 cells of mixed resolutions: {sorted(resolutions)}")
    position = {c: i for i, c in enumerate(cells)}
    if len(position) != len(cells):
        raise AnalysisError("H3 cell ids must be unique")
    neighbours = [sorted(position[r] for r in h3.grid_ring(c, 1) if r in position) for c in cells]
    return from_neighbours(
        neighbours, cells, kind="h3", parameters={"resolution": resolutions.pop()}
    )


def knn(
    x: np.ndarray,
    y: np.ndarray,
    *,
    k: int = 8,
    ids: Sequence[Hashable] | None = None,
) -> SpatialWeights:
    """The k nearest neighbours of each unit (Euclidean, projected coordinates).

    Parameters
    ----------
    x, y : array_like of float, shape (n,)
        Coordinates in a projected CRS (metres), e.g. unit centroids.
    k : int, default 8
        Neighbours per unit; must be below n. ArcGIS Pro's default for its k-nearest
        conceptualisation is 8.
    ids : sequence, optional
        Unit ids; positions 0..n-1 when omitted.

    Returns
    -------
    SpatialWeights
        Binary, asymmetric weights; ``kind`` is ``"knn"``. No unit is an island, but the
        graph may have several components.

    Notes
    -----
    libpysal ``KNN`` (a KD-tree); ties at the k-th distance are broken by the tree's order.
    """
    coords = _coords(x, y)
    n = len(coords)
    if not 1 <= k < n:
        raise AnalysisError(f"k must lie between 1 and n - 1 = {n - 1}; got {k}")
    ids = _check_ids(ids if ids is not None else list(range(n)), n)
    positional = KNN(coords, k=k, silence_warnings=True)
    neighbours = [sorted(positional.neighbors[i]) for i in range(n)]
    return from_neighbours(neighbours, ids, kind="knn", parameters={"k": int(k)})


def distance_band(
    x: np.ndarray,
    y: np.ndarray,
    *,
    threshold: float | None = None,
    ids: Sequence[Hashable] | None = None,
) -> SpatialWeights:
    """Binary distance-band weights: neighbours are the units within ``threshold``.

    Parameters
    ----------
    x, y : array_like of float, shape (n,)
        Coordinates in a projected CRS (metres), e.g. unit centroids.
    threshold : float, optional
        The band in the coordinates' unit (metres). Default: the smallest distance that
        gives every unit at least one neighbour (the largest nearest-neighbour distance,
        ``libpysal.weights.min_threshold_distance``).
    ids : sequence, optional
        Unit ids; positions 0..n-1 when omitted.

    Returns
    -------
    SpatialWeights
        Binary symmetric weights; ``kind`` is ``"distance_band"`` and
        ``parameters["threshold"]`` the band used.

    Notes
    -----
    ArcGIS Pro's "fixed distance band" conceptualisation. A pair at exactly the threshold
    is included (distance <= threshold). The default threshold is widened by one part in
    10^9 so that floating-point rounding never turns the farthest unit into an island.
    Units at identical coordinates are neighbours of each other.
    """
    coords = _coords(x, y)
    n = len(coords)
    if n < 2:
        raise AnalysisError("a distance band needs at least two units")
    ids = _check_ids(ids if ids is not None else list(range(n)), n)
    if threshold is None:
        threshold = float(min_threshold_distance(coords)) * (1.0 + 1e-9)
    elif not (np.isfinite(threshold) and threshold > 0):
        raise AnalysisError(f"threshold must be a positive distance; got {threshold!r}")
    positional = DistanceBand(
        coords, threshold=float(threshold), binary=True, silence_warnings=True
    )
    neighbours = [set(positional.neighbors[i]) for i in range(n)]
    # libpysal drops pairs at distance 0 (a sparse matrix cannot store them): add them back.
    _, first, inverse = np.unique(coords, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    if len(first) < n:
        groups: dict[int, list[int]] = {}
        for i, g in enumerate(inverse):
            groups.setdefault(int(g), []).append(i)
        for members in groups.values():
            for i in members:
                neighbours[i].update(j for j in members if j != i)
    return from_neighbours(
        [sorted(nb) for nb in neighbours],
        ids,
        kind="distance_band",
        parameters={"threshold": float(threshold)},
    )


def binary_with_self(weights: SpatialWeights | W) -> W:
    """A new binary W with every unit its own neighbour (weight 1), for Gi*.

    The input is not modified; ids and their order are kept.
    """
    w = weights.w if isinstance(weights, SpatialWeights) else weights
    neigh = {}
    wts = {}
    for i in w.id_order:
        others = [j for j in w.neighbors[i] if j != i]
        neigh[i] = [i, *others]
        wts[i] = [1.0] * (len(others) + 1)
    return W(neigh, wts, id_order=list(w.id_order), silence_warnings=True)


def plain_copy(weights: SpatialWeights | W) -> W:
    """A new W with the same neighbours and original weights, untransformed.

    esda changes ``w.transform`` of the W it is given (and crand zeroes the diagonal of
    its cached sparse matrix); statistics here hand esda this copy instead.
    """
    w = weights.w if isinstance(weights, SpatialWeights) else weights
    neigh = {i: list(w.neighbors[i]) for i in w.id_order}
    original = w.transformations.get("O", w.weights)  # the weights as built
    wts = {i: [float(v) for v in original[i]] for i in w.id_order}
    return W(neigh, wts, id_order=list(w.id_order), silence_warnings=True)


def _diagnose(w: W, kind: str, parameters: dict[str, Any]) -> SpatialWeights:
    islands = [i for i in w.id_order if len(w.neighbors[i]) == 0]
    if w.n == 0:
        components = 0
    else:
        components, _ = connected_components(w.sparse, directed=True, connection="weak")
    return SpatialWeights(
        w=w,
        kind=kind,
        parameters=dict(parameters),
        islands=islands,
        components=int(components),
    )


def _check_ids(ids: Sequence[Hashable], n: int) -> list[Hashable]:
    ids = list(ids)
    if len(ids) != n:
        raise AnalysisError(f"{len(ids)} ids for {n} units")
    if len(set(ids)) != n:
        raise AnalysisError("unit ids must be unique")
    return ids


def _coords(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise AnalysisError(f"x and y differ in length: {x.size} and {y.size}")
    if x.size == 0:
        raise AnalysisError("no coordinates")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise AnalysisError("coordinates must be finite")
    return np.column_stack([x, y])
