"""The job queue as the API shows it: jobs, workers, schedules (admin)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class Job(BaseModel):
    """One job of the queue (procrastinate's row), with its run when it computes one."""

    id: int
    queue: str
    task: str
    status: str  # todo (queued), doing (running), succeeded, failed, cancelled, aborted
    run_id: int | None
    attempts: int
    worker_id: int | None
    queued_at: datetime | None
    started_at: datetime | None
    scheduled_at: datetime | None
    age_s: float | None


class Worker(BaseModel):
    """A worker process seen in the last minute."""

    id: int
    last_heartbeat: datetime
    heartbeat_age_s: float
    running: int


class JobList(BaseModel):
    """Jobs, newest first, and the live workers."""

    jobs: list[Job]
    workers: list[Worker]


class Schedule(BaseModel):
    """A periodic task of ``worker.schedules``: its cron, last slot and outcome."""

    name: str
    cron: str
    timezone: str  # the cron is read in it (worker.timezone, default the territory's)
    next_run: datetime
    last_run: datetime | None
    last_job_id: int | None
    last_outcome: str | None  # the job's status: todo, doing, succeeded, failed, …
    last_ended_at: datetime | None


class ScheduleList(BaseModel):
    """Every schedule."""

    schedules: list[Schedule]
