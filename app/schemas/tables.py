"""Schemas for the statistical tables (population denominators, external indicators)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class TableReportPublic(BaseModel):
    """What an upload of a long CSV did (``app.services.tables.TableReport``)."""

    table: str = Field(description="population or indicator_value")
    filename: str
    received: int = Field(description="data rows read")
    inserted: int
    updated: int = Field(description="rows that changed a stored value or source")
    unchanged: int
    skipped: int = 0
