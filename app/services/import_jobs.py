"""Large imports as jobs: the API stores the batch ``queued`` with its file, a worker
imports it (issue 18).

The file's bytes go to the database (``import_upload``), not to the API's temporary
directory: the worker that takes the job may run on another machine. The job carries
only the batch's id; the batch row holds the options and stays the user-facing record
(status queued → running → completed or failed, progress, counts, rejected rows), and
the import is the same lossless one as a synchronous import, in one transaction that
also deletes the stored file.

A retried job stores one result: an attempt takes the batch's advisory lock (waiting
for an earlier attempt that is only slow) and writes nothing once the batch has ended.
A worker killed mid-import rolls its transaction back; the job, taken back from the dead
worker, imports the batch again. Bad input fails the batch with the reason and is not
retried; a transient database error is retried with back-off (the task's retry
strategy), and the last attempt fails the batch saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.errors import ServiceUnavailable, safe_reason
from app.core.settings import Settings
from app.services.imports import ImportReport, import_incidents
from app.services.incident_rows import ReadOptions, detect_format
from app.services.jobs import TransientFailure, is_transient
from app.sql import imports as sql

if TYPE_CHECKING:
    from procrastinate import App

log = logging.getLogger("observatory")

TASK = "import_file"
# How often a running batch's progress is written (its rows are counted per chunk).
PROGRESS_EVERY_S = 1.0


async def queue_import(
    queue: App,
    engine: AsyncEngine,
    path: Path,
    options: ReadOptions,
    *,
    actor: str,
    filename: str,
) -> int:
    """Store a queued batch with the file at ``path`` and queue the job that imports it;
    return the batch's id. 503 (the batch failed, its file deleted) if the queue cannot
    take the job."""
    fmt = detect_format(filename, options.format)  # a wrong format: 4xx now, not later
    data = await asyncio.to_thread(path.read_bytes)
    async with engine.begin() as conn:
        batch_id = (
            await conn.execute(sql.insert_queued_batch(filename, fmt, options.as_dict(), actor))
        ).scalar_one()
        await conn.execute(sql.insert_upload(batch_id, data))
    # Deferred once the batch is committed: a worker that took the job sooner would
    # not find it.
    try:
        await queue.configure_task(TASK, lock=f"import:{batch_id}").defer_async(batch_id=batch_id)
    except Exception as exc:
        log.exception("could not queue import batch %s", batch_id)
        await _fail(engine, batch_id, "the job queue could not take the import")
        raise ServiceUnavailable(
            f"the job queue could not take import batch {batch_id} "
            f"({exc.__class__.__name__}); try again"
        ) from exc
    return batch_id


async def run_queued_import(
    engine: AsyncEngine, settings: Settings, batch_id: int, *, final: bool
) -> tuple[str, ImportReport | None]:
    """Import queued batch ``batch_id`` (a worker's job); return what became of it
    ('completed', 'failed', 'skipped') and its report when completed."""
    async with engine.connect() as conn:
        batch = (await conn.execute(sql.select_batch(batch_id))).mappings().first()
        data = (await conn.execute(sql.select_upload(batch_id))).scalar()
    if batch is None or batch["status"] not in ("queued", "running"):
        return "skipped", None  # ended already: a retry after the result was stored
    if data is None:
        await _fail(engine, batch_id, "the file of this import is gone; import it again")
        return "failed", None
    try:
        report = await _import_bytes(engine, settings, batch, bytes(data))
    except Exception as exc:
        if is_transient(exc):
            if not final:
                log.warning("import batch %s: transient error, retried: %s", batch_id, exc)
                raise TransientFailure(f"batch {batch_id}: {exc.__class__.__name__}") from exc
            reason = (
                f"the database failed {settings.worker.max_attempts} times "
                f"({exc.__class__.__name__}); import the file again"
            )
        else:  # bad input (or a bug): the reason, as a synchronous import gives it; no retry
            reason = safe_reason(exc)
        await _fail(engine, batch_id, reason[:2000])
        return "failed", None
    if report is None:
        return "skipped", None
    return "completed", report


async def _import_bytes(
    engine: AsyncEngine, settings: Settings, batch: dict, data: bytes
) -> ImportReport | None:
    """The batch's file written to this worker's temporary directory, then imported as
    a synchronous import would, its progress written every ``PROGRESS_EVERY_S``."""
    batch_id, filename = batch["id"], batch["filename"]
    options = ReadOptions(**batch["options"])
    seen = {"fraction": 0.0}

    def progress(stage: str, done: int, total: int) -> None:
        if total:
            seen["fraction"] = min(done / total, 1.0)

    async def report_progress() -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            with contextlib.suppress(Exception):  # progress is a courtesy
                async with engine.begin() as conn:
                    await conn.execute(sql.set_batch_progress(batch_id, seen["fraction"]))

    with tempfile.TemporaryDirectory(prefix="observatory-import-") as tmp:
        # The user's suffix: the format is detected from it, as for the upload.
        path = Path(tmp) / f"batch-{batch_id}{Path(filename).suffix.lower()}"
        await asyncio.to_thread(path.write_bytes, data)
        reporter = asyncio.create_task(report_progress())
        try:
            return await import_incidents(
                engine,
                settings,
                path,
                options,
                actor=batch["created_by"],
                filename=filename,
                progress=progress,
                batch_id=batch_id,
            )
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter


async def _fail(engine: AsyncEngine, batch_id: int, reason: str) -> None:
    """Fail a batch that has not ended, and delete its file (it will not be imported)."""
    async with engine.begin() as conn:
        await conn.execute(sql.fail_open_batch(batch_id, reason))
        await conn.execute(sql.delete_upload(batch_id))
