"""SQL for bulk incident imports: staging table, upsert, batch bookkeeping, rejections."""

from __future__ import annotations

from sqlalchemy import Select, TextClause, func, insert, select, text, update
from sqlalchemy.sql.dml import Insert, Update

from app.models import INCIDENT_FIELDS, import_batch, import_rejection, import_upload, incident
from app.sql.units import units_containing, units_nearest

# Columns of the staging table, in the order the COPY data carries them.
STAGING_COLUMNS = ("row_number", "source", "source_id", "longitude", "latitude", *INCIDENT_FIELDS)

CREATE_STAGING = text(
    """
    CREATE TEMP TABLE incident_staging (
        row_number integer, source text, source_id text, category text,
        occurred_at timestamptz, reported_at timestamptz,
        longitude double precision, latitude double precision,
        location_precision text, victim_sex text, victim_age smallint,
        victims_count smallint, weapon text, perpetrator_relation text, attributes jsonb
    ) ON COMMIT DROP
    """
)

TRUNCATE_STAGING = text("TRUNCATE incident_staging")

# A large batch is long: the per-request statement timeout must not cut it. And LLVM JIT,
# which the planner picks for the upsert's large cost estimate, costs ~12% per chunk.
IMPORT_SESSION = [text("SET LOCAL statement_timeout = 0"), text("SET LOCAL jit = off")]

COPY_STAGING = f"COPY incident_staging ({', '.join(STAGING_COLUMNS)}) FROM STDIN WITH (FORMAT csv)"
COPY_REJECTIONS = "COPY import_rejection (batch_id, row_number, source_id, reason, raw) FROM STDIN"

# Columns an import writes; an existing row is updated only when one of them changed.
_DATA = (*INCIDENT_FIELDS, "geom")


def _data(alias: str, prefix: str = "") -> str:
    """The data columns of a row, as a row value to compare with IS DISTINCT FROM."""
    return "(" + ", ".join(f"{alias}.{prefix}{c}" for c in _DATA) + ")"


_STAGED_DATA = (
    "("
    + ", ".join(
        "ST_SetSRID(ST_MakePoint(s.longitude, s.latitude), 4326)" if c == "geom" else f"s.{c}"
        for c in _DATA
    )
    + ")"
)


def _fields(alias: str, prefix: str = "") -> list[tuple[str, str]]:
    """(name, SQL value) of an incident's fields as the audit log shows them: the point as
    longitude and latitude, like the snapshots of the single-incident writes."""
    out = [(c, f"{alias}.{prefix}{c}") for c in INCIDENT_FIELDS]
    geom = f"{alias}.{prefix}geom"
    return [*out, ("longitude", f"ST_X({geom})"), ("latitude", f"ST_Y({geom})")]


def _changed(a: tuple[str, str], b: tuple[str, str]) -> str:
    """SQL jsonb: the fields of row ``a`` whose value differs in row ``b`` (each given as
    table alias and column prefix)."""
    parts = [
        f"CASE WHEN {va} IS DISTINCT FROM {vb} THEN jsonb_build_object('{name}', {va}) "
        "ELSE '{}'::jsonb END"
        for (name, va), (_, vb) in zip(_fields(*a), _fields(*b), strict=True)
    ]
    return "(" + " || ".join(parts) + ")"


def _record(alias: str) -> str:
    """SQL jsonb: every field of a row, with its key and the batch."""
    pairs = [("source", f"{alias}.source"), ("source_id", f"{alias}.source_id"), *_fields(alias)]
    return (
        "jsonb_build_object('import_batch_id', CAST(:batch_id AS integer), "
        + ", ".join(f"'{name}', {value}" for name, value in pairs)
        + ")"
    )


def _units(point: str) -> str:
    """SQL expression: the units of ``point``, by a point-in-polygon join; a point short of
    a level (just off a coarse coastline) takes the nearest unit within ``:tolerance_m``.
    A scalar subquery, so it runs only for the rows actually inserted or updated."""
    return f"""(
        SELECT CASE WHEN cardinality(c.ids) < (SELECT count(DISTINCT level) FROM admin_unit)
                    THEN coalesce({units_nearest(point)}, c.ids)
                    ELSE c.ids END
        FROM (
            -- OFFSET 0 keeps this a subquery: inlined, the planner would run the
            -- point-in-polygon twice per row (once for CASE, once for its result).
            SELECT coalesce({units_containing(point)}, '{{}}') AS ids OFFSET 0
        ) c
    )"""


