"""Pure boundary handling: read GeoJSON / GeoPackage / zipped Shapefile, repair, build the hierarchy.

No database, no HTTP: GeoDataFrames in, GeoDataFrames out.
"""


class BoundaryError(ValueError):
    """A boundary file cannot be used as given; the message says why."""


__all__ = ["BoundaryError"]
