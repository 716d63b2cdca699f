"""Spatial weights: contiguity, H3 neighbours, k nearest neighbours, distance band.

Every builder returns a :class:`SpatialWeights`: a sparse matrix over the given ids in the
given order (and, built on first use, the same graph as a libpysal ``W``), plus what an
analyst must know about the graph (islands, number of disconnected parts). Islands never
raise; libpysal's island warnings are silenced because the result reports them.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain
from typing import Any

import geopandas as gpd
import h3
import h3.api.basic_int as h3_int
import numpy as np
import pandas as pd
from libpysal.graph import Graph
from libpysal.weights import (
    KNN,
    DistanceBand,
    Queen,
    Rook,
    W,
    fuzzy_contiguity,
    min_threshold_distance,
)
from scipy import sparse as sp
from scipy.sparse.csgraph import connected_components

from spatial import AnalysisError

__all__ = [
    "SpatialWeights",
    "contiguity",
    "distance_band",
    "from_neighbours",
    "from_sparse",
    "h3_neighbours",
    "knn",
]

# Bits 52-55 of an H3 index hold its resolution (H3 index bit layout, h3geo.org).
_H3_RESOLUTION_SHIFT = 52


@dataclass(frozen=True, eq=False)
class SpatialWeights:
    """A spatial weights graph and its diagnostics.

    Attributes
    ----------
    sparse : scipy.sparse.csr_array, shape (n, n)
        Row i holds the weights of unit i's neighbours, columns being positions in
        :attr:`id_order`; untransformed, as built. Read-only: the statistics in this
        package work on copies.
    id_order : tuple
        The unit ids given to the builder, in that order.
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

    sparse: sp.csr_array
    id_order: tuple[Hashable, ...]
    kind: str
    parameters: dict[str, Any] = field(default_factory=dict)
    islands: list[Hashable] = field(default_factory=list)
    components: int = 1

    @cached_property
    def w(self) -> W:
        """The same graph as a libpysal ``W`` (ids in :attr:`id_order`, untransformed).

        Built on first use and kept: a dict-of-lists ``W`` of 200,000 units takes seconds
        to build, and the Gi* path never needs it. Treat as read-only.
        """
        return _w_from_csr(self.sparse, self.id_order)

    @cached_property
    def star_graph(self) -> Graph:
        """The Gi* neighbourhoods as a libpysal ``Graph``: binary, every unit its own
        neighbour (:func:`binary_with_self_graph`), over positions 0..n-1.

        Built on first use and kept (about a second at 200,000 units), so repeated Gi*
        runs on the same weights pay only for esda. esda never modifies a ``Graph`` it is
        given (``transform`` returns a copy, whose sparse matrix its permutations edit).
        """
        return binary_with_self_graph(self)

    @property
    def ids(self) -> list[Hashable]:
        """The unit ids, in order."""
        return list(self.id_order)

    @property
    def n(self) -> int:
        """The number of units."""
        return len(self.id_order)

    @property
    def cardinalities(self) -> np.ndarray:
        """The number of neighbours of each unit, in order (int64, shape (n,))."""
        return np.diff(self.sparse.indptr).astype(np.int64)


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
    n = len(ids)
    counts = np.fromiter((len(nb) for nb in neighbours), dtype=np.int64, count=n)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    indices = np.fromiter(chain.from_iterable(neighbours), dtype=np.int64, count=indptr[-1])
    if weights is None:
        data = np.ones(len(indices))
    else:
        if [len(w) for w in weights] != counts.tolist():
            raise AnalysisError("weights must align with the neighbour lists")
        data = np.fromiter(chain.from_iterable(weights), dtype=float, count=indptr[-1])
    if len(indices) and (indices.min() < 0 or indices.max() >= n):
        raise AnalysisError(f"neighbour positions must lie in 0..{n - 1}")
    # Keep the given order of each row's neighbours (no canonical sort): the W built
    # from it lists them as given, as libpysal would.
    matrix = sp.csr_array((data, indices, indptr), shape=(n, n))
    return _diagnose(matrix, ids, kind, parameters or {})


def from_sparse(
    matrix: sp.sparray | sp.spmatrix,
    ids: Sequence[Hashable],
    *,
    kind: str = "custom",
    parameters: dict[str, Any] | None = None,
) -> SpatialWeights:
    """Build :class:`SpatialWeights` from a sparse matrix.

    Parameters
    ----------
    matrix : scipy sparse array or matrix, shape (n, n)
        Entry (i, j) is the weight of unit j as a neighbour of unit i; every stored entry
        is a link, explicit zeros included. Not modified.
    ids : sequence of hashable
        The unit ids, one per row; must be unique.
    kind, parameters
        As in :func:`from_neighbours`.

    Returns
    -------
    SpatialWeights
    """
    ids = _check_ids(ids, matrix.shape[0])
    if matrix.shape != (len(ids), len(ids)):
        raise AnalysisError(f"a weights matrix must be square; got {matrix.shape}")
    csr = sp.csr_array(matrix, dtype=float, copy=True)
    csr.sum_duplicates()  # canonical: sorted neighbours, no duplicate links
    return _diagnose(csr, ids, kind, parameters or {})


