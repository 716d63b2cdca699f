"""Analyses as jobs: a run is a database row; a queued job (app.worker) computes it.

The API stores the run, queues a job carrying the run's id and waits briefly, polling
the row; a run that takes longer is answered 202 with the run's URL. A worker process
(``observatory worker``) takes the job, computes the run and stores the result, once:
a retried job (after a transient database error, or because its worker died) finds
the run ended and does nothing, or clears its previous attempt's cells and computes it
again. The row stays the user-facing record (status, progress, message, summary).

A run may store files (a KDE run's GeoTIFF and hot areas): its computation returns them
under :data:`FILES` in its summary, and they are stored as large objects with the
result, in one statement, so a retried attempt leaves none behind.

A GET that computes (``/analyses/kde.tif``, ``/indexes/{code}/sensitivity``) reuses a run
of the same kind, parameters and data version when one is stored or running
(:func:`reuse_or_enqueue`), queues one otherwise, and waits ``analysis.read_wait_s``.

The CLI's ``run_here`` computes a run in its own process, as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.errors import (
    Conflict,
    InvalidParameter,
    NotFound,
    ProblemError,
    ServiceUnavailable,
)
from app.core.settings import Settings
from app.sql import analyses as sql
from app.sql import jobs as job_sql
from spatial import AnalysisError

if TYPE_CHECKING:
    from procrastinate import App

log = logging.getLogger("observatory")


class AnalysisFailed(ProblemError):
    """A run that ended ``failed``, answered with its reason and ``run_id``."""

    status, title = 422, "Analysis failed"


class RunCancelled(Exception):
    """The run was cancelled while its job computed it: stop working."""


class TransientFailure(Exception):
    """A transient database error: the job is retried with back-off (app.worker)."""


# The summary key under which a computation returns the files its run stores:
# {name: (media type, bytes)}; the stored summary lists them under "files".
FILES = "_files"

# Progress callback of a job: (fraction done 0..1, what it is doing).
JobProgress = Callable[[float, str], Awaitable[None]]
# The computation of a run of one kind: (engine, settings, parameters, run id, progress).
RunWork = Callable[[AsyncEngine, Settings, dict, int, JobProgress], Awaitable[dict]]


def progress_reporter(engine: AsyncEngine, run_id: int) -> JobProgress:
    """Record a run's progress; raise :class:`RunCancelled` once it was cancelled."""

    async def report(fraction: float, message: str) -> None:
        async with engine.begin() as conn:
            updated = await conn.execute(job_sql.set_progress(run_id, fraction, message))
            if updated.first() is None:
                raise RunCancelled(run_id)

    return report


def is_transient(exc: BaseException) -> bool:
    """A lost connection, a restarting server, a deadlock: worth trying again later."""
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(exc.orig, psycopg.OperationalError)
    return isinstance(exc, psycopg.OperationalError | ConnectionError | sa_exc.InterfaceError)


async def run_job(
    engine: AsyncEngine, run_id: int, work: Callable[[JobProgress], Awaitable[dict]]
) -> None:
    """Run ``work`` and record its summary, or the reason it failed, in the run's row."""
    try:
        summary = await work(progress_reporter(engine, run_id))
    except (AnalysisError, ProblemError) as exc:
        await _end(engine, run_id, "failed", _reason(exc))
        return
    except Exception:
        log_id = uuid.uuid4().hex[:12]
        log.exception("analysis run %s failed (log id %s)", run_id, log_id)
        await _end(engine, run_id, "failed", f"internal error; quote log id {log_id}")
        return
    async with engine.begin() as conn:
        await conn.execute(job_sql.finish_run(run_id, summary))


def _reason(exc: BaseException) -> str:
    return getattr(exc, "detail", None) or str(exc)


async def _end(engine: AsyncEngine, run_id: int, status: str, message: str) -> bool:
    async with engine.begin() as conn:
        return (await conn.execute(job_sql.end_run(run_id, status, message))).first() is not None


