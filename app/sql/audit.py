"""SQL for the audit log: every write records who, when, what, before and after."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, insert, select
from sqlalchemy.sql.dml import Insert

from app.models import audit_log


def insert_audit(
    actor: str,
    action: str,
    entity: str,
    entity_id: str | int | None = None,
    before: Any = None,
    after: Any = None,
) -> Insert:
    """INSERT an audit entry: ``actor`` did ``action`` to ``entity`` ``entity_id``."""
    return insert(audit_log).values(
        actor=actor,
        action=action,
        entity=entity,
        entity_id=None if entity_id is None else str(entity_id),
        before=before,
        after=after,
    )


@dataclass(frozen=True)
class AuditFilter:
    """What ``GET /audit`` may filter on; every value is a bound parameter."""

    actors: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()
    entity_id: str | None = None
    at_from: datetime | None = None  # inclusive
    at_to: datetime | None = None  # exclusive


def _conditions(f: AuditFilter) -> list[ColumnElement[bool]]:
    c = audit_log.c
    where: list[ColumnElement[bool]] = []
    if f.actors:
        where.append(c.actor.in_(f.actors))
    if f.actions:
        where.append(c.action.in_(f.actions))
    if f.entities:
        where.append(c.entity.in_(f.entities))
    if f.entity_id is not None:
        where.append(c.entity_id == f.entity_id)
    if f.at_from is not None:
        where.append(c.at >= f.at_from)
    if f.at_to is not None:
        where.append(c.at < f.at_to)
    return where


def select_entries(f: AuditFilter, *, before: int | None, limit: int) -> Select:
    """Newest first, keyset-paged on id (``before``: the last id of the previous page).
    ``limit + 1`` rows are read so the caller knows whether another page follows."""
    where = _conditions(f)
    if before is not None:
        where.append(audit_log.c.id < before)
    return select(audit_log).where(*where).order_by(audit_log.c.id.desc()).limit(limit + 1)
