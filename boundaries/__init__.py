"""Pure boundary handling: read GeoJSON, GeoPackage or zipped Shapefile; repair; link parents;
compare with the territory.

No database, no HTTP: GeoDataFrames in, GeoDataFrames out. The functions are re-exported
lazily, so that importing :class:`BoundaryError` (as ``app.core.errors`` does) stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any


class BoundaryError(ValueError):
    """A boundary file cannot be used as given; the message says why."""


_EXPORTS = {
    "read_boundaries": "boundaries.read",
    "SUPPORTED_SUFFIXES": "boundaries.read",
    "repair_geometries": "boundaries.repair",
    "RepairNote": "boundaries.repair",
    "assign_parents": "boundaries.hierarchy",
    "outside_territory": "boundaries.territory",
    "OutsideUnit": "boundaries.territory",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'boundaries' has no attribute {name!r}")


__all__ = [
    "SUPPORTED_SUFFIXES",
    "BoundaryError",
    "OutsideUnit",
    "RepairNote",
    "assign_parents",
    "outside_territory",
    "read_boundaries",
    "repair_geometries",
]
