"""SQL for incidents: the filter of statistics and analyses, single-row reads and writes.

Pages and features of incidents are the incidents layer's (``app.ogc.items``,
``app.sql.features``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    Select,
    TextClause,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import array, insert
from sqlalchemy.sql.dml import Insert, Update

from app.models import INCIDENT_FIELDS, admin_unit, incident
from app.sql.units import assign_incident_units

WRITABLE = ("source", "source_id", *INCIDENT_FIELDS)


@dataclass(frozen=True)
class IncidentFilter:
    """The incident filters of statistics and analyses (``/stats``, hot spots, KDE,
    indexes). Its moments are aware: a caller reads one without a zone as local time
    (``app.params.local_time``) before it comes here."""

    occurred_from: datetime | None = None
    occurred_to: datetime | None = None
    categories: tuple[str, ...] = ()
    victim_sex: tuple[str, ...] = ()
    age_min: int | None = None
    age_max: int | None = None
    unit_id: int | None = None
    sources: tuple[str, ...] = ()


def conditions(f: IncidentFilter) -> list[ColumnElement[bool]]:
    """The live incidents the filter selects, as SQL conditions."""
    c = incident.c
    where: list[ColumnElement[bool]] = [c.deleted_at.is_(None)]
    if f.occurred_from is not None:
        where.append(c.occurred_at >= f.occurred_from)
    if f.occurred_to is not None:
        where.append(c.occurred_at < f.occurred_to)
    if f.categories:
        where.append(c.category.in_(f.categories))
    if f.victim_sex:
        where.append(c.victim_sex.in_(f.victim_sex))
    if f.age_min is not None:
        where.append(c.victim_age >= f.age_min)
    if f.age_max is not None:
        where.append(c.victim_age <= f.age_max)
    if f.unit_id is not None:
        where.append(c.unit_ids.contains(array([f.unit_id])))
    if f.sources:
        where.append(c.source.in_(f.sources))
    return where


def select_record(incident_id: int) -> Select:
    """The stored values of one live incident (for PATCH and the audit trail)."""
    return select(
        *(incident.c[p] for p in WRITABLE),
        func.ST_X(incident.c.geom).label("longitude"),
        func.ST_Y(incident.c.geom).label("latitude"),
    ).where(incident.c.id == incident_id, incident.c.deleted_at.is_(None))


def insert_incident(values: dict) -> Insert:
    """Insert one incident unless its (source, source_id) exists; returns its id or nothing."""
    return (
        insert(incident)
        .values(**_with_geom(values))
        .on_conflict_do_nothing(index_elements=["source", "source_id"])
        .returning(incident.c.id)
    )


def update_incident(incident_id: int, values: dict) -> Update:
    """UPDATE a live incident's ``values``; returns its id (no row: absent or deleted)."""
    return (
        update(incident)
        .where(incident.c.id == incident_id, incident.c.deleted_at.is_(None))
        .values(**_with_geom(values), updated_at=func.now())
        .returning(incident.c.id)
    )


def soft_delete(incident_id: int) -> Update:
    """Mark a live incident deleted; returns its id (no row: absent or deleted already)."""
    return (
        update(incident)
        .where(incident.c.id == incident_id, incident.c.deleted_at.is_(None))
        .values(deleted_at=func.now(), updated_at=func.now())
        .returning(incident.c.id)
    )


def select_deleted_record(incident_id: int) -> Select:
    """The stored values of one soft-deleted incident, locked for its restoration."""
    return (
        select(
            *(incident.c[p] for p in WRITABLE),
            func.ST_X(incident.c.geom).label("longitude"),
            func.ST_Y(incident.c.geom).label("latitude"),
            incident.c.deleted_at,
        )
        .where(incident.c.id == incident_id, incident.c.deleted_at.is_not(None))
        .with_for_update()
    )


def undelete(incident_id: int) -> Update:
    """Bring a soft-deleted incident back; returns its id."""
    return (
        update(incident)
        .where(incident.c.id == incident_id, incident.c.deleted_at.is_not(None))
        .values(deleted_at=None, updated_at=func.now())
        .returning(incident.c.id)
    )


def assign_units(incident_id: int) -> list[TextClause]:
    """The statements that set the incident's ``unit_ids``: the units that hold it."""
    return [
        s.bindparams(incident_id=incident_id) for s in assign_incident_units("i.id = :incident_id")
    ]


def select_unit_id(code: str) -> Select:
    """SELECT the id of the unit with ``code``."""
    return select(admin_unit.c.id).where(admin_unit.c.code == code)


def _with_geom(values: dict) -> dict:
    values = dict(values)
    lon, lat = values.pop("longitude", None), values.pop("latitude", None)
    if lon is not None and lat is not None:
        values["geom"] = func.ST_SetSRID(func.ST_MakePoint(lon, lat), 4326)
    return values
