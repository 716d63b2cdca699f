"""What the queue's jobs do: compute an analysis run, keep the queue tidy, nothing.

Every task gets the worker's engine and settings through the job context
(``additional_context``, set by app.worker.run). An analysis job carries only its run's
id: the run's row holds the kind and the parameters, validated again here.
"""

from __future__ import annotations

import logging

from procrastinate import App, JobContext, RetryStrategy
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.settings import Settings
from app.services import jobs
from app.services.jobs import JobProgress, RunWork
from app.sql import jobs as job_sql
from app.worker.queue import ANALYSES, SCHEDULES

log = logging.getLogger("observatory")


async def _hotspots(
    engine: AsyncEngine, settings: Settings, parameters: dict, run_id: int, progress: JobProgress
) -> dict:
    from app.schemas.analyses import HotspotRequest
    from app.services.hotspots import run_hotspots

    body = HotspotRequest.model_validate(parameters)
    return await run_hotspots(engine, settings, body, run_id, progress)


async def _emerging(
    engine: AsyncEngine, settings: Settings, parameters: dict, run_id: int, progress: JobProgress
) -> dict:
    from app.schemas.analyses import EmergingRequest
    from app.services.emerging import run_emerging

    body = EmergingRequest.model_validate(parameters)
    return await run_emerging(engine, settings, body, run_id, progress)


async def _evaluation(
    engine: AsyncEngine, settings: Settings, parameters: dict, run_id: int, progress: JobProgress
) -> dict:
    from app.schemas.surfaces import EvaluationRequest
    from app.services.evaluation import run_evaluation

    body = EvaluationRequest.model_validate(parameters)
    return await run_evaluation(engine, settings, body, run_id, progress)


# A run's kind (analysis_run.kind) -> what computes it.
WORKS: dict[str, RunWork] = {
    "hotspots": _hotspots,
    "emerging": _emerging,
    "evaluation": _evaluation,
}


async def analysis(context: JobContext, run_id: int, request: dict | None = None) -> str:
    """Compute analysis run ``run_id`` and store its result once (see jobs.execute_run)."""
    resources = context.additional_context
    settings: Settings = resources["settings"]
    # attempts counts the attempts before this one.
    final = context.job.attempts + 1 >= settings.worker.max_attempts
    return await jobs.execute_run(
        resources["engine"], settings, run_id, WORKS, request=request, final=final
    )


async def housekeeping(context: JobContext, timestamp: int) -> dict:
    """Delete finished jobs older than ``worker.keep_finished_h``; fail the runs whose
    job ended without storing a result (a periodic task: ``timestamp`` is its slot)."""
    resources = context.additional_context
    settings: Settings = resources["settings"]
    engine: AsyncEngine = resources["engine"]
    await context.app.job_manager.delete_old_jobs(
        nb_hours=settings.worker.keep_finished_h,
        include_failed=True,
        include_cancelled=True,
        include_aborted=True,
    )
    async with engine.begin() as conn:
        orphans = [r[0] for r in await conn.execute(job_sql.FAIL_ORPHANS)]
    log.info("housekeeping (slot %s): %d orphaned runs failed", timestamp, len(orphans))
    return {"orphaned_runs": orphans}


async def noop(context: JobContext) -> None:
    """Nothing: the queue's own cost (bench/jobs.py)."""


# Tasks a schedule (worker.schedules) may name: each takes the slot's ``timestamp``.
SCHEDULABLE = ("housekeeping",)


def register(app: App, settings: Settings) -> None:
    """Register the tasks on ``app``. Only transient database errors are retried, with
    exponential back-off, at most ``worker.max_attempts`` times in all."""
    retry = RetryStrategy(
        max_attempts=settings.worker.max_attempts,
        exponential_wait=settings.worker.retry_wait_s,
        retry_exceptions={jobs.TransientFailure},
    )
    app.task(name="analysis", queue=ANALYSES, pass_context=True, retry=retry)(analysis)
    app.task(name="housekeeping", queue=SCHEDULES, pass_context=True)(housekeeping)
    app.task(name="noop", queue=ANALYSES, pass_context=True)(noop)


def schedule(app: App, settings: Settings) -> None:
    """Register the periodic tasks of ``worker.schedules`` (name -> cron) on ``app``."""
    for name, cron in settings.worker.schedules.items():
        if name not in SCHEDULABLE:
            raise ValueError(
                f"worker.schedules names {name!r}; schedulable tasks: {', '.join(SCHEDULABLE)}"
            )
        app.periodic(cron=cron, periodic_id=name)(app.tasks[name])
