"""The procrastinate App of a settings object: its connector and its tasks."""

from __future__ import annotations

from procrastinate import App, PsycopgConnector

from app.core.settings import Settings

# Migration 0010 creates procrastinate's tables and functions in this schema; its SQL
# names none, so the queue's connections search it.
SCHEMA = "procrastinate"
ANALYSES = "analyses"  # analysis runs
SCHEDULES = "schedules"  # periodic tasks, so a long analysis never delays them
QUEUES = (ANALYSES, SCHEDULES)


def connector(settings: Settings, *, min_size: int = 0, max_size: int = 4) -> PsycopgConnector:
    """A psycopg pool on the service's database with ``procrastinate`` on its path.

    ``min_size`` 0 (the API): nothing connects until a job is deferred, so the API
    starts while the database is still coming up."""
    return PsycopgConnector(
        conninfo=settings.libpq_url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"options": f"-c search_path={SCHEMA}"},
    )


def make_app(settings: Settings, *, min_size: int = 0, max_size: int = 4) -> App:
    """The queue's App with every task registered (schedules: see ``tasks.schedule``)."""
    from app.worker import tasks

    app = App(
        connector=connector(settings, min_size=min_size, max_size=max_size),
        # A slot missed while no worker ran is deferred once when one starts.
        periodic_defaults={"max_delay": settings.worker.missed_slot_s},
    )
    tasks.register(app, settings)
    return app