def lock_rows_to_change() -> TextClause:
    """Lock, in key order, the stored incidents the staged rows would change, and return
    the deleted ones among the staged keys (row_number, id, source, source_id, deleted_at).

    Key order: two batches sharing keys then lock them in the same order and one waits for
    the other instead of deadlocking. Locked, their values cannot change before the upsert
    that follows reads them, so its audit entries hold the true values before. Only rows
    that differ are locked: an unchanged re-import writes nothing. A row changed or
    deleted meanwhile is re-checked on its newest version (READ COMMITTED)."""
    return text(
        f"""
        WITH locked AS MATERIALIZED (
            SELECT s.row_number, i.id, i.source, i.source_id, i.deleted_at
            FROM incident_staging s
            JOIN incident i ON i.source = s.source AND i.source_id = s.source_id
            WHERE i.deleted_at IS NOT NULL OR {_data("i")} IS DISTINCT FROM {_STAGED_DATA}
            ORDER BY i.source, i.source_id
            FOR UPDATE OF i
        )
        SELECT row_number, id, source, source_id, deleted_at
        FROM locked WHERE deleted_at IS NOT NULL ORDER BY row_number
        """
    )


DELETE_STAGED_ROWS = text("DELETE FROM incident_staging WHERE row_number = ANY(:row_numbers)")


def upsert_from_staging() -> TextClause:
    """Insert new incidents, update changed ones, leave identical ones alone, and write one
    audit entry per incident inserted or changed: all in one statement, set-based.

    Returns one row: how many were inserted, updated, found unchanged, and staged; the
    rows staged but none of the three are those this statement could not settle (a key
    another transaction inserted, changed or deleted while it ran): run
    ``lock_rows_to_change`` and this again, with a new snapshot, for them. Units
    (``_units``) are computed for the rows inserted or changed only, so an unchanged
    re-import costs no point-in-polygon test. Soft-deleted incidents are never written
    (the caller has rejected their rows). An update's audit entry holds only the changed
    fields, before and after, with the batch before and after and the key; an insert's
    holds the whole record.

    ``old_*`` is the statement's snapshot of the stored row: an update applies only while
    the row still holds those values (re-checked on its newest version if another
    transaction changed it meanwhile), so the audit's "before" is never stale. New keys
    are inserted in key order (``ON CONFLICT DO NOTHING``: a key another batch inserted
    meanwhile is left for the next pass, which updates it with its true before).
    """
    data = ", ".join(_DATA)
    new_data = ", ".join(f"n.{c}" for c in _DATA)
    assignments = ", ".join(f"{c} = n.{c}" for c in _DATA)
    staged = ", ".join(
        "ST_SetSRID(ST_MakePoint(s.longitude, s.latitude), 4326) AS geom"
        if c == "geom"
        else f"s.{c}"
        for c in _DATA
    )
    stored = ", ".join(f"i.{c} AS old_{c}" for c in _DATA)
    new, old = ("n", ""), ("n", "old_")
    return text(
        f"""
        WITH pairs AS MATERIALIZED (
            -- Each staged row beside the stored incident with its key, if any (old_*).
            SELECT s.source, s.source_id, {staged},
                   i.id AS old_id, i.import_batch_id AS old_batch_id,
                   i.deleted_at AS old_deleted_at, {stored}
            FROM incident_staging s
            LEFT JOIN incident i ON i.source = s.source AND i.source_id = s.source_id
        ),
        updated AS (
            UPDATE incident AS i
            SET {assignments}, unit_ids = {_units("n.geom")},
                import_batch_id = CAST(:batch_id AS integer),
                import_batch_ids = i.import_batch_ids || CAST(:batch_id AS integer),
                updated_at = now()
            FROM pairs n
            WHERE i.id = n.old_id AND n.old_deleted_at IS NULL AND i.deleted_at IS NULL
              AND {_data(*old)} IS DISTINCT FROM {_data(*new)}
              AND {_data("i")} IS NOT DISTINCT FROM {_data(*old)}
            RETURNING i.id,
                jsonb_build_object('import_batch_id', n.old_batch_id)
                    || {_changed(old, new)} AS before,
                jsonb_build_object('import_batch_id', CAST(:batch_id AS integer),
                                   'source', n.source, 'source_id', n.source_id)
                    || {_changed(new, old)} AS after
        ),
        inserted AS (
            INSERT INTO incident AS i (
                source, source_id, {data}, unit_ids, import_batch_id, import_batch_ids
            )
            SELECT n.source, n.source_id, {new_data}, {_units("n.geom")},
                   CAST(:batch_id AS integer), ARRAY[CAST(:batch_id AS integer)]
            FROM pairs n
            WHERE n.old_id IS NULL
            ORDER BY n.source, n.source_id
            ON CONFLICT (source, source_id) DO NOTHING
            RETURNING i.id, {_record("i")} AS after
        ),
        audited AS (
            INSERT INTO audit_log (actor, action, entity, entity_id, before, after)
            SELECT :actor, 'import', 'incident', u.id::text, u.before, u.after FROM updated u
            UNION ALL
            SELECT :actor, 'import', 'incident', n.id::text, NULL, n.after FROM inserted n
        )
        SELECT (SELECT count(*) FROM inserted) AS inserted,
               (SELECT count(*) FROM updated) AS updated,
               (SELECT count(*) FROM pairs n
                WHERE n.old_id IS NOT NULL AND n.old_deleted_at IS NULL
                  AND {_data(*old)} IS NOT DISTINCT FROM {_data(*new)}) AS unchanged,
               (SELECT count(*) FROM pairs) AS staged
        """
    )


