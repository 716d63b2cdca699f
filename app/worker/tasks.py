"""What the queue's jobs do: compute an analysis run, import a large file, evaluate the
monitors, keep the queue tidy, nothing.

Every task gets the worker's engine and settings through the job context
(``additional_context``, set by app.worker.run). An analysis job carries only its run's
id: the run's row holds the kind and the parameters, validated again here.
"""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import croniter
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


async def _report(
    engine: AsyncEngine, settings: Settings, parameters: dict, run_id: int, progress: JobProgress
) -> dict:
    import asyncio
    import importlib

    # The renderer's imports (matplotlib, WeasyPrint, numba kernels compiled on import)
    # take seconds: made off the event loop, so the worker's heartbeat goes on meanwhile.
    reports = await asyncio.to_thread(importlib.import_module, "app.services.reports")
    return await reports.run_report(engine, settings, parameters, run_id, progress)


async def _near_repeat(
    engine: AsyncEngine, settings: Settings, parameters: dict, run_id: int, progress: JobProgress
) -> dict:
    from app.schemas.near_repeat import NearRepeatRequest
    from app.services.near_repeat import run_near_repeat

    body = NearRepeatRequest.model_validate(parameters)
    return await run_near_repeat(engine, settings, body, run_id, progress)


async def _linkage(
    engine: AsyncEngine, settings: Settings, parameters: dict, run_id: int, progress: JobProgress
) -> dict:
    from app.services.linkage import run_linkage  # issue 21: deaths from three agencies

    return await run_linkage(engine, settings, parameters, run_id, progress)


async def _kde(
    engine: AsyncEngine, settings: Settings, parameters: dict, run_id: int, progress: JobProgress
) -> dict:
    from app.schemas.surfaces import KdeRequest
    from app.services.surfaces import run_kde

    body = KdeRequest.model_validate({k: v for k, v in parameters.items() if k != "data_version"})
    return await run_kde(engine, settings, body, run_id, progress)


async def _sensitivity(
    engine: AsyncEngine, settings: Settings, parameters: dict, run_id: int, progress: JobProgress
) -> dict:
    from app.schemas.indexes import SensitivityRequest
    from app.services.indexes import run_sensitivity

    body = SensitivityRequest.model_validate(
        {k: v for k, v in parameters.items() if k != "data_version"}
    )
    return await run_sensitivity(engine, settings, body, run_id, progress)


