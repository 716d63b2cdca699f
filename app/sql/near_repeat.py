"""SQL for near repeat (issue 19): the incidents a Knox test reads, and risk zones."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    Delete,
    Select,
    delete,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql.dml import Insert

from app.models import analysis_run, category, incident, risk_zone
from app.sql.incidents import IncidentFilter, conditions

KIND = "near_repeat"


def in_bbox(bbox: list[float] | None) -> list[ColumnElement[bool]]:
    """The incidents inside ``[min lon, min lat, max lon, max lat]`` (none: all)."""
    if bbox is None:
        return []
    return [incident.c.geom.op("&&")(func.ST_MakeEnvelope(*bbox, 4326))]


def select_events(f: IncidentFilter, bbox: list[float] | None) -> Select:
    """Longitude, latitude and time (epoch seconds) of the incidents a test reads."""
    c = incident.c
    return select(func.ST_X(c.geom), func.ST_Y(c.geom), func.extract("epoch", c.occurred_at)).where(
        *conditions(f), *in_bbox(bbox)
    )


def select_group_codes(groups: list[str]) -> Select:
    """The category codes of ``groups``, with each code's group."""
    return select(category.c.code, category.c.category_group).where(
        category.c.category_group.in_(groups)
    )


def select_sensitive_codes() -> Select:
    """The codes of the sensitive categories."""
    return select(category.c.code).where(category.c.sensitive)


def select_armed_runs() -> Select:
    """Completed near-repeat runs that asked for risk zones and found a zone."""
    r = analysis_run.c
    zone = r.summary["risk_zone"]
    return (
        select(r.id, r.parameters, r.summary)
        .where(
            r.kind == KIND,
            r.status == "completed",
            r.parameters["risk_zones"].as_boolean().is_(True),
            func.jsonb_typeof(zone) == "object",
        )
        .order_by(r.id)
    )


def insert_zones(
    run_id: int,
    f: IncidentFilter,
    bbox: list[float] | None,
    *,
    sensitive: bool,
    distance_m: float,
    days: float,
    srid: int,
    public_cell_m: float,
    now: datetime,
    until: datetime,
) -> Insert:
    """One zone per incident of the run's filters whose window is open at ``now`` and
    that occurred by ``until`` (the run's arming ends), unless it has one; returns ids.

    ``geom``: the disc of ``distance_m`` around the incident, buffered in the metric
    CRS ``srid``. ``public_geom``: the square of side ``public_cell_m`` of a grid in that
    CRS that holds the incident, grown by ``distance_m`` (plus 1 m for the straight edges
    drawn again in lon/lat): it covers the disc and tells only the incident's square.
    """
    c = incident.c
    point = func.ST_Transform(c.geom, srid)
    x0 = func.floor(func.ST_X(point) / public_cell_m) * public_cell_m
    y0 = func.floor(func.ST_Y(point) / public_cell_m) * public_cell_m
    grow = distance_m + 1.0
    square = func.ST_MakeEnvelope(
        x0 - grow, y0 - grow, x0 + public_cell_m + grow, y0 + public_cell_m + grow, srid
    )
    window = func.make_interval(0, 0, 0, 0, 0, 0, days * 86400.0)
    rows = select(
        literal(run_id),
        c.id,
        literal(sensitive),
        literal(distance_m),
        literal(days),
        c.occurred_at,
        c.occurred_at + window,
        func.ST_Transform(func.ST_Buffer(point, distance_m, "quad_segs=16"), 4326),
        func.ST_Transform(func.ST_Segmentize(square, public_cell_m / 4), 4326),
    ).where(
        *conditions(f),
        *in_bbox(bbox),
        c.occurred_at > literal(now) - window,  # the index on occurred_at serves it
        c.occurred_at <= now,
        c.occurred_at <= until,
    )
    columns = ["run_id", "incident_id", "sensitive", "distance_m", "days", "valid_from",
               "valid_to", "geom", "public_geom"]  # fmt: skip
    return (
        pg_insert(risk_zone)
        .from_select(columns, rows)
        .on_conflict_do_nothing(index_elements=["run_id", "incident_id"])
        .returning(risk_zone.c.id)
    )


def purge_expired(now: datetime) -> Delete:
    """Delete the zones expired by ``now`` (never served; their deletion also drops the
    workers' cached tiles and counts that still held them)."""
    return delete(risk_zone).where(risk_zone.c.valid_to <= now).returning(risk_zone.c.id)