def contiguity(
    gdf: gpd.GeoDataFrame,
    *,
    rook: bool = False,
    ids: Sequence[Hashable] | str | None = None,
    snap: float = 0.0,
) -> SpatialWeights:
    """Queen (shared vertex) or rook (shared edge) contiguity between polygons.

    Parameters
    ----------
    gdf : geopandas.GeoDataFrame
        (Multi)Polygon units; not modified. Any CRS (contiguity is topological) when
        ``snap`` is 0; a projected CRS otherwise.
    rook : bool, default False
        Rook contiguity (a shared edge) instead of queen (a shared vertex).
    ids : sequence, str or None
        The unit ids, one per row; or the name of a column holding them; or None for the
        frame's index.
    snap : float, default 0
        Queen contiguity with a tolerance: polygons closer than ``snap`` (in the units of
        the CRS, metres for most projected ones) are neighbours. For boundary files whose
        neighbours do not share vertices exactly (Belize's districts do not). Recorded as
        ``parameters["snap"]``.

    Returns
    -------
    SpatialWeights
        Binary weights; ``kind`` is ``"queen"`` or ``"rook"``.

    Notes
    -----
    With ``snap = 0``, uses libpysal's vertex-set algorithm (``Queen``/``Rook.from_iterable``),
    the same as GeoDa and spdep ``poly2nb`` (with ``snap = 0``): polygons are neighbours only
    when they share a vertex (queen) or an edge (rook) exactly, so slivers and gaps in a
    boundary file create islands rather than false neighbours. With ``snap > 0``, libpysal's
    ``fuzzy_contiguity`` (each polygon buffered by ``snap``, then any intersection links),
    as spdep ``poly2nb(snap = ...)`` does for gaps narrower than the snap.

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
    if snap:
        return _snapped(gdf, ids, snap, rook=rook)
    builder = Rook if rook else Queen
    positional = builder.from_iterable(geoms, silence_warnings=True)
    neighbours = [sorted(positional.neighbors[i]) for i in range(len(geoms))]
    return from_neighbours(neighbours, ids, kind="rook" if rook else "queen")


def _snapped(
    gdf: gpd.GeoDataFrame, ids: list[Hashable], snap: float, *, rook: bool
) -> SpatialWeights:
    """Queen contiguity with a tolerance of ``snap`` CRS units (``fuzzy_contiguity``)."""
    if rook:
        raise AnalysisError("a snap tolerance applies to queen contiguity only")
    if not (np.isfinite(snap) and snap > 0):
        raise AnalysisError(f"snap must be a positive distance (got {snap})")
    if gdf.crs is not None and gdf.crs.is_geographic:
        raise AnalysisError("a snap tolerance needs a projected CRS (a distance in degrees)")
    # fuzzy_contiguity adds a column to the frame it is given and keys neighbours by its
    # index: give it a positional copy.
    frame = gpd.GeoDataFrame(geometry=list(gdf.geometry.array), crs=gdf.crs)
    linked = fuzzy_contiguity(frame, buffering=True, buffer=snap, drop=False, silence_warnings=True)
    neighbours = [sorted(linked.neighbors[i]) for i in range(len(frame))]
    return from_neighbours(neighbours, ids, kind="queen", parameters={"snap": float(snap)})


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
    index = np.array([h3.str_to_int(c) for c in cells], dtype=np.uint64)
    resolutions = np.unique((index >> np.uint64(_H3_RESOLUTION_SHIFT)) & np.uint64(0xF))
    if len(resolutions) > 1:
        raise AnalysisError(f"H3 cells of mixed resolutions: {resolutions.tolist()}")
    order = np.argsort(index)
    ordered = index[order]
    if (ordered[1:] == ordered[:-1]).any():
        raise AnalysisError("H3 cell ids must be unique")
    # One h3 call per cell (there is no array form of grid_ring), then every ring cell is
    # looked up at once: no dict of lists, which made this take seconds at 200,000 cells.
    rings = [h3_int.grid_ring(c, 1) for c in index.tolist()]
    lengths = np.fromiter(map(len, rings), dtype=np.int64, count=len(rings))
    ring = np.fromiter(chain.from_iterable(rings), dtype=np.uint64, count=int(lengths.sum()))
    rows = np.repeat(np.arange(len(cells)), lengths)
    found = np.minimum(np.searchsorted(ordered, ring), len(ordered) - 1)
    inside = ordered[found] == ring
    matrix = sp.csr_array(
        (np.ones(int(inside.sum())), (rows[inside], order[found[inside]])),
        shape=(len(cells), len(cells)),
    )
    return from_sparse(matrix, cells, kind="h3", parameters={"resolution": int(resolutions[0])})


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
    if isinstance(weights, SpatialWeights):
        return _w_from_csr(binary_with_self_sparse(weights), weights.id_order)
    neigh = {}
    wts = {}
    for i in weights.id_order:
        others = [j for j in weights.neighbors[i] if j != i]
        neigh[i] = [i, *others]
        wts[i] = [1.0] * (len(others) + 1)
    return W(neigh, wts, id_order=list(weights.id_order), silence_warnings=True)


def binary_with_self_sparse(weights: SpatialWeights) -> sp.csr_array:
    """A new binary CSR matrix with ones on the diagonal: the Gi* neighbourhoods.

    Row i has a 1 for unit i itself and for each of its neighbours (whatever their
    weight), neighbours sorted by position.
    """
    n = weights.n
    pattern = sp.csr_array(
        (np.ones(weights.sparse.nnz), weights.sparse.indices, weights.sparse.indptr),
        shape=(n, n),
    )
    binary = (pattern + sp.eye_array(n, format="csr")).tocsr()
    binary.data[:] = 1.0  # a self-link given by the builder would have summed to 2
    binary.sort_indices()
    return binary


def binary_with_self_graph(weights: SpatialWeights | W) -> Graph:
    """:func:`binary_with_self` as a libpysal ``Graph`` over positions 0..n-1.

    esda accepts a ``Graph`` wherever it accepts a ``W`` and computes the same
    statistics, without the per-unit Python loops a ``W`` costs (its transform and its
    sparse matrix are rebuilt unit by unit). Positions, not ids, label the units: esda
    returns arrays in order either way, and a ``Graph`` indexed by 200,000 strings takes
    seconds more to build.
    """
    if not isinstance(weights, SpatialWeights):
        return Graph.from_W(binary_with_self(weights))
    matrix = binary_with_self_sparse(weights)
    # What Graph.from_sparse builds, without its two reindexing passes (1.5 s of its
    # 2 s at 200,000 units): they only put the table in canonical order, focal then
    # neighbour by position, which a CSR matrix with sorted indices is in already, and
    # they add the isolates as zero self-links, of which this matrix has none (every
    # unit is its own neighbour).
    n = matrix.shape[0]
    focal = np.repeat(np.arange(n), np.diff(matrix.indptr))
    neighbor = matrix.indices.astype(np.int64)
    index = pd.MultiIndex.from_arrays([focal, neighbor], names=["focal", "neighbor"])
    return Graph(pd.Series(matrix.data, index=index, name="weight"), is_sorted=True)


def plain_copy(weights: SpatialWeights | W) -> W:
    """A new W with the same neighbours and original weights, untransformed.

    esda changes ``w.transform`` of the W it is given (and crand zeroes the diagonal of
    its cached sparse matrix); statistics here hand esda this copy instead.
    """
    if isinstance(weights, SpatialWeights):
        return _w_from_csr(weights.sparse, weights.id_order)
    w = weights
    neigh = {i: list(w.neighbors[i]) for i in w.id_order}
    original = w.transformations.get("O", w.weights)  # the weights as built
    wts = {i: [float(v) for v in original[i]] for i in w.id_order}
    return W(neigh, wts, id_order=list(w.id_order), silence_warnings=True)


def _w_from_csr(matrix: sp.csr_array, ids: Sequence[Hashable]) -> W:
    """A libpysal W with row i of ``matrix`` as the neighbours of ``ids[i]``."""
    indptr, indices, data = matrix.indptr, matrix.indices, matrix.data
    labels = np.fromiter(ids, dtype=object, count=len(ids))
    neigh = {}
    wts = {}
    for k, i in enumerate(ids):
        lo, hi = indptr[k], indptr[k + 1]
        neigh[i] = labels[indices[lo:hi]].tolist()
        wts[i] = data[lo:hi].tolist()
    return W(neigh, wts, id_order=list(ids), silence_warnings=True)


def _diagnose(
    matrix: sp.csr_array, ids: Sequence[Hashable], kind: str, parameters: dict[str, Any]
) -> SpatialWeights:
    n = len(ids)
    lonely = np.flatnonzero(np.diff(matrix.indptr) == 0)
    islands = [ids[i] for i in lonely]
    if n == 0:
        components = 0
    else:
        components, _ = connected_components(matrix, directed=True, connection="weak")
    return SpatialWeights(
        sparse=matrix,
        id_order=tuple(ids),
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
