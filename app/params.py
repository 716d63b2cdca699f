"""Query-parameter parsing shared by the routers: repeated or comma-separated lists, bboxes."""

from __future__ import annotations

from app.core.errors import InvalidParameter


def split_list(values: list[str] | None) -> tuple[str, ...]:
    """Accept both repeated parameters and comma-separated lists."""
    return tuple(v.strip() for raw in values or () for v in raw.split(",") if v.strip())


def parse_bbox(bbox: str | None) -> tuple[float, float, float, float] | None:
    if bbox is None:
        return None
    try:
        west, south, east, north = (float(v) for v in bbox.split(","))
    except ValueError:
        raise InvalidParameter("bbox must be four numbers: west,south,east,north") from None
    if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= north <= 90):
        raise InvalidParameter("bbox must be west,south,east,north in degrees, south <= north")
    if west > east:
        raise InvalidParameter("bbox crossing the antimeridian is not supported")
    return west, south, east, north