async def execute_run(
    engine: AsyncEngine,
    settings: Settings,
    run_id: int,
    works: dict[str, RunWork],
    *,
    request: dict | None,
    final: bool,
) -> str:
    """Compute a queued run (a worker's job) and store its result once; return what
    became of it. ``request`` is the request as the caller sent it (the run's stored
    parameters have every default filled in, which some requests refuse as input).

    One attempt at a time: an attempt holds the run's advisory lock in a transaction of
    its own while it works, so a second one (a job retried while its first worker was
    only slow) waits, then finds the run ended. A killed worker's connection dies with
    it, and with it the lock. Bad input fails the run and is not retried; a transient
    database error raises :class:`TransientFailure` (the queue retries) unless this is
    the ``final`` attempt, which fails the run saying why."""
    try:
        async with engine.begin() as lock:
            await lock.execute(job_sql.lock_run(run_id))
            return await _attempt(engine, settings, run_id, works, request)
    except Exception as exc:
        if not is_transient(exc):
            raise
        if not final:
            log.warning("analysis run %s: transient error, retried: %s", run_id, exc)
            raise TransientFailure(f"run {run_id}: {exc.__class__.__name__}") from exc
        reason = (
            f"the database failed {settings.worker.max_attempts} times "
            f"({exc.__class__.__name__}); post the analysis again"
        )
        await _end(engine, run_id, "failed", reason)
        return "failed"


async def _attempt(
    engine: AsyncEngine,
    settings: Settings,
    run_id: int,
    works: dict[str, RunWork],
    request: dict | None,
) -> str:
    """One attempt at a run; transient database errors propagate (execute_run)."""
    async with engine.begin() as conn:
        run = (await conn.execute(job_sql.claim_run(run_id))).mappings().first()
        if run is None:  # ended already: a retry after the result was stored, a cancel
            return "skipped"
        await conn.execute(job_sql.clear_cells(run_id))
    work = works.get(run["kind"])
    if work is None:
        await _end(engine, run_id, "failed", f"no worker task computes runs of {run['kind']}")
        return "failed"
    try:
        summary = await work(
            engine,
            settings,
            run["parameters"] if request is None else request,
            run_id,
            progress_reporter(engine, run_id),
        )
    except RunCancelled:
        return "cancelled"
    except (AnalysisError, ProblemError) as exc:
        await _end(engine, run_id, "failed", _reason(exc))
        return "failed"
    except Exception as exc:
        if is_transient(exc):
            raise
        log_id = uuid.uuid4().hex[:12]
        log.exception("analysis run %s failed (log id %s)", run_id, log_id)
        await _end(engine, run_id, "failed", f"internal error; quote log id {log_id}")
        return "failed"
    files = summary.pop(FILES, None)
    async with engine.begin() as conn:
        stored = (await conn.execute(job_sql.finish_run(run_id, summary, files))).first()
    return "completed" if stored is not None else "skipped"


async def run_here(
    engine: AsyncEngine,
    kind: str,
    method: str,
    parameters: dict,
    actor: str,
    work: Callable[[int, JobProgress], Awaitable[dict]],
) -> int:
    """Create a run and compute it in this process (the CLI); raise if it failed."""
    async with engine.begin() as conn:
        run_id = (await conn.execute(sql.insert_run(kind, method, parameters, actor))).scalar_one()
    await run_job(engine, run_id, lambda progress: work(run_id, progress))
    async with engine.connect() as conn:
        run = (await conn.execute(sql.select_run(run_id))).mappings().one()
    if run["status"] == "failed":
        raise InvalidParameter(run["message"])
    return run_id


async def enqueue_run(
    queue: App,
    engine: AsyncEngine,
    actor: str,
    kind: str,
    method: str,
    parameters: dict,
    request: dict,
) -> int:
    """Store a run (``parameters``: the request with its defaults) and queue the job
    that computes it (carrying the run's id and ``request``, as sent); return its id."""
    async with engine.begin() as conn:
        run_id = (await conn.execute(sql.insert_run(kind, method, parameters, actor))).scalar_one()
        await conn.execute(sql.set_progress(run_id, 0.0, "queued: waiting for a worker"))
    try:
        deferrer = queue.configure_task("analysis", lock=f"run:{run_id}")
        await deferrer.defer_async(run_id=run_id, request=request)
    except Exception as exc:
        log.exception("could not queue analysis run %s", run_id)
        await _end(engine, run_id, "failed", "the job queue could not take the run")
        raise ServiceUnavailable(
            f"the job queue could not take run {run_id} ({exc.__class__.__name__}); try again"
        ) from exc
    return run_id


