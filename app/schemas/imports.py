"""Schemas for import batches."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class Rejection(BaseModel):
    row_number: int
    source_id: str | None
    reason: str
    raw: dict[str, Any]


class ImportBatchPublic(BaseModel):
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
    started_at: datetime
    finished_at: datetime | None
    links: list[dict[str, str]] = []


class ImportBatchDetail(ImportBatchPublic):
    rejections: list[Rejection]
    rejections_truncated: bool


class ImportBatchList(BaseModel):
    batches: list[ImportBatchPublic]