def insert_batch(
    filename: str, fmt: str, options: dict, created_by: str, warnings: list[str] | None = None
) -> Insert:
    """INSERT a running import batch; returns its id."""
    return (
        insert(import_batch)
        .values(
            filename=filename,
            format=fmt,
            options=options,
            created_by=created_by,
            warnings=warnings or [],
        )
        .returning(import_batch.c.id)
    )


def analyze_incidents() -> TextClause:
    """``ANALYZE`` the incidents and what their triggers fill (the low-zoom tile cells)."""
    return text("ANALYZE incident")


def finish_batch(batch_id: int, **counts: int) -> Update:
    """UPDATE a batch to completed, with its row ``counts``."""
    return (
        update(import_batch)
        .where(import_batch.c.id == batch_id)
        .values(status="completed", finished_at=func.now(), error=None, progress=1.0, **counts)
    )


# --- queued imports (a worker's job) ---------------------------------------------------


def insert_queued_batch(filename: str, fmt: str, options: dict, created_by: str) -> Insert:
    """INSERT a queued import batch (a worker will import it); returns its id."""
    return (
        insert(import_batch)
        .values(
            filename=filename,
            format=fmt,
            options=options,
            created_by=created_by,
            status="queued",
            progress=0.0,
        )
        .returning(import_batch.c.id)
    )


def insert_upload(batch_id: int, data: bytes) -> Insert:
    """INSERT the file of a queued batch."""
    return insert(import_upload).values(batch_id=batch_id, data=data)


def select_upload(batch_id: int) -> Select:
    """SELECT the file of a queued batch (no row once it is imported)."""
    return select(import_upload.c.data).where(import_upload.c.batch_id == batch_id)


def delete_upload(batch_id: int) -> TextClause:
    """DELETE the file of a batch (no-op for a batch that never had one)."""
    return text("DELETE FROM import_upload WHERE batch_id = :batch_id").bindparams(
        batch_id=batch_id
    )


def claim_batch(batch_id: int, warnings: list[str]) -> Update:
    """UPDATE a queued batch (or one whose earlier attempt died) to running; no row when
    it has ended already (a retried job after the result was stored)."""
    return (
        update(import_batch)
        .where(import_batch.c.id == batch_id, import_batch.c.status.in_(("queued", "running")))
        .values(status="running", warnings=warnings, error=None)
        .returning(import_batch.c.id)
    )


def fail_open_batch(batch_id: int, error: str) -> Update:
    """UPDATE a batch that has not ended to failed, with why; no row if it had ended."""
    return (
        update(import_batch)
        .where(import_batch.c.id == batch_id, import_batch.c.status.in_(("queued", "running")))
        .values(status="failed", finished_at=func.now(), error=error)
        .returning(import_batch.c.id)
    )


