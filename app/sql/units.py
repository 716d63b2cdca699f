"""SQL for admin units and for assigning incidents to the units that contain them."""

from __future__ import annotations

from sqlalchemy import TextClause, text


def units_containing(point: str) -> str:
    """SQL expression: ids of the units containing ``point``, one per level, ordered by level.

    A point on a shared border belongs to the unit with the lowest id, so that counts per
    unit never count an incident twice.
    """
    return f"""(
        SELECT array_agg(s.id ORDER BY s.level) FROM (
            SELECT DISTINCT ON (u.level) u.id, u.level FROM admin_unit u
            WHERE ST_Intersects(u.geom, {point})
            ORDER BY u.level, u.id
        ) s
    )"""


def units_nearest(point: str) -> str:
    """SQL expression: per level, the containing unit or else the nearest one within
    ``:tolerance_m`` metres (coarse coastlines leave coastal points just outside)."""
    return f"""(
        SELECT array_agg(s.id ORDER BY s.level) FROM (
            SELECT DISTINCT ON (u.level) u.id, u.level FROM admin_unit u
            WHERE ST_DWithin(u.geom::geography, ({point})::geography, :tolerance_m)
            ORDER BY u.level, ST_Distance(u.geom, {point}), u.id
        ) s
    )"""


def assign_incident_units(where: str = "TRUE") -> list[TextClause]:
    """Statements, run in order, that set ``unit_ids`` of the incidents matching ``where``
    (a fixed SQL condition on ``i`` with bound parameters): point-in-polygon first, then
    the nearest unit within ``:tolerance_m`` for the few rows left short of a level."""
    return [
        text(
            f"""UPDATE incident i SET unit_ids = coalesce({units_containing("i.geom")}, '{{}}')
            WHERE {where}"""
        ),
        text(
            f"""UPDATE incident i SET unit_ids = coalesce({units_nearest("i.geom")}, i.unit_ids)
            WHERE {where}
              AND cardinality(i.unit_ids) < (SELECT count(DISTINCT level) FROM admin_unit)"""
        ),
    ]