# A run's kind (analysis_run.kind) -> what computes it.
WORKS: dict[str, RunWork] = {
    "hotspots": _hotspots,
    "emerging": _emerging,
    "evaluation": _evaluation,
    "kde": _kde,
    "sensitivity": _sensitivity,
    "near_repeat": _near_repeat,
    "report": _report,
    "linkage": _linkage,
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


async def import_file(context: JobContext, batch_id: int) -> str:
    """Import queued batch ``batch_id`` and store its result once (see
    app.services.import_jobs); then queue an evaluation of the monitors, as after a
    synchronous import, when it changed incidents."""
    from app.services import monitors
    from app.services.import_jobs import run_queued_import

    resources = context.additional_context
    settings: Settings = resources["settings"]
    engine: AsyncEngine = resources["engine"]
    final = context.job.attempts + 1 >= settings.worker.max_attempts
    outcome, report = await run_queued_import(engine, settings, batch_id, final=final)
    if report is not None and (report.inserted or report.updated):
        async with engine.connect() as conn:
            await monitors.defer_evaluation(context.app, conn)
    log.info("import batch %s: %s", batch_id, outcome)
    return outcome


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
    return {"orphaned_runs": orphans, "tile_cell_rows_compacted": await _compact_tiles(engine)}


async def _compact_tiles(engine: AsyncEngine) -> int | None:
    """Fold the tile cells' appended deltas (migration 0019); best effort: the rows sum
    the same uncompacted, only the tile reads are slower."""
    from app.sql.tiles import compact_cells

    try:
        async with engine.begin() as conn:
            return (await conn.execute(compact_cells())).scalar_one()
    except Exception:
        log.warning("housekeeping: compacting the tile cells failed", exc_info=True)
        return None


async def evaluate_monitors(context: JobContext, timestamp: int | None = None) -> dict:
    """Evaluate every monitor at its latest complete period and store its alerts
    (issue 19; nightly by ``worker.schedules``, or deferred after an import)."""
    from app.services.monitors import evaluate_all
    from app.services.near_repeat import refresh_risk_zones

    resources = context.additional_context
    settings: Settings = resources["settings"]
    # The stored monitors only: the demo and `observatory monitors run` store the shipped
    # ones, an administrator POSTs others.
    outcomes = await evaluate_all(resources["engine"], settings.territory.timezone)
    # Near-repeat risk zones of new incidents, and expired ones gone (issue 19).
    zones = await refresh_risk_zones(resources["engine"], settings)
    log.info(
        "evaluate_monitors (slot %s): %d monitors, risk zones %s", timestamp, len(outcomes), zones
    )
    return {"monitors": [o.as_dict() for o in outcomes], "risk_zones": zones}


async def build_reports(context: JobContext, timestamp: int | None = None) -> dict:
    """Build every stored report definition for its period that has just ended (issue 20;
    on the first day of each quarter by ``worker.schedules``); a report stored already for
    the same data is not built again."""
    from app.services.reports import build_scheduled

    resources = context.additional_context
    built = await build_scheduled(resources["engine"], resources["settings"])
    log.info("build_reports (slot %s): %s", timestamp, built)
    return {"reports": built}


async def noop(context: JobContext) -> None:
    """Nothing: the queue's own cost (bench/jobs.py)."""


# Tasks a schedule (worker.schedules) may name: each takes the slot's ``timestamp``.
SCHEDULABLE = ("housekeeping", "evaluate_monitors", "build_reports")


def register(app: App, settings: Settings) -> None:
    """Register the tasks on ``app``. Only transient database errors are retried, with
    exponential back-off, at most ``worker.max_attempts`` times in all."""
    retry = RetryStrategy(
        max_attempts=settings.worker.max_attempts,
        exponential_wait=settings.worker.retry_wait_s,
        retry_exceptions={jobs.TransientFailure},
    )
    app.task(name="analysis", queue=ANALYSES, pass_context=True, retry=retry)(analysis)
    # Imports share the analyses' queue: long work, one core each.
    app.task(name="import_file", queue=ANALYSES, pass_context=True, retry=retry)(import_file)
    app.task(name="housekeeping", queue=SCHEDULES, pass_context=True)(housekeeping)
    app.task(name="noop", queue=ANALYSES, pass_context=True)(noop)
    app.task(name="evaluate_monitors", queue=SCHEDULES, pass_context=True, retry=retry)(
        evaluate_monitors
    )
    app.task(name="build_reports", queue=SCHEDULES, pass_context=True)(build_reports)


def schedule_zone(settings: Settings) -> ZoneInfo:
    """The time zone the schedules' cron expressions are read in."""
    return ZoneInfo(settings.worker.timezone or settings.territory.timezone)


def local_cron(cron: str, zone: ZoneInfo) -> croniter:
    """A croniter that reads ``cron`` in ``zone``: it keeps the zone of the moment it
    starts from, also when later given POSIX timestamps (as procrastinate does)."""
    return croniter(cron, datetime.now(zone))


def schedule(app: App, settings: Settings) -> None:
    """Register the periodic tasks of ``worker.schedules`` (name -> cron) on ``app``."""
    zone = schedule_zone(settings)
    for name, cron in settings.worker.schedules.items():
        if name not in SCHEDULABLE:
            raise ValueError(
                f"worker.schedules names {name!r}; schedulable tasks: {', '.join(SCHEDULABLE)}"
            )
        task = app.tasks[name]
        app.periodic(cron=cron, periodic_id=name)(task)
        # procrastinate reads a cron in UTC (a croniter from a timestamp); its periodic
        # task caches that croniter, so one started in the zone takes its place.
        periodic = app.periodic_registry.periodic_tasks[(task.name, name)]
        periodic.__dict__["croniter"] = local_cron(cron, zone)
