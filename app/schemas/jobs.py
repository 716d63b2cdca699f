"""The job queue as the API shows it: jobs, workers, schedules (admin)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, computed_field


class Job(BaseModel):
    """One job of the queue (procrastinate's row), with what it is for: the analysis run
    it computes, the import batch it imports, or the schedule that queued it."""

    id: int
    queue: str
    task: str
    status: str  # todo (queued), doing (running), succeeded, failed, cancelled, aborted
    run_id: int | None
    run_kind: str | None = Field(
        default=None, description="hotspots, emerging, evaluation, kde, sensitivity, …"
    )
    batch_id: int | None = Field(default=None, description="the import batch it imports")
    filename: str | None = Field(default=None, description="the import's file name")
    schedule: str | None = Field(default=None, description="the schedule that queued it")
    attempts: int
    worker_id: int | None
    queued_at: datetime | None
    started_at: datetime | None
    scheduled_at: datetime | None
    age_s: float | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def purpose(self) -> str:
        """What the job is for, in words: ``kde run 12``, ``import batch 7 (file.csv)``."""
        if self.run_id is not None:
            return f"{self.run_kind} run {self.run_id}"
        if self.batch_id is not None:
            return f"import batch {self.batch_id} ({self.filename})"
        if self.schedule:
            return f"schedule {self.schedule}"
        return self.task


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
