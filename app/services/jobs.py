"""Analyses as jobs: a run is a database row; the work runs as a task in this worker.

The request waits briefly; a run that takes longer is answered 202 with the run's URL and
finishes in the background, reporting progress in its row. If the worker dies, the row
stays 'running' — re-run it (its parameters are stored).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.errors import InvalidParameter, ProblemError
from app.core.settings import Settings
from app.sql import analyses as sql
from spatial import AnalysisError

log = logging.getLogger("observatory")


class AnalysisFailed(ProblemError):
    status, title = 422, "Analysis failed"


# Progress callback of a job: (fraction done 0..1, what it is doing).
JobProgress = Callable[[float, str], Awaitable[None]]


def progress_reporter(engine: AsyncEngine, run_id: int) -> JobProgress:
    async def report(fraction: float, message: str) -> None:
        async with engine.begin() as conn:
            await conn.execute(sql.set_progress(run_id, fraction, message))

    return report


async def run_job(
    engine: AsyncEngine, run_id: int, work: Callable[[JobProgress], Awaitable[dict]]
) -> None:
    """Run ``work`` and record its summary, or the reason it failed, in the run's row."""
    try:
        summary = await work(progress_reporter(engine, run_id))
    except (AnalysisError, ProblemError) as exc:
        message = getattr(exc, "detail", None) or str(exc)
        await _fail(engine, run_id, message)
        return
    except Exception:
        log_id = uuid.uuid4().hex[:12]
        log.exception("analysis run %s failed (log id %s)", run_id, log_id)
        await _fail(engine, run_id, f"internal error; quote log id {log_id}")
        return
    async with engine.begin() as conn:
        await conn.execute(sql.finish_run(run_id, summary))


async def _fail(engine: AsyncEngine, run_id: int, message: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(sql.fail_run(run_id, message))


def start(tasks: set[asyncio.Task], coro: Awaitable[None]) -> asyncio.Task:
    """Start a job task, keeping a reference until it ends (asyncio holds weak ones)."""
    task = asyncio.ensure_future(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


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


async def launch_run(
    tasks: set[asyncio.Task],
    engine: AsyncEngine,
    settings: Settings,
    actor: str,
    kind: str,
    method: str,
    parameters: dict,
    work: Callable[[int, JobProgress], Awaitable[dict]],
) -> tuple[int, bool]:
    """Store a run, start its job, and wait briefly; return its id and whether it ended."""
    async with engine.begin() as conn:
        run_id = (await conn.execute(sql.insert_run(kind, method, parameters, actor))).scalar_one()
    job = run_job(engine, run_id, lambda progress: work(run_id, progress))
    task = start(tasks, job)
    done, _ = await asyncio.wait({task}, timeout=settings.analysis.wait_s)
    return run_id, bool(done)
