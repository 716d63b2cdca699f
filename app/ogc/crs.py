"""Coordinate reference systems of OGC API Features Part 2: the URIs the service
accepts for ``crs``, ``bbox-crs`` and ``filter-crs``, their SRIDs and axis order."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from pyproj import CRS

from app.core.errors import InvalidParameter

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
_EPSG = "http://www.opengis.net/def/crs/EPSG/0/"


@dataclass(frozen=True)
class OutputCrs:
    """A CRS the service reads and writes coordinates in: its URI, EPSG code and axis order."""

    uri: str
    srid: int
    # True where the CRS lists latitude (northing) first, as EPSG:4326 does: coordinates
    # are then written y, x, and bbox numbers read as south, west, north, east.
    lat_first: bool

    @property
    def decimals(self) -> int:
        """Coordinate precision: 7 decimals of a degree (~1 cm), or centimetres."""
        return 7 if CRS.from_epsg(self.srid).is_geographic else 2


def supported_uris(projected_crs: str) -> list[str]:
    """CRS84 (the default), EPSG:4326, Web Mercator and the territory's metric CRS."""
    srids = dict.fromkeys((4326, 3857, CRS.from_user_input(projected_crs).to_epsg()))
    return [CRS84, *(f"{_EPSG}{srid}" for srid in srids if srid)]


@cache
def _lat_first(srid: int) -> bool:
    return CRS.from_epsg(srid).axis_info[0].direction in ("north", "south")


def parse_crs(uri: str | None, projected_crs: str, parameter: str = "crs") -> OutputCrs:
    """The CRS a URI names, if the service offers it (else a 400 that lists them)."""
    if uri is None or uri.strip("<>") == CRS84:
        return OutputCrs(CRS84, 4326, False)
    uri = uri.strip("<>")
    supported = supported_uris(projected_crs)
    if uri not in supported:
        raise InvalidCrs(f"{parameter} {uri!r} is not offered; use one of: {', '.join(supported)}")
    srid = int(uri.rsplit("/", 1)[1])
    return OutputCrs(uri, srid, _lat_first(srid))


class InvalidCrs(InvalidParameter):
    """A CRS the service does not offer, named by ``crs``, ``bbox-crs`` or ``filter-crs`` (400)."""

    status, title = 400, "Unsupported CRS"
