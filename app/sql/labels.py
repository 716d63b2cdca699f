"""SQL for map labels: one point inside each admin unit to write its name at."""

from __future__ import annotations

from sqlalchemy import TextClause, bindparam, text


def unit_label_points(level: int) -> TextClause:
    """``code``, ``name``, ``lon``, ``lat`` of every unit of ``level``, by code.

    The point is the centre of the unit's largest inscribed circle (its pole of
    inaccessibility, where MapLibre and QGIS put polygon labels): inside the unit and far
    from its edges, unlike a centroid, which a crescent or an archipelago puts outside.
    """
    return text(
        "SELECT code, name, ST_X(mic.center) AS lon, ST_Y(mic.center) AS lat "
        "FROM admin_unit, LATERAL ST_MaximumInscribedCircle(geom) AS mic "
        "WHERE level = :level ORDER BY code"
    ).bindparams(bindparam("level", level))
