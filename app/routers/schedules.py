"""Schedules (admin): the periodic tasks of ``worker.schedules``, last and next run."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter

from app.deps import Admin, ReaderDep, SettingsDep
from app.schemas.jobs import Schedule, ScheduleList
from app.sql import jobs as sql
from app.worker.tasks import local_cron, schedule_zone

router = APIRouter(tags=["jobs"])


@router.get(
    "/schedules",
    response_model=ScheduleList,
    summary="Periodic tasks: cron (local time), next run, last run and its outcome",
)
async def list_schedules(reader: ReaderDep, settings: SettingsDep, _: Admin) -> ScheduleList:
    """Each schedule of ``worker.schedules``: its cron (read in the time zone given), next
    run, and its last slot with the job's outcome (succeeded, failed, ...; none before its
    first run)."""
    schedules = settings.worker.schedules
    async with reader.connect() as conn:
        rows = (await conn.execute(sql.select_last_defers(list(schedules)))).mappings().all()
    last = {r["name"]: r for r in rows}
    zone = schedule_zone(settings)
    out = []
    for name, cron in schedules.items():
        row = last.get(name)
        out.append(
            Schedule(
                name=name,
                cron=cron,
                timezone=zone.key,
                next_run=local_cron(cron, zone).get_next(datetime),
                last_run=row["slot"] if row else None,
                last_job_id=row["job_id"] if row else None,
                last_outcome=row["status"] if row else None,
                last_ended_at=row["ended_at"] if row else None,
            )
        )
    return ScheduleList(schedules=out)
