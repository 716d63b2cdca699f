"""The lossless import of death records (issue 21), on the incidents' machinery.

A death file is one ``import_batch`` of kind ``deaths``: read like an incident file
(``read_incident_chunks``: CSV, GeoJSON or GeoPackage, columns mapped onto ours), checked
row by row (``app.services.death_rows``), written in one transaction (COPY to staging,
upsert on (source, source_id): a re-import inserts nothing new), every rejected row kept
in ``import_rejection`` with its reasons, the batch's counts and one audit entry (counts
only: the audit log never holds a name). The batch holds the same advisory lock as an
incident batch, so an interrupted one is found and marked failed the same way.

Rejected rows of a death batch hold the file's names: ``GET /imports/{id}`` and its
rejections CSV serve them to the linker role and admins only (app.routers.imports).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import copy_csv, frame_to_csv
from app.core.errors import InvalidParameter
from app.core.settings import Settings
from app.services.death_rows import DEATH_CANONICAL, DeathRules, hash_raw_names, validate_deaths
from app.services.imports import (
    CHUNK_ROWS,
    ImportReport,
    _mark_failed,
    _release,
    _store_rejections,
    interrupt_stale_batches,
    load_territory,
)
from app.services.incident_rows import ReadOptions, detect_format, read_incident_chunks
from app.sql import audit as audit_sql
from app.sql import imports as imports_sql
from app.sql import linkage as sql


def death_secret(settings: Settings) -> bytes | None:
    """The installation's name secret when names are hashed on import, else None."""
    linkage = settings.linkage
    if not linkage.hash_names or linkage.secret is None:
        return None
    return linkage.secret.get_secret_value().encode()


async def import_deaths(
    engine: AsyncEngine,
    settings: Settings,
    path: Path,
    options: ReadOptions,
    *,
    actor: str,
    filename: str | None = None,
) -> ImportReport:
    """Import one death file as one batch; return its counts."""
    filename = filename or path.name
    fmt = detect_format(filename, options.format)
    frames = read_incident_chunks(
        path, options, filename, chunk_rows=CHUNK_ROWS, canonical=DEATH_CANONICAL
    )
    return await import_death_frames(
        engine, settings, frames, options, actor=actor, filename=filename, fmt=fmt
    )


async def import_death_frame(
    engine: AsyncEngine,
    settings: Settings,
    frame: pd.DataFrame,
    options: ReadOptions,
    *,
    actor: str,
    filename: str,
) -> ImportReport:
    """Import a frame of strings with our column names as one batch (the demo)."""
    chunks = (frame.iloc[i : i + CHUNK_ROWS] for i in range(0, max(len(frame), 1), CHUNK_ROWS))
    return await import_death_frames(
        engine, settings, chunks, options, actor=actor, filename=filename, fmt="csv"
    )


async def import_death_frames(
    engine: AsyncEngine,
    settings: Settings,
    frames: Iterator[pd.DataFrame],
    options: ReadOptions,
    *,
    actor: str,
    filename: str,
    fmt: str,
) -> ImportReport:
    """Import chunks of a death file as one batch, in one transaction; on failure the
    batch is marked failed (with a reason a caller may read) and the error re-raised."""
    first = await asyncio.to_thread(next, frames, pd.DataFrame())
    if "source" not in first and not options.source:
        raise InvalidParameter(
            "the file has no 'source' column: name the agency (police, forensic or health) "
            "with the source option"
        )
    warnings = list(first.attrs.get("warnings", ()))
    secret = death_secret(settings)
    async with engine.connect() as conn:
        async with conn.begin():
            await interrupt_stale_batches(conn)
            territory = await load_territory(conn, settings)
            codes = frozenset((await conn.execute(sql.select_unit_codes())).scalars())
            stored_options = {**options.as_dict(), "names_hashed": secret is not None}
            batch_id = (
                await conn.execute(
                    sql.insert_death_batch(filename, fmt, stored_options, actor, warnings)
                )
            ).scalar_one()
            await conn.execute(imports_sql.lock_batch(batch_id))
        rules = DeathRules(
            sources=tuple(settings.linkage.sources),
            unit_codes=codes,
            territory=territory,
            crs=options.crs or first.attrs.get("crs") or "EPSG:4326",
            secret=secret,
        )
        try:
            async with conn.begin():
                counts = await _write(conn, [first], frames, rules, options, batch_id)
                await conn.execute(imports_sql.finish_batch(batch_id, **counts))
                after = {"filename": filename, "kind": "deaths", **counts}
                await conn.execute(
                    audit_sql.insert_audit(actor, "import", "import_batch", batch_id, after=after)
                )
        except BaseException as exc:
            await _mark_failed(engine, batch_id, exc)
            await _release(conn, batch_id)
            raise
        await _release(conn, batch_id)
    return ImportReport(batch_id=batch_id, status="completed", warnings=tuple(warnings), **counts)


async def _write(conn, head, frames, rules: DeathRules, options: ReadOptions, batch_id: int):
    """Every chunk checked, staged and upserted; the rejected rows stored; the counts."""
    for setting in imports_sql.IMPORT_SESSION:
        await conn.execute(setting)
    await conn.execute(sql.LOCK_RECORDS)
    await conn.execute(sql.CREATE_STAGING)
    counts = dict.fromkeys(("received", "inserted", "updated", "unchanged", "rejected"), 0)
    next_row = 1
    parts = _chain(head, frames)
    # The next chunk is read in a thread: a large CSV must not hold the event loop.
    while (part := await asyncio.to_thread(next, parts, None)) is not None:
        if part.empty and not len(part.columns):
            continue
        part = _with_source(part, options)
        checked = await asyncio.to_thread(validate_deaths, part, rules=rules, first_row=next_row)
        next_row += len(part)
        if len(checked.valid):
            await copy_csv(conn, sql.COPY_STAGING, frame_to_csv(checked.valid))
            row = (await conn.execute(sql.upsert_deaths(), {"batch_id": batch_id})).one()
            await conn.execute(sql.TRUNCATE_STAGING)
            counts["inserted"] += row.inserted
            counts["updated"] += row.updated
            counts["unchanged"] += len(checked.valid) - row.inserted - row.updated
        rejected = checked.rejected
        if len(rejected):
            rejected = rejected.assign(
                raw=[hash_raw_names(r, rules.secret, options.columns) for r in rejected["raw"]]
            )
            await _store_rejections(conn, rejected, batch_id)
        counts["received"] += checked.received
        counts["rejected"] += len(rejected)
    return counts


def _chain(head: list[pd.DataFrame], frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    yield from head
    yield from frames


def _with_source(part: pd.DataFrame, options: ReadOptions) -> pd.DataFrame:
    """The ``source`` option fills the rows without a source (the file's own values win)."""
    if not options.source:
        return part
    out = part.copy()
    if "source" in out:
        column = out["source"].astype(str)
        out["source"] = column.where(column.str.strip() != "", options.source)
    else:
        out["source"] = options.source
    return out
