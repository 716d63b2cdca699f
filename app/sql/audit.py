"""SQL for the audit log: every write records who, when, what, before and after."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
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
    return insert(audit_log).values(
        actor=actor,
        action=action,
        entity=entity,
        entity_id=None if entity_id is None else str(entity_id),
        before=before,
        after=after,
    )
