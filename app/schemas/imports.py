"""Schemas for import batches."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class Rejection(BaseModel):
    """A row an import refused: its number in the file, why, and the row as read."""

    row_number: int
    source_id: str | None
    reason: str
    raw: dict[str, Any]


class ImportBatchPublic(BaseModel):
    """One import of a file: its options, status and counts of rows."""

    id: int
    kind: str
    filename: str
    format: str
    options: dict[str, Any]
    created_by: str
    status: str
    received: int
    inserted: int
    updated: int
    unchanged: int
    rejected: int
    # What the import noticed without rejecting a row (e.g. headers renamed to keep
    # every column).
    warnings: list[str] = []
    # Why a failed batch failed, in words a caller may read (never SQL or process ids).
    error: str | None
    # How far a queued import's worker has got, 0..1 (None for a synchronous import's
    # batch while it runs).
    progress: float | None = None
    started_at: datetime
    finished_at: datetime | None
    links: list[dict[str, str]] = []


class ImportBatchDetail(ImportBatchPublic):
    """One import with its rejected rows (the first ones when there are many)."""

    rejections: list[Rejection]
    rejections_truncated: bool


class ImportBatchList(BaseModel):
    """Import batches, newest first."""

    batches: list[ImportBatchPublic]