async def wait_for_run(
    engine: AsyncEngine, run_id: int, wait_s: float, *, max_pause_s: float = 0.1
) -> bool:
    """Poll the run's row for up to ``wait_s`` seconds, every 20 ms at first, then less
    often (``max_pause_s``); return whether it ended."""
    deadline, pause = time.monotonic() + wait_s, 0.02
    while True:
        async with engine.connect() as conn:
            status = (await conn.execute(job_sql.select_run_status(run_id))).scalar_one()
        if status != "running":
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, max_pause_s)


async def launch_run(
    queue: App,
    engine: AsyncEngine,
    settings: Settings,
    actor: str,
    kind: str,
    method: str,
    parameters: dict,
    request: dict,
) -> tuple[int, bool]:
    """Store a run, queue its job, and wait briefly; return its id and whether it ended."""
    run_id = await enqueue_run(queue, engine, actor, kind, method, parameters, request)
    return run_id, await wait_for_run(engine, run_id, settings.analysis.wait_s)


async def cancel_run(queue: App, engine: AsyncEngine, run_id: int) -> None:
    """Cancel a run that has not ended: a queued job never starts, a running one is
    stopped (its worker cancels the task; the run's next progress report stops it too)."""
    async with engine.begin() as conn:
        status = (await conn.execute(job_sql.select_run_status(run_id))).scalar()
        if status is None:
            raise NotFound(f"no analysis run {run_id}")
        if status != "running":
            raise Conflict(f"analysis run {run_id} is {status}: only a running run is cancelled")
        await conn.execute(job_sql.end_run(run_id, "cancelled", "cancelled by request"))
        jobs = (await conn.execute(job_sql.select_run_jobs(run_id))).all()
    for job_id, _ in jobs:
        await queue.job_manager.cancel_job_by_id_async(job_id, abort=True)


async def reuse_or_enqueue(
    queue: App,
    engine: AsyncEngine,
    actor: str,
    kind: str,
    method: str,
    parameters: dict,
) -> int:
    """The run of ``kind`` with these parameters on the current data: a completed one, or
    one still running, else a new run queued (``parameters`` with every default filled
    in: they are the key). The parameters are stored with ``data_version``; equal
    requests at once wait for each other's lock and share one run."""
    async with engine.connect() as conn, conn.begin():
        version = (await conn.execute(job_sql.data_version())).scalar_one()
        key = {**parameters, "data_version": version}
        await conn.execute(job_sql.lock_reuse(kind, key))
        found = (await conn.execute(job_sql.select_reusable_run(kind, key))).scalar()
        if found is not None:
            return found
        # Queued while the lock is held: an equal request waits, then finds this run.
        return await enqueue_run(queue, engine, actor, kind, method, key, parameters)


async def read_run(engine: AsyncEngine, run_id: int, kind: str) -> Mapping[str, Any]:
    """Run ``run_id`` of ``kind``, completed or running: 404 when there is none of that
    kind, 422 (with its reason) when it failed, 409 when it was cancelled."""
    async with engine.connect() as conn:
        run = (await conn.execute(sql.select_run(run_id))).mappings().first()
    if run is None or run["kind"] != kind:
        raise NotFound(f"no {kind} run {run_id}")
    if run["status"] == "failed":
        raise AnalysisFailed(run["message"] or f"the {kind} run failed", run_id=run_id)
    if run["status"] == "cancelled":
        raise Conflict(f"{kind} run {run_id} was cancelled", run_id=run_id)
    return run


async def read_file(engine: AsyncEngine, run_id: int, name: str) -> tuple[bytes, str]:
    """A completed run's stored file and its media type (404 when it stored none)."""
    async with engine.connect() as conn:
        row = (await conn.execute(job_sql.select_run_file(run_id, name))).first()
    if row is None:
        raise NotFound(f"analysis run {run_id} stored no {name}")
    return bytes(row.data), row.media_type
