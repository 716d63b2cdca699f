"""The job queue (admin): jobs queued, running, failed, with their age; the workers."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from app.deps import Admin, ReaderDep
from app.schemas.jobs import Job, JobList, Worker
from app.sql import jobs as sql

router = APIRouter(tags=["jobs"])

Status = Literal["todo", "doing", "succeeded", "failed", "cancelled", "aborted"]


@router.get("/jobs", response_model=JobList, summary="Jobs of the queue and the live workers")
async def list_jobs(
    reader: ReaderDep,
    _: Admin,
    status: Annotated[
        list[Status] | None,
        Query(description="todo (queued), doing (running), …; default todo, doing, failed"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JobList:
    """Jobs of the queue, newest first, each with what it is for (an analysis run's id and
    kind, an import's batch and file name, the schedule that queued it; ``purpose`` says
    it in words), attempts, worker and age (queued: ``todo``, running: ``doing``), and
    the workers seen in the last minute."""
    statuses = list(status or ("todo", "doing", "failed"))
    async with reader.connect() as conn:
        jobs = (await conn.execute(sql.select_jobs(statuses, limit))).mappings().all()
        workers = (await conn.execute(sql.select_workers(60))).mappings().all()
    return JobList(jobs=[Job(**j) for j in jobs], workers=[Worker(**w) for w in workers])
