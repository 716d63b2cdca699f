"""Pure spatial statistics: analysis units, spatial weights, Gi*, Local and global Moran's I.

No database, no HTTP, no settings: arrays and GeoDataFrames in, frozen dataclasses or new
frames out, and inputs are never modified. The public names are re-exported lazily, so
importing :class:`AnalysisError` (as ``app.core.errors`` does) stays cheap and does not import
esda, libpysal or numba.

Conventions (DESIGN.md §5): Gi* follows ArcGIS Pro (binary weights with the unit itself
included, two-sided normal p, Gi_Bin ±3/±2/±1, FDR that changes only the bins); Local Moran
follows esda / GeoDa (row-standardised weights, conditional permutations, quadrants
1 HH, 2 LH, 3 LL, 4 HL).
"""

from __future__ import annotations

import time
from importlib import import_module
from typing import Any


class AnalysisError(ValueError):
    """The data cannot be analysed as asked; the message says why (the app maps it to 422)."""


_EXPORTS = {
    "h3_cells": "spatial.grids",
    "square_grid": "spatial.grids",
    "points_to_h3": "spatial.grids",
    "points_to_grid": "spatial.grids",
    "count_by_cell": "spatial.grids",
    "with_cells": "spatial.grids",
    "SpatialWeights": "spatial.weights",
    "contiguity": "spatial.weights",
    "h3_neighbours": "spatial.weights",
    "knn": "spatial.weights",
    "distance_band": "spatial.weights",
    "two_sided_p": "spatial.inference",
    "fdr_mask": "spatial.inference",
    "confidence_bins": "spatial.inference",
    "GiResult": "spatial.gi",
    "gi_star": "spatial.gi",
    "LisaResult": "spatial.lisa",
    "MoranResult": "spatial.lisa",
    "local_moran": "spatial.lisa",
    "global_moran": "spatial.lisa",
    "PATTERNS": "spatial.emerging",
    "space_time_gi": "spatial.emerging",
    "emerging_hot_spots": "spatial.emerging",
    "mann_kendall": "spatial.emerging",
    "default_bandwidth": "spatial.kde",
    "quartic_kde": "spatial.kde",
    "write_geotiff": "spatial.kde",
    "hot_areas": "spatial.kde",
    "pai": "spatial.evaluation",
    "rri": "spatial.evaluation",
    "evaluate_selection": "spatial.evaluation",
    "compare_selections": "spatial.evaluation",
    "select_top_area": "spatial.evaluation",
    "incremental_spatial_autocorrelation": "spatial.scale",
    "choose_scale": "spatial.scale",
    "check_enough": "spatial.scale",
    "locational_outliers": "spatial.scale",
}

# esda 2.9 compiles its permutation kernels with ``numba.njit`` *without* ``cache=True``,
# so NUMBA_CACHE_DIR alone keeps nothing on disk for them. These are the modules whose
# dispatchers :func:`enable_numba_cache` switches to on-disk caching.
_UNCACHEABLE = frozenset({"compute_chunk"})
_ESDA_JIT_MODULES = ("esda.crand", "esda.significance", "esda.getisord", "esda.moran")


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'spatial' has no attribute {name!r}")


def enable_numba_cache() -> int:
    """Make esda's numba kernels cache their machine code on disk.

    Returns
    -------
    int
        The number of numba dispatchers switched to caching (0 when numba is absent).

    Notes
    -----
    esda 2.9 decorates its kernels with ``@njit`` and no ``cache=True``; numba then
    recompiles them in every new process (15-60 s on the first permutation run). This calls
    ``Dispatcher.enable_caching()`` on each of them, which makes numba write the compiled
    code to ``NUMBA_CACHE_DIR`` (numba reads that environment variable itself; when unset,
    it uses ``__pycache__`` beside esda's sources, or a user cache directory when that is not
    writable). A later process that enables caching before its first call then loads the
    code instead of compiling it. Only signatures compiled *after* this call are written,
    so call it before the first permutation run (``warm_up`` does). Idempotent.
    """
    try:
        from numba.core.registry import CPUDispatcher
    except ImportError:  # pragma: no cover - numba is a declared dependency
        return 0
    count = 0
    for module_name in _ESDA_JIT_MODULES:
        module = import_module(module_name)
        for obj in list(vars(module).values()):  # a copy: jobs compute in threads
            # compute_chunk takes the statistic (another dispatcher) as an argument: numba
            # never finds its cache entry again and would add files on every start.
            if isinstance(obj, CPUDispatcher) and obj.__name__ not in _UNCACHEABLE:
                obj.enable_caching()
                count += 1
    return count


def warm_up(*, cache: bool = True) -> float:
    """Compile esda's permutation kernels now, so no analyst's first run pays for it.

    Runs :func:`spatial.gi_star` (esda ``G_Local``) and :func:`spatial.local_moran`
    (esda ``Moran_Local``'s conditional-permutation kernel) once, with permutations and
    a fixed seed, on a 5 x 5 lattice. The app calls this in a background thread at
    start-up.

    Parameters
    ----------
    cache : bool, default True
        First call :func:`enable_numba_cache`, so the compiled code is written to (and on
        the next start read from) numba's cache directory: set ``NUMBA_CACHE_DIR`` to a
        persistent, writable folder in the service's environment.

    Returns
    -------
    float
        Seconds spent (compilation included).

    Notes
    -----
    Measured on the 2-core development machines: about 17 s in a fresh process with an
    empty cache, about 6 s when the cache is warm. numba holds a global compiler lock, so a
    request that needs the kernels while this runs waits for the compilation rather than
    compiling twice.
    """
    import numpy as np
    from libpysal.weights import lat2W

    from spatial.gi import gi_star
    from spatial.lisa import local_moran

    start = time.perf_counter()
    if cache:
        enable_numba_cache()
    w = lat2W(5, 5)
    y = np.arange(25, dtype=float) % 7.0
    gi_star(y, w, permutations=19, seed=1)
    local_moran(y, w, permutations=19, seed=1)
    return time.perf_counter() - start


__all__ = [
    "AnalysisError",
    "GiResult",
    "LisaResult",
    "MoranResult",
    "SpatialWeights",
    "confidence_bins",
    "contiguity",
    "count_by_cell",
    "distance_band",
    "enable_numba_cache",
    "fdr_mask",
    "gi_star",
    "global_moran",
    "h3_cells",
    "h3_neighbours",
    "knn",
    "local_moran",
    "points_to_grid",
    "points_to_h3",
    "square_grid",
    "two_sided_p",
    "warm_up",
    "with_cells",
]
