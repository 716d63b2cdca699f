"""SQL for the job queue: a run's life as its job runs it, and what the queue holds.

procrastinate's tables live in the schema ``procrastinate`` (migration 0010); these
statements name it, so they run on the service's ordinary connections.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    LargeBinary,
    TextClause,
    bindparam,
    cast,
    func,
    literal,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.dml import Update

from app.models import analysis_run

Q = "procrastinate"
# Job statuses that are over without a result stored by the job itself.
ENDED_BADLY = ("failed", "cancelled", "aborted")


# The first key of the runs' advisory locks (the second is the run's id).
RUN_LOCK = 18


def lock_run(run_id: int) -> TextClause:
    """Wait for a run's lock, held until the transaction ends: one attempt at a time."""
    return text("SELECT pg_advisory_xact_lock(:space, :run_id)").bindparams(
        space=RUN_LOCK, run_id=run_id
    )


def claim_run(run_id: int) -> Update:
    """Start (or start again) a run still waiting for its result; nothing once it ended."""
    return (
        update(analysis_run)
        .where(analysis_run.c.id == run_id, analysis_run.c.status == "running")
        .values(progress=0.0, message="started")
        .returning(analysis_run.c.kind, analysis_run.c.parameters)
    )


def clear_cells(run_id: int) -> TextClause:
    """A previous attempt's values (a retry writes them again, once)."""
    return text("DELETE FROM analysis_cell_value WHERE run_id = :run_id").bindparams(run_id=run_id)


def set_progress(run_id: int, progress: float, message: str) -> Update:
    """Progress of a running run; no row when it was cancelled meanwhile."""
    return (
        update(analysis_run)
        .where(analysis_run.c.id == run_id, analysis_run.c.status == "running")
        .values(progress=progress, message=message)
        .returning(analysis_run.c.id)
    )


def finish_run(
    run_id: int, summary: dict, files: dict[str, tuple[str, bytes]] | None = None
) -> Update:
    """The result, stored once: only while the run is still running. ``files`` (name ->
    media type, bytes) are stored as large objects in the same statement, their oids in
    ``summary.files``: a retried attempt that did not get this far left none behind."""
    value: ColumnElement = cast(literal(summary, JSONB), JSONB)
    if files:
        entries: list = []
        for i, (name, (media_type, data)) in enumerate(files.items()):
            oid = func.lo_from_bytea(0, bindparam(f"file_{i}", data, type_=LargeBinary))
            entries += [
                literal(name),
                func.jsonb_build_object(
                    literal("oid"), cast(oid, BigInteger),
                    literal("media_type"), literal(media_type),
                    literal("bytes"), literal(len(data)),
                ),
            ]  # fmt: skip
        stored = func.jsonb_build_object(literal("files"), func.jsonb_build_object(*entries))
        value = value.op("||")(stored)
    return (
        update(analysis_run)
        .where(analysis_run.c.id == run_id, analysis_run.c.status == "running")
        .values(
            status="completed", progress=1.0, message=None, summary=value, finished_at=func.now()
        )
        .returning(analysis_run.c.id)
    )


def select_run_file(run_id: int, name: str) -> TextClause:
    """A completed run's stored file: its bytes and media type (no row: none stored)."""
    return text(
        """
        SELECT lo_get((summary -> 'files' -> :name ->> 'oid')::bigint::oid) AS data,
               summary -> 'files' -> :name ->> 'media_type' AS media_type
        FROM analysis_run
        WHERE id = :run_id AND status = 'completed' AND summary -> 'files' ? :name
        """
    ).bindparams(run_id=run_id, name=name)


def end_run(run_id: int, status: str, message: str) -> Update:
    """Fail or cancel a run that has not ended yet."""
    return (
        update(analysis_run)
        .where(analysis_run.c.id == run_id, analysis_run.c.status == "running")
        .values(status=status, message=message, finished_at=func.now())
        .returning(analysis_run.c.id)
    )


# The first key of the locks taken while a GET looks for a run to reuse (the second is a
# hash of its kind and parameters): two equal requests at once store one run.
REUSE_LOCK = 19
# The tables an analysis reads that any write may change (migration 0007 lists those
# behind published layers): a run is reused only on the same data.
DATA_TABLES = ("incident", "category", "admin_unit", "population", "indicator_value")


def data_version() -> TextClause:
    """The data version an analysis is computed on: per table, its rows and the sum of
    their transaction ids (any insert, update or delete, through the API, the CLI or
    plain SQL, changes it). A full scan of the incidents: milliseconds per ten thousand."""
    parts = ", ".join(
        f"(SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM {t})"
        for t in DATA_TABLES
    )
    return text(f"SELECT md5(concat_ws('/', {parts}))")


def lock_reuse(kind: str, parameters: dict) -> TextClause:
    """Wait for the lock of one kind and parameters, held until the transaction ends."""
    return text(
        "SELECT pg_advisory_xact_lock(:space, hashtext(:kind || CAST(:parameters AS jsonb)::text))"
    ).bindparams(bindparam("parameters", parameters, type_=JSONB), space=REUSE_LOCK, kind=kind)


def select_reusable_run(kind: str, parameters: dict) -> TextClause:
    """The newest run of ``kind`` with exactly these parameters (data version included)
    that is completed, or still running with a job that may finish it."""
    return text(
        f"""
        SELECT r.id FROM analysis_run r
        WHERE r.kind = :kind AND r.parameters = CAST(:parameters AS jsonb)
          AND (r.status = 'completed' OR (r.status = 'running' AND EXISTS (
              SELECT FROM {Q}.procrastinate_jobs j WHERE j.task_name = 'analysis'
              AND (j.args->>'run_id')::bigint = r.id AND j.status IN ('todo', 'doing'))))
        ORDER BY r.id DESC LIMIT 1
        """
    ).bindparams(bindparam("parameters", parameters, type_=JSONB), kind=kind)


