"""Schemas of the audit log (``GET /audit``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class AuditEntry(BaseModel):
    """One change: who made it, when, to which record, and the record before and after."""

    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str | None
    before: Any = None
    after: Any = None


class AuditLink(BaseModel):
    """A link of an audit page (``next``: older entries)."""

    rel: str
    type: str
    href: str


class AuditPage(BaseModel):
    """Newest first; follow the ``next`` link for older entries."""

    entries: list[AuditEntry]
    number_returned: int
    links: list[AuditLink]
