"""SQL for the territory: the outline incidents must fall in and uploaded boundaries are
compared with, from the loaded boundaries."""

from __future__ import annotations

from sqlalchemy import TextClause, text


def select_territory() -> TextClause:
    """The union of the top-level units buffered by ``:tolerance_m`` metres, as WKB.

    Buffering in geography keeps the tolerance in metres at any latitude. NULL when no
    boundaries are loaded yet.
    """
    return text(
        """
        SELECT ST_AsBinary(ST_Buffer(ST_Union(geom)::geography, :tolerance_m)::geometry)
        FROM admin_unit
        WHERE level = (SELECT min(level) FROM admin_unit)
        """
    )


def select_outline_above(level: int) -> TextClause:
    """``level, wkb``: the union of the units of the top level above ``level`` (the
    country, for districts), unbuffered, as WKB; no row when no level above is loaded.

    Boundary uploads compare their units with it (``boundaries.territory``).
    """
    return text(
        """
        SELECT level, ST_AsBinary(ST_Union(geom)) AS wkb
        FROM admin_unit
        WHERE level = (SELECT min(level) FROM admin_unit WHERE level < :level)
        GROUP BY level
        """
    ).bindparams(level=level)