def select_run_status(run_id: int) -> TextClause:
    """A run's status (running, completed, failed, cancelled)."""
    return text("SELECT status FROM analysis_run WHERE id = :run_id").bindparams(run_id=run_id)


def select_run_jobs(run_id: int) -> TextClause:
    """The jobs of a run that may still run (normally one)."""
    return text(
        f"SELECT id, status FROM {Q}.procrastinate_jobs WHERE task_name = 'analysis' "
        "AND (args->>'run_id')::bigint = :run_id AND status IN ('todo', 'doing')"
    ).bindparams(run_id=run_id)


FAIL_ORPHANS = text(
    f"""
    UPDATE analysis_run AS r SET status = 'failed', finished_at = now(),
        message = 'its job ended without storing a result (' || j.status
            || ' after ' || j.attempts + 1 || ' attempts); post the analysis again'
    FROM {Q}.procrastinate_jobs AS j
    WHERE r.status = 'running' AND j.task_name = 'analysis'
      AND (j.args->>'run_id')::bigint = r.id AND j.status::text IN {ENDED_BADLY}
      AND NOT EXISTS (
          SELECT FROM {Q}.procrastinate_jobs AS k WHERE k.task_name = 'analysis'
          AND (k.args->>'run_id')::bigint = r.id AND k.status IN ('todo', 'doing'))
    RETURNING r.id
    """
)


def select_jobs(statuses: list[str], limit: int) -> TextClause:
    """Jobs with what they are for (an analysis run's id and kind, an import's batch and
    file name, a schedule's slot), attempts, worker and times (newest first)."""
    return text(
        f"""
        SELECT j.id, j.queue_name AS queue, j.task_name AS task, j.status::text AS status,
               r.id AS run_id, r.kind AS run_kind, b.id AS batch_id, b.filename,
               (SELECT d.periodic_id FROM {Q}.procrastinate_periodic_defers d
                 WHERE d.job_id = j.id LIMIT 1) AS schedule,
               j.attempts, j.worker_id, j.scheduled_at,
               (SELECT min(e.at) FROM {Q}.procrastinate_events e WHERE e.job_id = j.id)
                   AS queued_at,
               (SELECT max(e.at) FROM {Q}.procrastinate_events e
                 WHERE e.job_id = j.id AND e.type = 'started') AS started_at,
               extract(epoch FROM now() - (SELECT min(e.at) FROM {Q}.procrastinate_events e
                 WHERE e.job_id = j.id)) AS age_s
        FROM {Q}.procrastinate_jobs j
        LEFT JOIN analysis_run r
          ON j.task_name = 'analysis' AND r.id = (j.args->>'run_id')::bigint
        LEFT JOIN import_batch b
          ON j.task_name = 'import_file' AND b.id = (j.args->>'batch_id')::bigint
        WHERE j.status::text = ANY(:statuses)
        ORDER BY j.id DESC LIMIT :limit
        """
    ).bindparams(statuses=statuses, limit=limit)


def select_workers(within_s: float) -> TextClause:
    """Workers whose heartbeat is recent, with the jobs they run."""
    return text(
        f"""
        SELECT w.id, w.last_heartbeat,
               extract(epoch FROM now() - w.last_heartbeat) AS heartbeat_age_s,
               (SELECT count(*) FROM {Q}.procrastinate_jobs j
                 WHERE j.worker_id = w.id AND j.status = 'doing') AS running
        FROM {Q}.procrastinate_workers w
        WHERE w.last_heartbeat > now() - make_interval(secs => :within_s)
        ORDER BY w.id
        """
    ).bindparams(within_s=within_s)


QUEUE_STATS = text(
    f"""
    SELECT count(*) FILTER (WHERE j.status = 'todo') AS queued,
           count(*) FILTER (WHERE j.status = 'doing') AS running,
           coalesce(extract(epoch FROM now() - min(e.at) FILTER (WHERE j.status = 'todo')), 0)
               AS oldest_queued_s,
           (SELECT count(*) FROM {Q}.procrastinate_workers w
             WHERE w.last_heartbeat > now() - interval '1 minute') AS workers
    FROM {Q}.procrastinate_jobs j
    LEFT JOIN {Q}.procrastinate_events e ON e.job_id = j.id AND e.type = 'deferred'
    WHERE j.status IN ('todo', 'doing')
    """
)


def select_last_defers(names: list[str]) -> TextClause:
    """Per periodic task, its last slot, that slot's job and how it ended."""
    return text(
        f"""
        SELECT DISTINCT ON (d.periodic_id) d.periodic_id AS name,
               to_timestamp(d.defer_timestamp) AS slot, d.job_id, j.status::text AS status,
               (SELECT max(e.at) FROM {Q}.procrastinate_events e WHERE e.job_id = j.id
                 AND e.type IN ('succeeded', 'failed', 'cancelled', 'aborted')) AS ended_at
        FROM {Q}.procrastinate_periodic_defers d
        LEFT JOIN {Q}.procrastinate_jobs j ON j.id = d.job_id
        WHERE d.periodic_id = ANY(:names)
        ORDER BY d.periodic_id, d.defer_timestamp DESC
        """
    ).bindparams(names=names)
