"""Lossless bulk import of incidents: read → validate → COPY to staging → upsert, in one
transaction per batch.

A batch either lands whole (valid rows upserted, every rejected row stored with its
reasons, counts recorded) or not at all: if anything fails midway, the transaction rolls
back, the batch is marked failed, and re-running the same file completes it. Rows are
keyed on (source, source_id), so re-importing a file inserts nothing new.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import shapely
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.errors import InvalidParameter
from app.models import category
from app.services.incident_rows import (
    ReadOptions,
    Territory,
    Validated,
    Vocabulary,
    detect_format,
    read_incident_file,
    validate_incidents,
)
from app.settings import Settings
from app.sql import audit as audit_sql
from app.sql import imports as sql
from app.sql.territory import select_territory
from app.sql.units import assign_incident_units

# Progress callback: (stage, done, total).
Progress = Callable[[str, int, int], None]
COPY_CHUNK = 50_000


@dataclass(frozen=True)
class ImportReport:
    batch_id: int
    status: str
    received: int
    inserted: int
    updated: int
    unchanged: int
    rejected: int


def _quiet(stage: str, done: int, total: int) -> None:
    pass


async def load_vocabulary(conn: AsyncConnection) -> Vocabulary:
    rows = (await conn.execute(select(category.c.code, category.c.name))).all()
    if not rows:
        raise InvalidParameter(
            "no category vocabulary is loaded: run `observatory import categories FILE` "
            "(or `observatory demo`) first"
        )
    return Vocabulary(
        codes=frozenset(r.code for r in rows), aliases={r.name.lower(): r.code for r in rows}
    )


async def load_territory(conn: AsyncConnection, settings: Settings) -> Territory:
    tolerance = settings.territory.tolerance_m
    wkb = (await conn.execute(select_territory(), {"tolerance_m": tolerance})).scalar()
    if wkb is not None:
        geometry = shapely.from_wkb(bytes(wkb))
    elif settings.territory.bbox is not None:
        geometry = shapely.box(*settings.territory.bbox)
    else:
        raise InvalidParameter(
            "no territory: load boundaries (`observatory import boundaries`) or set "
            "OBSERVATORY_TERRITORY__BBOX"
        )
    return Territory(settings.territory.name, geometry, tolerance)


async def import_incidents(
    engine: AsyncEngine,
    settings: Settings,
    path: Path,
    options: ReadOptions,
    *,
    actor: str,
    filename: str | None = None,
    progress: Progress = _quiet,
) -> ImportReport:
    """Import one incident file as one batch; return its counts."""
    filename = filename or path.name
    fmt = detect_format(filename, options.format)
    progress("read", 0, 1)
    frame = read_incident_file(path, options, filename)
    progress("read", 1, 1)
    return await import_frame(
        engine, settings, frame, options, actor=actor, filename=filename, fmt=fmt, progress=progress
    )


async def import_frame(
    engine: AsyncEngine,
    settings: Settings,
    frame: pd.DataFrame,
    options: ReadOptions,
    *,
    actor: str,
    filename: str,
    fmt: str,
    progress: Progress = _quiet,
) -> ImportReport:
    """Import a frame of strings with canonical columns (what ``read_incident_file`` returns)."""
    if "source" not in frame and not options.source:
        raise InvalidParameter(
            "the file has no 'source' column: name the reporting agency with the source option"
        )
    async with engine.connect() as conn:
        vocabulary = await load_vocabulary(conn)
        territory = await load_territory(conn, settings)
    progress("validate", 0, len(frame))
    checked = validate_incidents(
        frame,
        options=options,
        vocabulary=vocabulary,
        territory=territory,
        timezone=settings.territory.timezone,
    )
    progress("validate", len(frame), len(frame))
    return await store_batch(
        engine,
        checked,
        filename=filename,
        fmt=fmt,
        options=options.as_dict(),
        actor=actor,
        tolerance_m=settings.territory.tolerance_m,
        progress=progress,
    )


async def store_batch(
    engine: AsyncEngine,
    checked: Validated,
    *,
    filename: str,
    fmt: str,
    options: dict,
    actor: str,
    tolerance_m: float,
    progress: Progress = _quiet,
) -> ImportReport:
    """Write a validated batch in one transaction; on failure mark the batch failed."""
    async with engine.begin() as conn:
        batch_id = (
            await conn.execute(sql.insert_batch(filename, fmt, options, actor))
        ).scalar_one()
    try:
        async with engine.begin() as conn:
            inserted, updated = await _upsert(conn, checked.valid, batch_id, tolerance_m, progress)
            await _store_rejections(conn, checked.rejected, batch_id)
            counts = {
                "received": checked.received,
                "inserted": inserted,
                "updated": updated,
                "unchanged": len(checked.valid) - inserted - updated,
                "rejected": len(checked.rejected),
            }
            await conn.execute(sql.finish_batch(batch_id, **counts))
            await conn.execute(
                audit_sql.insert_audit(
                    actor,
                    "import",
                    "import_batch",
                    batch_id,
                    after={"filename": filename, **counts},
                )
            )
    except BaseException as exc:
        await _mark_failed(engine, batch_id, exc)
        raise
    return ImportReport(batch_id=batch_id, status="completed", **counts)


async def _upsert(
    conn: AsyncConnection,
    valid: pd.DataFrame,
    batch_id: int,
    tolerance_m: float,
    progress: Progress,
) -> tuple[int, int]:
    # A large batch is one long statement; the per-request timeout must not cut it.
    await conn.execute(sql.NO_STATEMENT_TIMEOUT)
    await conn.execute(sql.CREATE_STAGING)
    valid = valid.assign(
        occurred_at=_utc_text(valid["occurred_at"]), reported_at=_utc_text(valid["reported_at"])
    )
    raw = await conn.get_raw_connection()
    pg = raw.driver_connection
    total = len(valid)
    async with pg.cursor() as cur, cur.copy(sql.COPY_STAGING) as copy:
        for start in range(0, total, COPY_CHUNK):
            chunk = valid.iloc[start : start + COPY_CHUNK]
            buffer = io.StringIO()
            chunk.to_csv(buffer, header=False, index=False)
            await copy.write(buffer.getvalue())
            progress("copy", min(start + COPY_CHUNK, total), total)
    progress("upsert", 0, total)
    row = (await conn.execute(sql.upsert_from_staging(), {"batch_id": batch_id})).one()
    # The few points outside every unit of a level (coarse coastlines) get the nearest one.
    fill_nearest = assign_incident_units("i.import_batch_id = :batch_id")[1]
    await conn.execute(fill_nearest, {"batch_id": batch_id, "tolerance_m": tolerance_m})
    progress("upsert", total, total)
    return row.inserted, row.updated


def _utc_text(times: pd.Series) -> np.ndarray:
    """Timestamps as ISO 8601 UTC text for COPY; numpy formats them ~4x faster than pandas."""
    text = np.datetime_as_string(times.dt.tz_convert(None).to_numpy("datetime64[us]"), unit="us")
    return np.where(pd.isna(times).to_numpy(), "", np.char.add(text, "Z"))


async def _store_rejections(conn: AsyncConnection, rejected: pd.DataFrame, batch_id: int) -> None:
    if rejected.empty:
        return
    raw = await conn.get_raw_connection()
    async with raw.driver_connection.cursor() as cur, cur.copy(sql.COPY_REJECTIONS) as copy:
        for r in rejected.itertuples(index=False):
            await copy.write_row(
                (batch_id, int(r.row_number), r.source_id, r.reason, orjson.dumps(r.raw).decode())
            )


async def _mark_failed(engine: AsyncEngine, batch_id: int, exc: BaseException) -> None:
    try:
        async with engine.begin() as conn:
            await conn.execute(sql.fail_batch(batch_id, f"{exc.__class__.__name__}: {exc}"[:2000]))
    except Exception:  # the database may be gone; the batch then stays 'running' until re-run
        pass


def rejections_csv(rows: list) -> str:
    """The rejected rows as CSV: row number, source id, reason, then the original columns."""
    records = []
    for r in rows:
        raw = r.raw if isinstance(r.raw, dict) else orjson.loads(r.raw)
        records.append(
            {"row_number": r.row_number, "source_id": r.source_id, "reason": r.reason, **raw}
        )
    return pd.DataFrame.from_records(records).to_csv(index=False)