def set_batch_progress(batch_id: int, progress: float) -> Update:
    """UPDATE a running batch's progress (0..1)."""
    return (
        update(import_batch)
        .where(import_batch.c.id == batch_id, import_batch.c.status == "running")
        .values(progress=progress)
    )


def fail_batch(batch_id: int, error: str) -> Update:
    """UPDATE a batch to failed, with why (words a caller may read)."""
    return (
        update(import_batch)
        .where(import_batch.c.id == batch_id)
        .values(status="failed", finished_at=func.now(), error=error)
    )


# A batch is being written while the database session writing it holds this advisory
# lock (two int4 keys: this namespace, then the batch id). Its connection closing, for
# whatever reason (process killed, database restart, network), releases the lock and
# rolls the batch's transaction back, so a 'running' batch without the lock was
# interrupted and nothing of it is in the store.
BATCH_LOCK_NAMESPACE = 7_301

INTERRUPTED = (
    "interrupted: the process or database session importing this batch ended before it "
    "finished; nothing of the batch was stored. Run the same import again to complete it."
)


def lock_batch(batch_id: int) -> Select:
    """Session-level (not transaction-level): taken in the transaction that creates the
    batch, so the batch is never visible as 'running' without it."""
    return select(func.pg_advisory_lock(BATCH_LOCK_NAMESPACE, batch_id))


def unlock_batch(batch_id: int) -> Select:
    """Release the batch's advisory lock (``lock_batch``)."""
    return select(func.pg_advisory_unlock(BATCH_LOCK_NAMESPACE, batch_id))


def interrupt_stale_batches() -> TextClause:
    """Mark every 'running' batch whose lock no session holds as failed, and return their
    ids. Safe against a batch finishing at the same moment: the importer commits its
    'completed' status before releasing the lock, and this UPDATE re-checks the status
    of a row changed under it (READ COMMITTED), so a finished batch is left alone."""
    return text(
        f"""
        UPDATE import_batch b
        SET status = 'failed', finished_at = now(), error = :reason
        WHERE (b.status = 'running'
               OR (b.status = 'queued' AND b.started_at < now() - interval '1 minute'))
          AND NOT EXISTS (
              SELECT 1 FROM pg_locks l
              WHERE l.locktype = 'advisory'
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND l.classid = {BATCH_LOCK_NAMESPACE}
                AND l.objid = CAST(b.id AS oid)
                AND l.objsubid = 2
                AND l.granted
          )
          -- A queued import whose job waits or runs is not interrupted: the job (taken
          -- back from a dead worker, or retried) imports it again.
          AND NOT EXISTS (
              SELECT 1 FROM procrastinate.procrastinate_jobs j
              WHERE j.task_name = 'import_file' AND j.status IN ('todo', 'doing')
                AND (j.args->>'batch_id')::integer = b.id
          )
        RETURNING b.id
        """
    ).bindparams(reason=INTERRUPTED)


def select_deleted_incident(
    incident_id: int | None = None, source: str | None = None, source_id: str | None = None
) -> Select:
    """A soft-deleted incident by id or by key: id, source, source_id, deleted_at."""
    c = incident.c
    where = [c.deleted_at.is_not(None)]
    if incident_id is not None:
        where.append(c.id == incident_id)
    else:
        where += [c.source == source, c.source_id == source_id]
    return select(c.id, c.source, c.source_id, c.deleted_at).where(*where)


def select_batch(batch_id: int) -> Select:
    """SELECT one import batch by id."""
    return select(import_batch).where(import_batch.c.id == batch_id)


def select_batches(limit: int, offset: int) -> Select:
    """SELECT import batches, newest first."""
    return select(import_batch).order_by(import_batch.c.id.desc()).limit(limit).offset(offset)


def select_rejections(batch_id: int, limit: int | None = None) -> Select:
    """SELECT a batch's rejected rows in file order, the first ``limit`` of them."""
    stmt = (
        select(
            import_rejection.c.row_number,
            import_rejection.c.source_id,
            import_rejection.c.reason,
            import_rejection.c.raw,
        )
        .where(import_rejection.c.batch_id == batch_id)
        .order_by(import_rejection.c.row_number)
    )
    return stmt if limit is None else stmt.limit(limit)
